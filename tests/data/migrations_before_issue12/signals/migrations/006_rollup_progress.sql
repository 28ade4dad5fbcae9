-- A refresh of the rollup tables (plain PostgreSQL) commits in bounded steps, asset range by
-- asset range: `target` is the ingested_at bound of the refresh under way (NULL when none is)
-- and `done_through` the last asset id whose buckets it has committed, so a refresh that was
-- stopped (SIGTERM, a crash) resumes where it stopped instead of starting over.
ALTER TABLE rollup_state ADD COLUMN target timestamptz, ADD COLUMN done_through text;
