-- Telemetry: one row per device message (asset, device time), its metrics as a JSON object of
-- name -> number. bench/ingest.py measured why: a row per message costs the database a fraction
-- of a row per metric, and a JSON object takes any data set's metric names without a schema
-- change. Rollups (signals) explode it per metric.
-- The primary key makes a redelivered message a no-op (or a merge of its metrics).
CREATE TABLE telemetry (
    asset_id    text        NOT NULL,
    time        timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    seq         bigint,
    metrics     jsonb       NOT NULL,
    PRIMARY KEY (asset_id, time)
);

-- A registered metric name list, kept by the writers, so signals and the API can list metrics
-- without scanning telemetry.
CREATE TABLE metric_names (
    name       text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);
