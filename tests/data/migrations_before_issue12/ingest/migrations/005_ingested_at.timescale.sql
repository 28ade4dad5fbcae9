-- Rows stored before this migration count as written when they were received.
ALTER TABLE telemetry ADD COLUMN ingested_at timestamptz;
ALTER TABLE telemetry ALTER COLUMN ingested_at SET DEFAULT now();
UPDATE telemetry SET ingested_at = received_at WHERE ingested_at IS NULL;
ALTER TABLE telemetry ALTER COLUMN ingested_at SET NOT NULL;
CREATE INDEX telemetry_ingested_brin ON telemetry USING brin (ingested_at);
