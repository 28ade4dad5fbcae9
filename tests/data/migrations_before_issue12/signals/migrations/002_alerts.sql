-- Alerts: one open alert per (account, kind, subject). A finding updates the open alert; an
-- alert opens when its condition is entered and expires once the condition has been clear for
-- a set time. Lifecycle: open -> acknowledged -> won | lost | dismissed | expired.
CREATE TABLE alerts (
    alert_id        bigserial PRIMARY KEY,
    account_id      text        NOT NULL,
    kind            text        NOT NULL,
    family          text        NOT NULL CHECK (family IN ('risk', 'expansion', 'service')),
    subject         text        NOT NULL DEFAULT '',
    status          text        NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'acknowledged', 'won', 'lost', 'dismissed',
                                      'expired')),
    score           double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    value           numeric(14, 2) NOT NULL DEFAULT 0,
    expected_value  numeric(14, 2) NOT NULL DEFAULT 0,
    priority        smallint    NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    horizon_days    integer     NOT NULL,
    reasons         jsonb       NOT NULL,
    figures         jsonb       NOT NULL DEFAULT '{}',
    owner_csm_id    text,
    opened_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    snoozed_until   timestamptz,
    snooze_reason   text,
    closed_at       timestamptz,
    closed_by       text,
    acknowledged_at timestamptz,
    acknowledged_by text,
    feedback        text CHECK (feedback IN ('useful', 'not_useful')),
    feedback_by     text,
    feedback_at     timestamptz,
    note            text
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (account_id, kind, subject)
    WHERE status IN ('open', 'acknowledged');
CREATE INDEX alerts_owner_idx ON alerts (owner_csm_id, status);
CREATE INDEX alerts_opened_idx ON alerts (opened_at);

-- Every state change, with who and when.
CREATE TABLE alert_history (
    alert_id   bigint      NOT NULL REFERENCES alerts (alert_id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    action     text        NOT NULL,
    actor      text        NOT NULL DEFAULT 'system',
    detail     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_history_alert_idx ON alert_history (alert_id, at);

-- Deliveries to send (email, webhook): written in the same transaction as the alert change,
-- sent by the delivery job with retries; a row is sent at most once (sent_at set when the
-- transport accepted it) and never lost (it stays until sent or given up, with the error).
CREATE TABLE outbox (
    outbox_id     bigserial PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    channel       text        NOT NULL CHECK (channel IN ('email', 'webhook')),
    recipient     text        NOT NULL,
    subject       text        NOT NULL,
    body          text        NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}',
    alert_id      bigint REFERENCES alerts (alert_id) ON DELETE SET NULL,
    dedup_key     text        NOT NULL UNIQUE,
    attempts      integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    sent_at       timestamptz,
    gave_up_at    timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE sent_at IS NULL AND gave_up_at IS NULL;
