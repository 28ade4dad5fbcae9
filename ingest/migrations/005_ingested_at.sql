-- When a row was written (the writing transaction's start, from the default): consumers that
-- process telemetry incrementally (the signals rollups) scan by it. received_at cannot serve:
-- a reading received during a database outage is committed minutes after its received_at.
ALTER TABLE telemetry ADD COLUMN ingested_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX telemetry_ingested_brin ON telemetry USING brin (ingested_at);
