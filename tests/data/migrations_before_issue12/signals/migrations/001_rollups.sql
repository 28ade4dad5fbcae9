-- Hourly and daily aggregates of every metric of every asset. Every feature and model reads
-- these, never raw telemetry, so scoring grows with assets x hours, not with samples.
--
-- One row per asset and bucket; `stats` holds, per metric, [mean, minimum, maximum, last,
-- readings] (`last` = the value of the bucket's latest reading, what counters need;
-- `readings` = how many readings had the metric). `samples` = readings in the bucket. A row per metric
-- would multiply the rows by the number of metrics (15 for a compressor): measured here, it
-- made the first refresh of 2.3 million hourly readings take over ten minutes.
--
-- Telemetry keeps a reading's metrics in one JSON object, so that any data set's metric names
-- fit without a schema change. TimescaleDB continuous aggregates cannot expand such an object
-- (no set-returning functions in their definition), so on both storage paths these are tables
-- that refresh_rollups() keeps up to date incrementally from the rows written since its last
-- run (telemetry.ingested_at). With TimescaleDB they are hypertables.
CREATE TABLE rollup_hourly (
    asset_id text        NOT NULL,
    bucket   timestamptz NOT NULL,
    samples  integer     NOT NULL,
    stats    jsonb       NOT NULL,
    PRIMARY KEY (asset_id, bucket)
);

CREATE TABLE rollup_daily (LIKE rollup_hourly INCLUDING ALL);

-- How far refresh_rollups() has read telemetry (by ingested_at).
CREATE TABLE rollup_state (
    name         text PRIMARY KEY,
    watermark    timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);
