ALTER TABLE telemetry ADD COLUMN ingested_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX telemetry_ingested_brin ON telemetry USING brin (ingested_at);
