"""The daily digest (optional): one email per CSM listing that CSM's active alerts, most
urgent first, in addition to the message each alert sent when it opened.

Snoozed alerts are left out until their snooze ends. The ``dedup_key`` is
``digest:<csm_id>:<day>`` (the UTC day of ``now``), so running the job twice on one day, or on
two replicas, enqueues one digest.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from signals.alerts import list_alerts
from signals.catalogue import money
from signals.delivery import OutboxMessage, enqueue

log = logging.getLogger(__name__)

MAX_LISTED = 200  # alerts listed in one digest; the rest are counted

_RECIPIENTS = """
SELECT c.csm_id, c.name, c.email FROM csms c
WHERE coalesce(c.email, '') <> ''
  AND EXISTS (SELECT 1 FROM alerts a WHERE a.owner_csm_id = c.csm_id
              AND a.status IN ('open', 'acknowledged')
              AND (a.snoozed_until IS NULL OR a.snoozed_until <= %(now)s))
ORDER BY c.csm_id
"""


def enqueue_digests(conn: psycopg.Connection[TupleRow], *, now: dt.datetime, currency: str) -> int:
    """Enqueue today's digest for every CSM with an email and active alerts; returns the
    number of digests added (0 for those already enqueued today). Commits."""
    day = now.astimezone(dt.UTC).date()
    with conn.transaction():
        recipients = conn.execute(_RECIPIENTS, {"now": now}).fetchall()
        messages = []
        for csm_id, name, email in recipients:
            alerts = [
                a
                for a in list_alerts(conn, status="active", owner=csm_id, limit=10_000)
                if a["snoozed_until"] is None
                or dt.datetime.fromisoformat(a["snoozed_until"]) <= now
            ]
            if not alerts:
                continue
            subject, body = render_digest(name, alerts, day, currency)
            messages.append(
                OutboxMessage("email", email, subject, body, f"digest:{csm_id}:{day.isoformat()}")
            )
        added = enqueue(conn, messages, now=now)
    log.info("digests: %d enqueued for %s (%d CSMs with active alerts)", added, day, len(messages))
    return added


def render_digest(
    csm_name: str, alerts: list[dict[str, Any]], day: dt.date, currency: str
) -> tuple[str, str]:
    """Pure: the subject and plain-text body of one CSM's digest."""
    total = sum((Decimal(a["expected_value"]) for a in alerts), Decimal(0))
    subject = (
        f"[basewatch] {day.isoformat()}: {len(alerts)} active alerts, "
        f"expected value {money(total, currency)} per month"
    )
    lines = [f"Hello {csm_name},", "", f"Your active alerts on {day.isoformat()}:", ""]
    for a in alerts[:MAX_LISTED]:
        where = a["account_name"] or a["account_id"]
        if a["subject"]:
            where += f" / {a['subject']}"
        lines.append(
            f"#{a['alert_id']} P{a['priority']} {a['kind']} ({a['status']}) - {where}: "
            f"expected value {money(Decimal(a['expected_value']), currency)} per month, "
            f"due {a['due_at'][:10]}"
        )
        lines += [f"    - {reason}" for reason in a["reasons"][:3]]
    if len(alerts) > MAX_LISTED:
        lines.append(f"... and {len(alerts) - MAX_LISTED} more: basewatch alerts list")
    lines += ["", "Acknowledge one with: basewatch alerts ack ID"]
    return subject, "\n".join(lines) + "\n"
