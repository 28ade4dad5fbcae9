"""The alert lifecycle: findings of a scoring pass become alerts, one open alert per
(account, kind, subject), routed to the account's CSM.

A scoring pass calls :func:`apply_findings` once; everything it changes happens in one
transaction (serialised with other passes by a transaction advisory lock):

- a finding with no open or acknowledged alert for its key **opens** one, unless an alert for
  that key was closed (won, lost, dismissed or expired) less than ``cooldown`` ago. Opening is
  the only time an alert fires: its messages (email and/or webhook to the owner CSM) are
  enqueued in the outbox in the same transaction, with a ``dedup_key`` so a retried
  transaction never enqueues twice;
- a finding for an open or acknowledged alert **updates** it (score, value, expected value,
  priority, reasons, figures, ``last_seen_at``) without a message. Its due date only ever
  moves earlier: it is the date the CSM was asked to act by, so it stays put while the
  condition holds and the alert becomes overdue once it has passed;
- an open or acknowledged alert of a kind in ``kinds_scored`` that got no finding and was last
  seen more than ``clear_after`` ago **expires** (closed by ``system``).

Snooze: a snoozed alert stays open; findings update it silently and its undelivered messages
wait until the snooze ends (see ``signals.delivery``). The first pass after the snooze ended
that still finds the condition clears the snooze and sends a reminder, unless the alert's
messages were held back by the snooze and are still to be sent (they go out then instead).

Rules (units: money per month in the reporting currency, horizon in days):

- ``priority`` 1 (most urgent) .. 5 **from the expected value** (score × value, the money the
  alert is worth per month): 1 from 1,000, 2 from 400, 3 from 150, 4 from 50, 5 below
  (:data:`PRIORITY_BANDS`). The horizon does not set the priority: how soon to act is the due
  date's job, and a near but small matter should not outrank a large one;
- **escalation once overdue**: one level more urgent (at least 1) when the finding itself is
  overdue (``Finding.overdue``: a component already past its limit) or the alert's due date
  has passed while its condition still holds. One level, not one per pass: an overdue alert
  stays at its escalated priority;
- ``due_at`` = now + the horizon, clamped to [1, 14] days: at least a day to react, and never
  more than two weeks so that a far horizon still gets looked at.

Delivery: an alert opens whatever happens to its messages; ``routing`` (``signals.routing``:
the precision gate and the CSM's weekly budget) decides whether its email and webhook are
enqueued at once (``delivery`` = ``immediate``) or it is held for the weekly digest
(``digest``, ``signals.digest``), and the alert keeps the reason (``delivery_reason``). Without
``routing`` (a caller that applies no gate) every alert is immediate. A held alert gets no
reminder when a snooze ends: it comes back in the next digest instead.

Links: a message tells the CSM where to answer the alert. With the public URL of the
basewatch API (``BASEWATCH_API_PUBLIC_URL``, passed down by the composition root as
``public_url``; signals never reads settings) it links to the alert on its owner's page,
``<public url>/csm/<owner csm id>#alert-<id>`` (:func:`alert_url`; a trailing slash of the URL
is dropped, the CSM id is percent-quoted), with a line saying to sign in first (the sign-in
page brings a CSM back to their own page); the webhook payload carries it as a button. Without
the setting there is no address to link to: the message names the alert number, asks the
reader to get the basewatch address from their administrator, and keeps the CLI commands on
one line for operators (a field CSM has no shell). An alert without an owner gets the same
fallback (it has no recipient anyway).

History: the CSM's actions, the opening and the expiry always write an ``alert_history`` row
(who, when, what). A scoring pass that updates an alert writes one (action ``updated``, with
the old and new figures and ``changed`` naming why) only when something a person acts on
changed: the priority (escalation included), the due date moved by more than a day, or the
value (money at stake) changed by at least ``MATERIAL_VALUE_CHANGE`` (10 %) of its former
amount. A new score, horizon or wording of the reasons alone updates the alert's row (the
alert always shows the latest figures) and ``last_seen_at``, without a history row: a
component counting down its hours day by day is one alert with one history, not sixty
"updated" entries.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import urllib.parse
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, dict_row
from psycopg.types.json import Jsonb

from core.errors import InputError, NotFound
from signals.catalogue import money
from signals.delivery import OutboxMessage, enqueue
from signals.findings import Finding
from signals.kinds import RETIRED, promise_of
from signals.routing import BUDGET_WINDOW, IMMEDIATE, Budget, Candidate, Route, Routing, route

log = logging.getLogger(__name__)

STATUSES = ("open", "acknowledged", "won", "lost", "dismissed", "expired")
ACTIVE = ("open", "acknowledged")
OUTCOMES = ("won", "lost", "dismissed")
STATUS_FILTERS = ("active", "closed", *STATUSES)
PASS_LOCK_KEY = 7_420_240_004  # serialises scoring passes (rollups use ...002)
MAX_DUE = dt.timedelta(days=14)
MIN_DUE = dt.timedelta(days=1)
CLEAR_AFTER = dt.timedelta(hours=48)
COOLDOWN = dt.timedelta(days=7)
MATERIAL_VALUE_CHANGE = 0.10  # share of the former value that makes a change worth recording
DUE_MOVE = dt.timedelta(days=1)  # a due date that moves by more than this is recorded
# (least expected value per month, priority): the first band the expected value reaches
PRIORITY_BANDS = ((Decimal(1000), 1), (Decimal(400), 2), (Decimal(150), 3), (Decimal(50), 4))


class AlertStateError(InputError):
    """The alert is not in a state that allows the requested change."""

    def __init__(self, alert_id: int, status: str, action: str, allowed: Sequence[str]) -> None:
        super().__init__(
            f"alert #{alert_id} is {status}: cannot {action} it "
            f"(only {' or '.join(allowed)} alerts can be)"
        )
        self.alert_id = alert_id
        self.status = status
        self.action = action


@dataclass(frozen=True)
class ApplyResult:
    """What one scoring pass changed."""

    opened: tuple[int, ...]  # alert ids
    updated: int
    expired: int
    cooldown: int  # findings not opened because their key closed within the cooldown
    reminded: int  # snoozed alerts whose snooze ended and that were re-sent
    messages: int  # outbox rows enqueued
    held: tuple[int, ...] = ()  # opened alerts held for the digest (ids)


# -- pure rules -------------------------------------------------------------------------------


def priority_for(expected_value: Decimal, overdue: bool = False) -> int:
    """1 (most urgent) .. 5 from the expected value per month (:data:`PRIORITY_BANDS`); one
    level more urgent (at least 1) when ``overdue``."""
    level = next((p for least, p in PRIORITY_BANDS if expected_value >= least), 5)
    return max(1, level - (1 if overdue else 0))


def due_for(now: dt.datetime, horizon_days: int) -> dt.datetime:
    """When the CSM should have acted: now + horizon, clamped to [1, 14] days."""
    return now + min(max(dt.timedelta(days=horizon_days), MIN_DUE), MAX_DUE)


def _finite(figures: dict[str, float]) -> dict[str, float | None]:
    # JSON has no NaN or infinity; an unknown figure is null
    return {k: (v if math.isfinite(v) else None) for k, v in figures.items()}


def strongest(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per key; where a pass produced several, the largest expected value."""
    best: dict[tuple[str, str, str], Finding] = {}
    for f in findings:
        key = (f.account_id, f.kind, f.subject)
        if key not in best or f.expected_value > best[key].expected_value:
            best[key] = f
    return list(best.values())


def _check_aware(now: dt.datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")


# -- one scoring pass -------------------------------------------------------------------------

_FINDINGS_TABLE = """
CREATE TEMP TABLE alert_pass (
    account_id text NOT NULL, kind text NOT NULL, family text NOT NULL, subject text NOT NULL,
    score double precision NOT NULL, value numeric(14, 2) NOT NULL,
    expected_value numeric(14, 2) NOT NULL, priority smallint NOT NULL,
    horizon_days integer NOT NULL, reasons jsonb NOT NULL, figures jsonb NOT NULL,
    due_at timestamptz NOT NULL, escalated smallint NOT NULL,
    PRIMARY KEY (account_id, kind, subject)
) ON COMMIT DROP
"""
_FINDINGS_COLUMNS = (
    "account_id, kind, family, subject, score, value, expected_value, priority, horizon_days,"
    " reasons, figures, due_at, escalated"
)
_UPDATE = """
WITH updated AS (
    UPDATE alerts a
    SET score = f.score, value = f.value, expected_value = f.expected_value,
        priority = CASE WHEN LEAST(a.due_at, f.due_at) < %(now)s THEN f.escalated
                        ELSE f.priority END,
        horizon_days = f.horizon_days, reasons = f.reasons,
        figures = f.figures, due_at = LEAST(a.due_at, f.due_at),
        last_seen_at = %(now)s, updated_at = %(now)s,
        snoozed_until = CASE WHEN a.snoozed_until <= %(now)s THEN NULL ELSE a.snoozed_until END,
        snooze_reason = CASE WHEN a.snoozed_until <= %(now)s THEN NULL ELSE a.snooze_reason END
    FROM alert_pass f, alerts old
    WHERE a.account_id = f.account_id AND a.kind = f.kind AND a.subject = f.subject
      AND old.alert_id = a.alert_id AND a.status IN ('open', 'acknowledged')
    RETURNING a.alert_id, a.score, a.value, a.expected_value, a.priority, a.horizon_days,
              a.reasons, a.due_at, old.score AS old_score, old.value AS old_value,
              old.priority AS old_priority, old.horizon_days AS old_horizon,
              old.due_at AS old_due_at, old.snoozed_until AS old_snoozed_until,
              old.snooze_reason AS old_snooze_reason
), compared AS (
    SELECT *, array_remove(ARRAY[
               CASE WHEN priority <> old_priority THEN 'priority' END,
               CASE WHEN abs(extract(epoch FROM due_at - old_due_at)) > %(due_move_s)s
                    THEN 'due_at' END,
               CASE WHEN abs(value - old_value) >= %(material)s * abs(old_value)
                         AND value <> old_value THEN 'value' END], NULL) AS why
    FROM updated
), changed AS (
    INSERT INTO alert_history (alert_id, at, action, actor, detail)
    SELECT alert_id, %(now)s, 'updated', 'system', jsonb_build_object(
               'changed', to_jsonb(why),
               'score', jsonb_build_array(old_score, score),
               'value', jsonb_build_array(old_value, value),
               'priority', jsonb_build_array(old_priority, priority),
               'due_at', jsonb_build_array(old_due_at, due_at),
               'horizon_days', jsonb_build_array(old_horizon, horizon_days),
               'expected_value', expected_value, 'reasons', reasons)
    FROM compared
    WHERE cardinality(why) > 0
), snooze_ended AS (
    INSERT INTO alert_history (alert_id, at, action, actor, detail)
    SELECT alert_id, %(now)s, 'snooze_ended', 'system',
           jsonb_build_object('snoozed_until', old_snoozed_until, 'reason', old_snooze_reason)
    FROM updated WHERE old_snoozed_until <= %(now)s
)
SELECT alert_id, CASE WHEN old_snoozed_until <= %(now)s THEN old_snoozed_until END
FROM updated
"""
_OPEN = """
WITH opened AS (
    INSERT INTO alerts (account_id, kind, family, subject, status, score, value, expected_value,
                        priority, horizon_days, reasons, figures, owner_csm_id, opened_at,
                        updated_at, last_seen_at, due_at)
    SELECT f.account_id, f.kind, f.family, f.subject, 'open', f.score, f.value,
           f.expected_value, f.priority, f.horizon_days, f.reasons, f.figures, acc.csm_id,
           %(now)s, %(now)s, %(now)s, f.due_at
    FROM alert_pass f LEFT JOIN accounts acc ON acc.account_id = f.account_id
    WHERE NOT EXISTS (
        SELECT 1 FROM alerts a
        WHERE a.account_id = f.account_id AND a.kind = f.kind AND a.subject = f.subject
          AND (a.status IN ('open', 'acknowledged') OR a.closed_at > %(cooldown_start)s))
    ORDER BY f.account_id, f.kind, f.subject
    ON CONFLICT (account_id, kind, subject) WHERE status IN ('open', 'acknowledged') DO NOTHING
    RETURNING alert_id, owner_csm_id, score, value, expected_value, priority, due_at
), history AS (
    INSERT INTO alert_history (alert_id, at, action, actor, detail)
    SELECT alert_id, %(now)s, 'opened', 'system', jsonb_build_object(
               'owner', owner_csm_id, 'score', score, 'value', value,
               'expected_value', expected_value, 'priority', priority, 'due_at', due_at)
    FROM opened
)
SELECT alert_id FROM opened ORDER BY alert_id
"""
_EXPIRE = """
WITH expired AS (
    UPDATE alerts a
    SET status = 'expired', closed_at = %(now)s, closed_by = 'system', updated_at = %(now)s
    WHERE a.status IN ('open', 'acknowledged') AND a.kind = ANY(%(kinds)s::text[])
      AND a.last_seen_at < %(clear_before)s
      AND (%(accounts)s::text[] IS NULL OR a.account_id = ANY(%(accounts)s::text[]))
      AND NOT EXISTS (SELECT 1 FROM alert_pass f WHERE a.account_id = f.account_id
                      AND a.kind = f.kind AND a.subject = f.subject)
    RETURNING a.alert_id, a.last_seen_at
), history AS (
    INSERT INTO alert_history (alert_id, at, action, actor, detail)
    SELECT alert_id, %(now)s, 'expired', 'system',
           jsonb_build_object('last_seen_at', last_seen_at, 'clear_after_hours', %(clear_hours)s)
    FROM expired
)
SELECT count(*) FROM expired
"""
# a reminder only when no message of the alert is pending or went out after the snooze ended
_REMIND = """
SELECT e.alert_id FROM unnest(%s::bigint[], %s::timestamptz[]) AS e(alert_id, until)
JOIN alerts a ON a.alert_id = e.alert_id AND a.delivery = 'immediate'
WHERE NOT EXISTS (
    SELECT 1 FROM outbox o
    WHERE o.alert_id = e.alert_id
      AND ((o.sent_at IS NULL AND o.gave_up_at IS NULL) OR o.sent_at >= e.until))
"""


def apply_findings(
    conn: psycopg.Connection[TupleRow],
    findings: Iterable[Finding],
    *,
    now: dt.datetime,
    kinds_scored: Collection[str],
    accounts_scored: Collection[str] | None = None,
    clear_after: dt.timedelta = CLEAR_AFTER,
    cooldown: dt.timedelta = COOLDOWN,
    currency: str,
    routing: Routing | None = None,
    public_url: str = "",
) -> ApplyResult:
    """Turn one scoring pass's findings into alert changes and messages, in one transaction.

        ``kinds_scored`` are the kinds this pass evaluated: only their alerts can expire.
        ``accounts_scored`` narrows expiry to those accounts (a pass over part of the fleet);
        None means every account. ``currency`` is the reporting currency the messages write
        amounts in, ``public_url`` the address their links point to (empty: no links, see
    "Links" above). ``routing`` decides which opened alerts are sent at once and which are held
        for the digest (``signals.routing``); None sends every one at once. Commits, unless the
        caller has a transaction open, in which case the changes become part of it."""
    _check_aware(now)
    kept = strongest(findings)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PASS_LOCK_KEY,))
        conn.execute("DROP TABLE IF EXISTS pg_temp.alert_pass")
        conn.execute(_FINDINGS_TABLE)
        with (
            conn.cursor() as cur,
            cur.copy(
                sql.SQL("COPY alert_pass ({}) FROM STDIN").format(sql.SQL(_FINDINGS_COLUMNS))
            ) as copy,
        ):
            for f in kept:
                copy.write_row(_pass_row(f, now))
        conn.execute("ANALYZE alert_pass")
        updated_rows = conn.execute(
            _UPDATE,
            {
                "now": now,
                "due_move_s": DUE_MOVE.total_seconds(),
                "material": MATERIAL_VALUE_CHANGE,
            },
        ).fetchall()
        opened = tuple(
            int(r[0])
            for r in conn.execute(_OPEN, {"now": now, "cooldown_start": now - cooldown}).fetchall()
        )
        row = conn.execute(
            _EXPIRE,
            {
                "now": now,
                "kinds": sorted(kinds_scored),
                "accounts": None if accounts_scored is None else sorted(accounts_scored),
                "clear_before": now - clear_after,
                "clear_hours": clear_after.total_seconds() / 3600,
            },
        ).fetchone()
        expired = int(row[0]) if row else 0
        ended = {int(r[0]): r[1] for r in updated_rows if r[1] is not None}
        reminded = _due_reminders(conn, ended)
        routes = _route(conn, opened, routing, now)
        _store_routes(conn, routes)
        immediate = [i for i in opened if routes[i].delivery == IMMEDIATE]
        messages = enqueue(
            conn,
            alert_messages(conn, dict.fromkeys(immediate, "opened"), currency, public_url),
            now=now,
        )
        reminders = {i: "reminder:" + _stamp(ended[i]) for i in reminded}
        messages += enqueue(conn, alert_messages(conn, reminders, currency, public_url), now=now)
    result = ApplyResult(
        opened=opened,
        updated=len(updated_rows),
        expired=expired,
        cooldown=len(kept) - len(updated_rows) - len(opened),
        reminded=len(reminded),
        messages=messages,
        held=tuple(i for i in opened if routes[i].delivery != IMMEDIATE),
    )
    log.info(
        "alerts: %d findings -> %d opened (%d held for the digest), %d updated, %d expired, "
        "%d held by cooldown, %d reminders; %d messages queued",
        len(kept),
        len(result.opened),
        len(result.held),
        result.updated,
        result.expired,
        result.cooldown,
        result.reminded,
        result.messages,
    )
    return result


def _pass_row(f: Finding, now: dt.datetime) -> tuple[Any, ...]:
    expected = f.expected_value
    return (
        f.account_id,
        f.kind,
        f.family,
        f.subject,
        f.score,
        f.value,
        expected,
        priority_for(expected, f.overdue),
        f.horizon_days,
        Jsonb(list(f.reasons)),
        Jsonb(_finite(f.figures)),
        due_for(now, f.horizon_days),
        priority_for(expected, overdue=True),
    )


_SENT = """
SELECT owner_csm_id, opened_at FROM alerts
WHERE delivery = 'immediate' AND owner_csm_id = ANY(%(owners)s::text[])
  AND opened_at > %(since)s AND opened_at <= %(now)s AND NOT alert_id = ANY(%(opened)s::bigint[])
"""


def _route(
    conn: psycopg.Connection[TupleRow],
    opened: Sequence[int],
    routing: Routing | None,
    now: dt.datetime,
) -> dict[int, Route]:
    if not opened:
        return {}
    if routing is None:
        return {i: Route(IMMEDIATE, "sent when it opened (no precision gate)") for i in opened}
    candidates = [
        Candidate(int(i), str(kind), owner, Decimal(ev))
        for i, kind, owner, ev in conn.execute(
            "SELECT alert_id, kind, owner_csm_id, expected_value FROM alerts"
            " WHERE alert_id = ANY(%s)",
            (list(opened),),
        )
    ]
    sent: dict[str, list[dt.datetime]] = {}
    owners = sorted({c.owner for c in candidates if c.owner is not None})
    rows = conn.execute(
        _SENT,
        {"owners": owners, "since": now - BUDGET_WINDOW, "now": now, "opened": list(opened)},
    )
    for owner, opened_at in rows:
        sent.setdefault(str(owner), []).append(opened_at)
    return route(candidates, routing, Budget(routing.weekly_budget, sent), now)


# the decision is kept on the alert and in its "opened" history entry
_STORE_ROUTES = """
WITH r AS (
    SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS r(alert_id, delivery, reason)
), stored AS (
    UPDATE alerts a SET delivery = r.delivery, delivery_reason = r.reason
    FROM r WHERE a.alert_id = r.alert_id
)
UPDATE alert_history h
SET detail = h.detail || jsonb_build_object('delivery', r.delivery, 'delivery_reason', r.reason)
FROM r WHERE h.alert_id = r.alert_id AND h.action = 'opened'
"""


def _store_routes(conn: psycopg.Connection[TupleRow], routes: Mapping[int, Route]) -> None:
    if not routes:
        return
    ids = sorted(routes)
    conn.execute(
        _STORE_ROUTES, (ids, [routes[i].delivery for i in ids], [routes[i].reason for i in ids])
    )


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _due_reminders(
    conn: psycopg.Connection[TupleRow], ended: dict[int, dt.datetime]
) -> tuple[int, ...]:
    if not ended:
        return ()
    rows = conn.execute(_REMIND, (list(ended), list(ended.values()))).fetchall()
    return tuple(sorted(int(r[0]) for r in rows))


# -- reading ----------------------------------------------------------------------------------

_SELECT = """
SELECT a.alert_id, a.account_id, acc.name AS account_name, a.kind, a.family, a.subject,
       a.status, a.score, a.value, a.expected_value, a.priority, a.horizon_days, a.reasons,
       a.figures, a.owner_csm_id, c.name AS owner_name, a.opened_at, a.updated_at,
       a.last_seen_at, a.due_at, a.snoozed_until, a.snooze_reason, a.acknowledged_at,
       a.acknowledged_by, a.closed_at, a.closed_by, a.feedback, a.feedback_by, a.feedback_at,
       a.note, a.delivery, a.delivery_reason, a.digested_at, c.email AS owner_email,
       c.webhook_url AS owner_webhook_url
FROM alerts a
LEFT JOIN accounts acc ON acc.account_id = a.account_id
LEFT JOIN csms c ON c.csm_id = a.owner_csm_id
"""
_COUNT = "SELECT count(*) FROM alerts a"
_PRIVATE = ("owner_email", "owner_webhook_url")  # delivery addresses stay out of listings


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dt.datetime):
            out[key] = value.isoformat()
        elif isinstance(value, Decimal):
            out[key] = str(value)
        else:
            out[key] = value
    out["snoozed"] = out["snoozed_until"] is not None and row["snoozed_until"] > _utcnow()
    out["promise"] = _promise(str(row["kind"]))
    return out


def _promise(kind: str) -> str:
    """What an alert of ``kind`` predicts and by when (``signals.kinds``); a retired kind's
    alert says so."""
    if kind in RETIRED:
        return f"{kind} was retired (split into failure_risk and service_due)"
    try:
        return promise_of(kind)
    except ValueError:  # a kind this version does not know (a newer one's): no promise to state
        return ""


def _select(
    conn: psycopg.Connection[TupleRow],
    where: sql.Composable,
    params: Sequence[Any],
    tail: str = "",
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(_SELECT) + where + sql.SQL(tail), params)
        return [_json_ready(r) for r in cur.fetchall()]


def list_alerts(
    conn: psycopg.Connection[TupleRow],
    *,
    status: str | None = None,
    owner: str | None = None,
    kind: str | None = None,
    account: str | None = None,
    limit: int = 100,
    family: str | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Alerts as JSON-ready dicts (ISO times, money as strings), active ones first, then by
    priority and due date; at most ``limit`` after skipping ``offset`` (:func:`count_alerts`
    says how many match).
    ``status`` is one of :data:`STATUS_FILTERS` or None for all; ``family`` risk, expansion or
    service (None: every family)."""
    where, params = _filters(status, owner, kind, account, family)
    rows = _select(
        conn,
        where,
        [*params, limit, offset],
        " ORDER BY a.status IN ('open', 'acknowledged') DESC, a.priority, a.due_at, a.alert_id"
        " LIMIT %s OFFSET %s",
    )
    return [{k: v for k, v in r.items() if k not in _PRIVATE} for r in rows]


def count_alerts(
    conn: psycopg.Connection[TupleRow],
    *,
    status: str | None = None,
    owner: str | None = None,
    kind: str | None = None,
    account: str | None = None,
) -> int:
    """How many alerts :func:`list_alerts` with the same filters would list without a limit."""
    where, params = _filters(status, owner, kind, account)
    row = conn.execute(sql.SQL(_COUNT) + where, params).fetchone()
    return int(row[0]) if row else 0


def _filters(
    status: str | None,
    owner: str | None,
    kind: str | None,
    account: str | None,
    family: str | None = None,
) -> tuple[sql.Composed, list[Any]]:
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    if status == "active":
        clauses.append(sql.SQL("a.status IN ('open', 'acknowledged')"))
    elif status == "closed":
        clauses.append(sql.SQL("a.status NOT IN ('open', 'acknowledged')"))
    elif status is not None:
        if status not in STATUSES:
            raise InputError(f"unknown alert status {status!r}: use {', '.join(STATUS_FILTERS)}")
        clauses.append(sql.SQL("a.status = %s"))
        params.append(status)
    for column, wanted in (
        ("owner_csm_id", owner),
        ("kind", kind),
        ("account_id", account),
        ("family", family),
    ):
        if wanted is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier("a", column)))
            params.append(wanted)
    return sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(clauses)), params


def get_alert(conn: psycopg.Connection[TupleRow], alert_id: int) -> dict[str, Any]:
    """One alert as a JSON-ready dict; :class:`NotFound` if there is none."""
    rows = _select(conn, sql.SQL(" WHERE a.alert_id = %s"), [alert_id])
    if not rows:
        raise NotFound(f"no alert #{alert_id}")
    return {k: v for k, v in rows[0].items() if k not in _PRIVATE}


def alert_history(conn: psycopg.Connection[TupleRow], alert_id: int) -> list[dict[str, Any]]:
    """The alert's changes, oldest first: at, action, actor, detail."""
    rows = conn.execute(
        "SELECT at, action, actor, detail FROM alert_history WHERE alert_id = %s"
        " ORDER BY at, action",
        (alert_id,),
    ).fetchall()
    return [
        {"at": at.isoformat(), "action": action, "actor": actor, "detail": detail}
        for at, action, actor, detail in rows
    ]


# -- what the CSM does ------------------------------------------------------------------------


_PER_CSM = """
SELECT c.csm_id, c.name,
       count(a.alert_id) FILTER (WHERE a.status = 'open'),
       count(a.alert_id) FILTER (WHERE a.status = 'acknowledged')
FROM csms c
LEFT JOIN alerts a ON a.owner_csm_id = c.csm_id AND a.status IN ('open', 'acknowledged')
GROUP BY c.csm_id, c.name
ORDER BY count(a.alert_id) FILTER (WHERE a.status = 'open') DESC, c.csm_id
"""


def active_per_csm(conn: psycopg.Connection[TupleRow]) -> list[tuple[str, str, int, int]]:
    """Every CSM as (csm_id, name, open alerts, acknowledged alerts), most open first."""
    return [(str(c), str(n), int(o), int(a)) for c, n, o, a in conn.execute(_PER_CSM)]


def active_by_account_family(
    conn: psycopg.Connection[TupleRow], owner: str | None = None
) -> dict[str, dict[str, int]]:
    """Active (open or acknowledged) alerts per account and family: ``{account: {family: n}}``;
    ``owner`` limits them to one CSM's alerts."""
    rows = conn.execute(
        "SELECT account_id, family, count(*) FROM alerts WHERE status IN ('open', 'acknowledged')"
        " AND (%(owner)s::text IS NULL OR owner_csm_id = %(owner)s) GROUP BY account_id, family",
        {"owner": owner},
    ).fetchall()
    found: dict[str, dict[str, int]] = {}
    for account_id, family, count in rows:
        found.setdefault(account_id, {})[family] = int(count)
    return found


def unowned_active(conn: psycopg.Connection[TupleRow]) -> int:
    """How many active (open or acknowledged) alerts have no owner: their account has no CSM."""
    row = conn.execute(
        "SELECT count(*) FROM alerts"
        " WHERE status IN ('open', 'acknowledged') AND owner_csm_id IS NULL"
    ).fetchone()
    return int(row[0]) if row else 0


def delivery_counts(conn: psycopg.Connection[TupleRow]) -> dict[str, int]:
    """How many alerts (any status) reached their CSM each way: ``immediate`` or ``digest``."""
    rows = conn.execute("SELECT delivery, count(*) FROM alerts GROUP BY delivery ORDER BY 1")
    return {str(d): int(n) for d, n in rows}


def open_alert_account(conn: psycopg.Connection[TupleRow], alert_id: int) -> str | None:
    """The account of alert ``alert_id`` while it is open (None when it is not, or not there)."""
    row = conn.execute(
        "SELECT account_id FROM alerts WHERE alert_id = %s AND status = 'open'", (alert_id,)
    ).fetchone()
    return str(row[0]) if row else None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _lock(conn: psycopg.Connection[TupleRow], alert_id: int) -> str:
    row = conn.execute(
        "SELECT status FROM alerts WHERE alert_id = %s FOR UPDATE", (alert_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no alert #{alert_id}")
    return str(row[0])


def _actor(actor: str) -> str:
    name = " ".join(actor.split())
    if not name:
        raise InputError("say who makes the change (an actor name)")
    return name[:200]


def _history(
    conn: psycopg.Connection[TupleRow],
    alert_id: int,
    at: dt.datetime,
    action: str,
    actor: str,
    detail: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO alert_history (alert_id, at, action, actor, detail)"
        " VALUES (%s, %s, %s, %s, %s)",
        (alert_id, at, action, actor, Jsonb(detail)),
    )


def acknowledge(
    conn: psycopg.Connection[TupleRow],
    alert_id: int,
    actor: str,
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """open → acknowledged, keeping who and when. Returns the alert."""
    at, who = now or _utcnow(), _actor(actor)
    with conn.transaction():
        status = _lock(conn, alert_id)
        if status != "open":
            raise AlertStateError(alert_id, status, "acknowledge", ("open",))
        conn.execute(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_at = %s,"
            " acknowledged_by = %s, updated_at = %s WHERE alert_id = %s",
            (at, who, at, alert_id),
        )
        _history(conn, alert_id, at, "acknowledged", who, {})
        return get_alert(conn, alert_id)


def snooze(
    conn: psycopg.Connection[TupleRow],
    alert_id: int,
    until: dt.datetime,
    reason: str,
    actor: str,
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Hold an open or acknowledged alert's messages until ``until`` (a later time), with a
    reason. The alert stays active and keeps being updated. Returns the alert."""
    at, who = now or _utcnow(), _actor(actor)
    _check_aware(until)
    text = " ".join(reason.split())
    if not text:
        raise InputError("a snooze needs a reason")
    if until <= at:
        raise InputError(f"snooze until {until.isoformat()} is not in the future")
    with conn.transaction():
        status = _lock(conn, alert_id)
        if status not in ACTIVE:
            raise AlertStateError(alert_id, status, "snooze", ACTIVE)
        conn.execute(
            "UPDATE alerts SET snoozed_until = %s, snooze_reason = %s, updated_at = %s"
            " WHERE alert_id = %s",
            (until, text, at, alert_id),
        )
        _history(conn, alert_id, at, "snoozed", who, {"until": until.isoformat(), "reason": text})
        return get_alert(conn, alert_id)


def resolve(
    conn: psycopg.Connection[TupleRow],
    alert_id: int,
    outcome: str,
    actor: str,
    note: str = "",
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """open or acknowledged → won, lost or dismissed, with who, when and an optional note."""
    at, who = now or _utcnow(), _actor(actor)
    if outcome not in OUTCOMES:
        raise InputError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    with conn.transaction():
        status = _lock(conn, alert_id)
        if status not in ACTIVE:
            raise AlertStateError(alert_id, status, f"resolve ({outcome})", ACTIVE)
        conn.execute(
            "UPDATE alerts SET status = %s, closed_at = %s, closed_by = %s,"
            " note = COALESCE(NULLIF(%s, ''), note), updated_at = %s WHERE alert_id = %s",
            (outcome, at, who, note, at, alert_id),
        )
        _history(conn, alert_id, at, outcome, who, {"note": note} if note else {})
        return get_alert(conn, alert_id)


def feedback(
    conn: psycopg.Connection[TupleRow],
    alert_id: int,
    useful: bool,
    actor: str,
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Record whether the alert was useful (any status; the latest answer counts, every answer
    stays in the history). Kept for measuring precision."""
    at, who = now or _utcnow(), _actor(actor)
    verdict = "useful" if useful else "not_useful"
    with conn.transaction():
        _lock(conn, alert_id)
        conn.execute(
            "UPDATE alerts SET feedback = %s, feedback_by = %s, feedback_at = %s"
            " WHERE alert_id = %s",
            (verdict, who, at, alert_id),
        )
        _history(conn, alert_id, at, "feedback", who, {"feedback": verdict})
        return get_alert(conn, alert_id)


# -- messages ---------------------------------------------------------------------------------


def alert_url(public_url: str, csm_id: str | None, alert_id: int) -> str | None:
    """The alert on its owner's page, ``<public url>/csm/<csm id>#alert-<id>``; None without a
    public URL or an owner (see "Links" in the module docstring)."""
    base = public_url.strip().rstrip("/")
    if not base or not csm_id:
        return None
    return f"{base}/csm/{urllib.parse.quote(csm_id, safe='')}#alert-{alert_id}"


SIGN_IN_LINE = "Sign in to basewatch if it asks you to; the link opens the alert on your page."
NO_ADDRESS_LINE = (
    "Answer it on your basewatch page (alert #{n}); ask your administrator for the basewatch "
    "address."
)


def alert_messages(
    conn: psycopg.Connection[TupleRow],
    events: Mapping[int, str],
    currency: str,
    public_url: str = "",
) -> list[OutboxMessage]:
    """The email and webhook messages of each alert id's event ("opened", or "reminder:<snooze
    end>"), addressed to its owner CSM, linking to ``public_url`` (:func:`alert_url`); an alert
    whose owner has neither is logged, skipped."""
    if not events:
        return []
    messages = []
    for alert in _select(conn, sql.SQL(" WHERE a.alert_id = ANY(%s)"), [list(events)]):
        found = render_messages(alert, events[alert["alert_id"]], currency, public_url)
        if not found:
            log.warning(
                "alert %d (%s, %s): owner %s has no email or webhook; not delivered",
                alert["alert_id"],
                alert["kind"],
                alert["account_id"],
                alert["owner_csm_id"] or "(none)",
            )
        messages.extend(found)
    return messages


def render_messages(
    alert: dict[str, Any], event: str, currency: str, public_url: str = ""
) -> list[OutboxMessage]:
    """Pure: the messages of one alert row (as :func:`_select` returns it) for ``event``;
    their ``dedup_key`` is ``alert:<id>:<event>:<channel>``."""
    alert_id = int(alert["alert_id"])
    key = f"alert:{alert_id}:{event}"
    reminder = event.startswith("reminder")
    subject = _one_line(
        f"[basewatch] P{alert['priority']} {alert['kind']}: "
        f"{alert['account_name'] or alert['account_id']}"
        + (f" / {alert['subject']}" if alert["subject"] else "")
        + (" (reminder)" if reminder else "")
    )
    body = render_text(alert, currency, reminder=reminder, public_url=public_url)
    out = []
    if alert.get("owner_email"):
        out.append(
            OutboxMessage(
                "email", alert["owner_email"], subject, body, f"{key}:email", alert_id=alert_id
            )
        )
    if alert.get("owner_webhook_url"):
        out.append(
            OutboxMessage(
                "webhook",
                alert["owner_webhook_url"],
                subject,
                body,
                f"{key}:webhook",
                payload=webhook_payload(alert, subject, body, currency, public_url),
                alert_id=alert_id,
            )
        )
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _money(amount: str, currency: str) -> str:
    return money(Decimal(amount), currency)


def render_text(
    alert: dict[str, Any], currency: str, *, reminder: bool = False, public_url: str = ""
) -> str:
    """The plain-text message: what, why (with numbers), worth, when, and where to answer it
    (a link with ``public_url``, else the fallback of the module docstring's "Links")."""
    n = alert["alert_id"]
    head = f"Reminder: alert #{n} still holds after its snooze" if reminder else f"New alert #{n}"
    account = alert["account_name"] or alert["account_id"]
    lines = [
        f"{head}: {alert['kind']} ({alert['family']}), priority {alert['priority']} of 5 "
        "(1 = most urgent)",
        f"Account: {account} ({alert['account_id']})",
    ]
    if alert["subject"]:
        lines.append(f"Subject: {alert['subject']}")
    lines.append(f"Promise: {_promise(str(alert['kind']))}")
    lines += ["", "Why:"]
    lines += [f"  - {reason}" for reason in alert["reasons"]] or ["  (no reasons given)"]
    if alert["figures"]:
        lines.append(
            "Figures: " + ", ".join(f"{k}={_figure(v)}" for k, v in alert["figures"].items())
        )
    lines += [
        "",
        f"Score {alert['score']:.2f} · value {_money(alert['value'], currency)} per month"
        f" · expected value {_money(alert['expected_value'], currency)} per month",
        f"Horizon {alert['horizon_days']} days · due {alert['due_at'][:10]} (UTC)",
        "",
    ]
    link = alert_url(public_url, alert["owner_csm_id"], int(n))
    if link:
        lines += [
            f"Open it to acknowledge, snooze, resolve or give feedback: {link}",
            SIGN_IN_LINE,
        ]
    else:
        lines += [
            NO_ADDRESS_LINE.format(n=n),
            f'Operators: basewatch alerts ack {n} | snooze {n} --hours 72 --reason "..."'
            f" | resolve {n} --outcome won|lost|dismissed | feedback {n} --useful|--not-useful",
        ]
    return "\n".join(lines) + "\n"


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def webhook_payload(
    alert: dict[str, Any], subject: str, body: str, currency: str, public_url: str = ""
) -> dict[str, Any]:
    """Slack-compatible JSON (``text`` plus Block Kit blocks, the link to the alert as a
    button); Teams incoming webhooks read ``text`` (markdown, where the link is a plain URL)
    and ignore the blocks."""
    n = int(alert["alert_id"])
    why = "\n".join(f"• {r}" for r in alert["reasons"]) or "(no reasons given)"
    fields = [
        ("Account", f"{alert['account_name'] or alert['account_id']} ({alert['account_id']})"),
        ("Subject", alert["subject"] or "whole account"),
        ("Score", f"{alert['score']:.2f}"),
        ("Priority", f"{alert['priority']} of 5"),
        ("Value / month", _money(alert["value"], currency)),
        ("Expected value / month", _money(alert["expected_value"], currency)),
        ("Due", alert["due_at"][:10]),
        ("Owner", alert["owner_name"] or alert["owner_csm_id"] or "-"),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": subject[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Why*\n{why}"[:3000]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in fields],
        },
    ]
    link = alert_url(public_url, alert["owner_csm_id"], n)
    if link:
        blocks += [
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": f"Open alert #{n}"},
                        "url": link,
                        "action_id": f"open-alert-{n}",
                    }
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": SIGN_IN_LINE}]},
        ]
    else:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": NO_ADDRESS_LINE.format(n=n)}],
            }
        )
    return {"text": body, "blocks": blocks}
