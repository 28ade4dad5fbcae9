-- TimescaleDB path: a hypertable in daily chunks, compressed by asset (policies for compression
-- and retention are applied from settings after migration, see ingest/retention.py).
SELECT create_hypertable('telemetry', 'time', chunk_time_interval => INTERVAL '1 day');
ALTER TABLE telemetry SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'asset_id',
    timescaledb.compress_orderby = 'time DESC'
);
