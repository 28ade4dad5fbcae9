-- Account health: each account's churn-risk probability as of a scoring pass, how it was
-- computed ('model': the calibrated classifier of signals.health; 'weighted': the documented
-- fallback score when too little churn history exists) and the factors behind it
-- ({"top": [{"feature", "contribution", "value", "text"}, ...], "features": {...},
--   "probability_180d": ...}). Written by signals.health.findings (one executemany per pass);
-- the last pass of each UTC day is kept, so the history has one row per account and day.
CREATE TABLE account_health (
    account_id   text             NOT NULL,
    as_of        timestamptz      NOT NULL,
    probability  double precision NOT NULL CHECK (probability >= 0 AND probability <= 1),
    horizon_days integer          NOT NULL CHECK (horizon_days > 0),
    method       text             NOT NULL CHECK (method IN ('model', 'weighted')),
    factors      jsonb            NOT NULL DEFAULT '{}',
    PRIMARY KEY (account_id, as_of)
);
CREATE INDEX account_health_as_of_idx ON account_health (as_of);
