-- Asset events (alarms, service performed, component replaced, failures). The key makes a
-- redelivered event a no-op.
CREATE TABLE asset_events (
    asset_id    text        NOT NULL,
    time        timestamptz NOT NULL,
    kind        text        NOT NULL,
    code        text        NOT NULL DEFAULT '',
    component   text        NOT NULL DEFAULT '',
    detail      jsonb       NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL,
    PRIMARY KEY (asset_id, time, kind, code, component)
);
CREATE INDEX asset_events_time_idx ON asset_events (time);

-- Messages (or import rows) that could not be stored, with the reason. One unresolved dead
-- letter per (topic, payload): a redelivered bad message does not add a second one.
CREATE TABLE dead_letters (
    id             bigserial   PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    source         text        NOT NULL,
    topic          text        NOT NULL,
    line           bigint,
    payload        bytea       NOT NULL,
    payload_sha256 bytea       NOT NULL,
    reason         text        NOT NULL,
    resolved_at    timestamptz,
    resolution     text
);
CREATE UNIQUE INDEX dead_letters_unresolved_key
    ON dead_letters (topic, coalesce(line, -1), payload_sha256) WHERE resolved_at IS NULL;
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
