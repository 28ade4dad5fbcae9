-- How an alert reached its CSM (signals.alerts, signals.routing): 'immediate' (its email and
-- webhook were enqueued when it opened) or 'digest' (held for the weekly digest: its kind's
-- measured precision is below the setting or unmeasured, or the CSM's weekly budget of
-- immediate alerts was used), with the reason in words. Alerts opened before this migration
-- were all sent at once: 'immediate'. digested_at: when a digest first listed a held alert.
ALTER TABLE alerts
    ADD COLUMN delivery text NOT NULL DEFAULT 'immediate'
        CHECK (delivery IN ('immediate', 'digest')),
    ADD COLUMN delivery_reason text NOT NULL DEFAULT '',
    ADD COLUMN digested_at timestamptz;
CREATE INDEX alerts_immediate_idx ON alerts (owner_csm_id, opened_at)
    WHERE delivery = 'immediate';

-- Measured precision per alert kind, one row per kind and backtest (`basewatch signals
-- backtest` records its results): the latest row of a kind decides whether its alerts may
-- interrupt a CSM. precision is NULL when the backtest had no truth to check the kind against
-- (or raised no alert of it): such a kind counts as unmeasured.
CREATE TABLE kind_precision (
    kind             text        NOT NULL,
    measured_at      timestamptz NOT NULL,
    period_from      timestamptz NOT NULL,
    period_to        timestamptz NOT NULL,
    step_hours       double precision NOT NULL CHECK (step_hours > 0),
    alerts           integer     NOT NULL CHECK (alerts >= 0),
    true_alerts      integer     CHECK (true_alerts >= 0),
    precision        double precision CHECK (precision >= 0 AND precision <= 1),
    chance_precision double precision CHECK (chance_precision >= 0),
    truth            text        NOT NULL DEFAULT '',
    PRIMARY KEY (kind, measured_at),
    CHECK (period_to > period_from)
);
