-- Scoring reads the recent buckets of every asset (the last 24 hours, 28 days, 60 days): an
-- index on the bucket alone serves these windows, which the primary key (asset_id, bucket)
-- cannot without reading every asset's whole history. TimescaleDB's hypertables have one
-- already (create_hypertable's default index on the time column).
CREATE INDEX rollup_hourly_bucket_idx ON rollup_hourly (bucket);
CREATE INDEX rollup_daily_bucket_idx ON rollup_daily (bucket);
