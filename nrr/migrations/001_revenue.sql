-- basewatch: supersedes-checksum 53a8c44a6e339347
-- nrr's revenue model: invoice lines, the MRR ledger and its movements. Money is numeric, never
-- float. A month is a date on the month's first day. Definitions and the CSV layouts are in
-- nrr/__init__.py (and the README). Contracts and exchange rates are core's (core/migrations/
-- 002_contracts.sql, which runs before this file).
--
-- The supersedes line: until issue 12 this file also created `contracts` and `fx_rates`
-- (tests/data/migrations_before_issue12 keeps that version); a database that applied it has
-- them, and core's 002 adopts them there, so it has the same schema as a fresh one.

CREATE TABLE invoice_lines (
    invoice_id  text NOT NULL CHECK (invoice_id <> '' AND length(invoice_id) <= 100),
    line_no     integer NOT NULL CHECK (line_no > 0),
    account_id  text NOT NULL REFERENCES accounts (account_id),
    contract_id text REFERENCES contracts (contract_id),
    period      date NOT NULL CHECK (period = date_trunc('month', period)),  -- service month
    issue_date  date,
    amount      numeric NOT NULL,                                           -- net of tax lines
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    recurring   boolean NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('fixed', 'metered', 'addon', 'one_off', 'tax')),
    quantity    numeric,
    unit        text,
    description text,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_id, line_no),
    CHECK (NOT (recurring AND kind IN ('one_off', 'tax'))),
    CHECK (NOT (recurring AND kind = 'metered' AND contract_id IS NULL))
);
CREATE INDEX invoice_lines_metered_idx ON invoice_lines (contract_id, period)
    WHERE recurring AND kind = 'metered';
CREATE INDEX invoice_lines_period_idx ON invoice_lines (period);

-- MRR per account × month × product line (× currency, as one product line may be billed in two
-- currencies in the month a contract changes currency). *_local: in `currency`; the others in
-- the reporting currency at `rate`, rounded to the cent, mrr = fixed_mrr + metered_mrr.
-- (month, account_id, product_line, currency) is unique by construction: the rebuild's GROUP BY
-- writes each once. It is not a primary key on purpose: keeping a 4-column key in order costs the
-- rebuild of 1.85 million lines (bench/nrr.py) more time than computing them; rows are written
-- in month order instead, and a BRIN index on month serves every read (all by month range).
-- tests/nrr check the uniqueness. Identifiers are ASCII: collation "C" sorts them by bytes.
CREATE TABLE mrr_ledger (
    month             date NOT NULL,
    account_id        text COLLATE "C" NOT NULL,
    product_line      text COLLATE "C" NOT NULL,
    currency          text COLLATE "C" NOT NULL,
    fixed_mrr_local   numeric NOT NULL CHECK (fixed_mrr_local >= 0),
    metered_mrr_local numeric NOT NULL CHECK (metered_mrr_local >= 0),
    mrr_local         numeric NOT NULL,
    rate              numeric NOT NULL CHECK (rate > 0),
    fixed_mrr         numeric(18, 2) NOT NULL,
    metered_mrr       numeric(18, 2) NOT NULL,
    mrr               numeric(18, 2) NOT NULL,
    metered_source    text CHECK (metered_source IN ('invoices', 'telemetry', 'both')),
    contracts         integer NOT NULL
);
CREATE INDEX mrr_ledger_month_brin ON mrr_ledger USING brin (month) WITH (autosummarize = on);

-- Account-level movement of each month against the month before (DESIGN.md): kind and its
-- amount (>= 0) in constant currency (this month's MRR at the previous month's rates), and the
-- rate effect `fx`. previous_mrr + signed amount + fx = mrr, to the cent, on every row.
-- (month, account_id) is unique by construction, like the ledger's key (see there).
CREATE TABLE mrr_movements (
    month                 date NOT NULL,
    account_id            text COLLATE "C" NOT NULL,
    previous_mrr          numeric(18, 2) NOT NULL,
    mrr                   numeric(18, 2) NOT NULL,
    fixed_mrr             numeric(18, 2) NOT NULL,                    -- mrr's two parts
    metered_mrr           numeric(18, 2) NOT NULL,
    constant_currency_mrr numeric(18, 2) NOT NULL,
    kind                  text NOT NULL CHECK (kind IN
                              ('new', 'reactivation', 'expansion', 'contraction', 'churn', 'none')),
    amount                numeric(18, 2) NOT NULL CHECK (amount >= 0),
    fx                    numeric(18, 2) NOT NULL
);
CREATE INDEX mrr_movements_month_brin ON mrr_movements USING brin (month)
    WITH (autosummarize = on);

-- What the ledger holds: its reporting currency, its span, and the earliest month an import has
-- changed since (NULL = up to date).
CREATE TABLE mrr_ledger_state (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    reporting_currency text NOT NULL,
    first_month        date NOT NULL,
    last_month         date NOT NULL,
    stale_since        date,
    rebuilt_at         timestamptz NOT NULL DEFAULT now()
);
