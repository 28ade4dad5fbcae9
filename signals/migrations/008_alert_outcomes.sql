-- basewatch: published alert_outcomes
-- What became of each alert, for other packages (nrr's attribution of expansion and churn):
-- when it was opened, acknowledged and closed, and how it ended. Readers use this view, never the
-- alerts table, whose other columns (scores, reasons, snoozes, feedback) may change with the
-- signals. A plain view: the planner reads it as the table, with the table's indexes.
CREATE VIEW alert_outcomes AS
SELECT alert_id, account_id, kind, family, status, opened_at, acknowledged_at, closed_at
FROM alerts;
