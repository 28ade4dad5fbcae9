-- Plain PostgreSQL path: the primary key serves per-asset time ranges; a BRIN index serves
-- fleet-wide time ranges (rows arrive roughly in time order) and retention deletes.
CREATE INDEX telemetry_time_brin ON telemetry USING brin (time);
