-- Created the ground_truth table until the simulator left ingest: the table is now the
-- simulator's (simulator/migrations/001_ground_truth.sql creates it IF NOT EXISTS, the same
-- definition). This number stays so that the runner finds every applied migration; a database
-- that applied the earlier text has the same schema and takes over this checksum silently.
-- basewatch: supersedes-checksum 6bdc48dc1841afeb
SELECT 1;
