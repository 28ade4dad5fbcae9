SELECT create_hypertable('rollup_hourly', 'bucket', chunk_time_interval => INTERVAL '30 days');
SELECT create_hypertable('rollup_daily', 'bucket', chunk_time_interval => INTERVAL '365 days');
