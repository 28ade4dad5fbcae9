-- The installed-base registry: customer success managers, accounts, assets, components.
-- Identifiers follow DESIGN.md: [A-Za-z0-9_.-]{1,64}.

CREATE TABLE csms (
    csm_id       text PRIMARY KEY CHECK (csm_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name         text NOT NULL,
    email        text,
    webhook_url  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    account_id   text PRIMARY KEY CHECK (account_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name         text NOT NULL,
    industry     text,
    region       text,
    csm_id       text REFERENCES csms (csm_id),
    auto_registered boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_csm_idx ON accounts (csm_id);

CREATE TABLE assets (
    asset_id          text PRIMARY KEY CHECK (asset_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    account_id        text NOT NULL REFERENCES accounts (account_id),
    serial            text,
    model             text,
    rated_power_kw    numeric CHECK (rated_power_kw > 0),
    rated_flow_m3_min numeric CHECK (rated_flow_m3_min > 0),
    installed_on      date,
    site              text,
    auto_registered   boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assets_account_idx ON assets (account_id);

CREATE TABLE components (
    asset_id                   text NOT NULL REFERENCES assets (asset_id) ON DELETE CASCADE,
    kind                       text NOT NULL CHECK (kind ~ '^[A-Za-z0-9_.-]{1,64}$'),
    rated_life_hours           numeric NOT NULL CHECK (rated_life_hours > 0),
    installed_at_running_hours numeric NOT NULL DEFAULT 0 CHECK (installed_at_running_hours >= 0),
    installed_on               date,
    PRIMARY KEY (asset_id, kind)
);
