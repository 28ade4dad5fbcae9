-- What really happened in a simulated (or labelled) fleet, for scoring signals and models:
-- component failures, parts replaced by third parties, each account's story, churn, expansions,
-- machines falling silent. Written by the simulator (or imported with labelled data); read
-- through simulator.truth (the signals backtest takes it as an argument, never reads the table).
-- Until the simulator left ingest this was ingest/004_ground_truth: a database migrated then
-- has the table already, hence IF NOT EXISTS; the definition is the same.
CREATE TABLE IF NOT EXISTS ground_truth (
    kind       text        NOT NULL,
    account_id text        NOT NULL,
    asset_id   text        NOT NULL DEFAULT '',
    component  text        NOT NULL DEFAULT '',
    time       timestamptz NOT NULL,
    value      numeric,
    detail     text        NOT NULL DEFAULT '',
    PRIMARY KEY (kind, account_id, asset_id, component, time)
);
CREATE INDEX IF NOT EXISTS ground_truth_time_idx ON ground_truth (time);
