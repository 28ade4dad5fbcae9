-- Contracts and exchange rates: reference data, like accounts and assets (core/contracts.py
-- holds their rules, core/layouts.py their CSV layouts). Money is numeric, never float. A month is
-- a date on the month's first day.
--
-- These tables were created by nrr's 001_revenue until issue 12 moved them here. IF NOT EXISTS
-- adopts them in a database that has them already; the definitions are those nrr created,
-- character for character, so a fresh database and an upgraded one have the same schema
-- (tests/core/test_migrate.py compares the two).

CREATE TABLE IF NOT EXISTS contracts (
    contract_id     text PRIMARY KEY CHECK (contract_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    account_id      text NOT NULL REFERENCES accounts (account_id),
    product_line    text NOT NULL CHECK (product_line ~ '^[A-Za-z0-9_.-]{1,64}$'),
    kind            text NOT NULL CHECK (kind IN ('fixed', 'metered', 'addon')),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    start_date      date NOT NULL,
    end_date        date CHECK (end_date >= start_date),       -- last day of service; NULL = open
    billing_period  text NOT NULL
                    CHECK (billing_period IN ('month', 'quarter', 'year', 'multi_year')),
    term_months     integer CHECK (term_months > 0),
    fee             numeric CHECK (fee >= 0),                   -- per billing period
    unit_price      numeric CHECK (unit_price >= 0),            -- per unit (metered)
    unit            text,
    monthly_minimum numeric CHECK (monthly_minimum >= 0),       -- metered, in the currency
    renewal         text NOT NULL DEFAULT 'none' CHECK (renewal IN ('auto', 'manual', 'none')),
    notice_days     integer CHECK (notice_days >= 0),
    imported_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'metered' OR (fee IS NOT NULL AND unit_price IS NULL AND monthly_minimum IS NULL)),
    CHECK (kind <> 'metered' OR (unit_price IS NOT NULL AND fee IS NULL AND billing_period = 'month')),
    CHECK (billing_period <> 'multi_year' OR term_months IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS contracts_account_idx ON contracts (account_id);

-- Units of the reporting currency per one unit of `currency`, for the month. The reporting
-- currency itself always converts at 1 (a row for it, if any, must say 1).
CREATE TABLE IF NOT EXISTS fx_rates (
    month    date NOT NULL CHECK (month = date_trunc('month', month)),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    rate     numeric NOT NULL CHECK (rate > 0),
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, currency)
);
