-- The delivery gate reads the precision over the *decided* alerts of a backtest: an alert whose
-- window reaches past the end of the replayed data is pending (neither confirmed nor refuted,
-- see signals/backtest.py "Pending alerts") and must not count as false against its kind.
-- decided_alerts is NULL on rows recorded before this column existed (their precision counted
-- pending alerts as false; the gate reads `precision` for them); precision_decided is NULL when
-- the kind had no truth or no decided alert (unmeasured: its alerts wait for the digest).
ALTER TABLE kind_precision
    ADD COLUMN decided_alerts integer CHECK (decided_alerts >= 0),
    ADD COLUMN precision_decided double precision
        CHECK (precision_decided >= 0 AND precision_decided <= 1);
