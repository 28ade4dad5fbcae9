"""The digest: one email per CSM, weekly by default, listing first the alerts held for it since
the last digest (``delivery`` = ``digest``: their kind's precision is below the setting or
unmeasured, or the CSM's weekly budget of immediate alerts was used; see ``signals.routing``),
then the CSM's other active alerts, most urgent first.

Held alerts must reach the CSM: a CSM with a held alert not yet listed always gets the digest.
``everyone`` (``BASEWATCH_ALERT_DIGEST``) also sends it to every CSM with active alerts and
nothing held, as the optional daily digest always did; without it a CSM whose alerts were all
sent at once gets no digest. A held alert is listed in the "held" part of one digest (its
``digested_at`` is set in the transaction that enqueues it); later digests list it with the
other active alerts while it stays active. A held alert that expired or was resolved before
the digest is not listed: its condition cleared, or the CSM found it anyway.

Snoozed alerts are left out until their snooze ends. The ``dedup_key`` is
``digest:<csm_id>:<period>``, the period being the ISO week of ``now`` (``2025-W23``) for the
weekly digest, or its UTC day (``2025-06-02``) for ``period="day"``, so running the job twice
in one period, or on two replicas, enqueues one digest (and marks the held alerts of the
first only).

Links: with the API's public URL (``BASEWATCH_API_PUBLIC_URL``, passed down as ``public_url``)
each listed alert has its link (``signals.alerts.alert_url``: the alert on the CSM's page) and
the digest ends with the page's address and a line saying to sign in. Without it the digest
says to ask the administrator for the basewatch address and keeps the CLI line for operators,
as the alert messages do (see "Links" in ``signals.alerts``).
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from signals.alerts import SIGN_IN_LINE, alert_url, list_alerts
from signals.catalogue import money
from signals.delivery import OutboxMessage, enqueue

log = logging.getLogger(__name__)

MAX_LISTED = 200  # alerts listed in one digest; the rest are counted
PERIODS = ("week", "day")

_RECIPIENTS = """
SELECT c.csm_id, c.name, c.email FROM csms c
WHERE coalesce(c.email, '') <> ''
  AND EXISTS (SELECT 1 FROM alerts a WHERE a.owner_csm_id = c.csm_id
              AND a.status IN ('open', 'acknowledged')
              AND (a.snoozed_until IS NULL OR a.snoozed_until <= %(now)s)
              AND (%(everyone)s OR (a.delivery = 'digest' AND a.digested_at IS NULL)))
  AND NOT EXISTS (SELECT 1 FROM outbox o
                  WHERE o.dedup_key = 'digest:' || c.csm_id || ':' || %(period)s)
ORDER BY c.csm_id
"""


def period_key(now: dt.datetime, period: str = "week") -> str:
    """The digest period of ``now`` (UTC): ``2025-W23`` (ISO week) or ``2025-06-02`` (day)."""
    if period not in PERIODS:
        raise ValueError(f"digest period must be one of {', '.join(PERIODS)}, got {period!r}")
    day = now.astimezone(dt.UTC).date()
    if period == "day":
        return day.isoformat()
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def is_held(alert: dict[str, Any]) -> bool:
    """Whether an alert (as ``list_alerts`` gives it) was held for a digest not yet sent."""
    return alert["delivery"] == "digest" and alert["digested_at"] is None


def enqueue_digests(
    conn: psycopg.Connection[TupleRow],
    *,
    now: dt.datetime,
    currency: str,
    period: str = "week",
    everyone: bool = True,
    public_url: str = "",
) -> int:
    """Enqueue this period's digest for every CSM with an email and held alerts (with
    ``everyone``: any active alerts); returns the number of digests added (0 for those
    already enqueued this period). Its links point to ``public_url`` (empty: none). Marks
    the held alerts listed. Commits."""
    key = period_key(now, period)
    with conn.transaction():
        recipients = conn.execute(
            _RECIPIENTS, {"now": now, "everyone": everyone, "period": key}
        ).fetchall()
        messages, listed = [], []
        for csm_id, name, email in recipients:
            alerts = [
                a
                for a in list_alerts(conn, status="active", owner=csm_id, limit=10_000)
                if a["snoozed_until"] is None
                or dt.datetime.fromisoformat(a["snoozed_until"]) <= now
            ]
            held = [a for a in alerts if is_held(a)]
            if not alerts or not (everyone or held):
                continue
            subject, body = render_digest(
                name, alerts, key, currency, public_url=public_url, csm_id=csm_id
            )
            messages.append(OutboxMessage("email", email, subject, body, f"digest:{csm_id}:{key}"))
            listed += [a["alert_id"] for a in held]
        added = enqueue(conn, messages, now=now)
        if listed:
            conn.execute(
                "UPDATE alerts SET digested_at = %s WHERE alert_id = ANY(%s)", (now, listed)
            )
    log.info("digests: %d enqueued for %s (%d held alerts listed)", added, key, len(listed))
    return added


def render_digest(
    csm_name: str,
    alerts: list[dict[str, Any]],
    period: str,
    currency: str,
    *,
    public_url: str = "",
    csm_id: str = "",
) -> tuple[str, str]:
    """Pure: the subject and plain-text body of one CSM's digest for ``period`` (its key):
    the held alerts first, then the other active ones, each part most urgent first, linking
    to ``public_url`` (CSM ``csm_id``'s page) when it is set."""
    held = [a for a in alerts if is_held(a)]
    others = [a for a in alerts if not is_held(a)]
    total = sum((Decimal(a["expected_value"]) for a in alerts), Decimal(0))
    subject = (
        f"[basewatch] {period}: {len(alerts)} active alerts"
        + (f" ({len(held)} new in this digest)" if held else "")
        + f", expected value {money(total, currency)} per month"
    )
    lines = [f"Hello {csm_name},", ""]
    shown = 0
    for title, part in (
        (f"New in this digest ({len(held)}): held back from an immediate message", held),
        (f"Your other active alerts ({len(others)})", others),
    ):
        if not part:
            continue
        lines += [f"{title}:", ""]
        for a in part[: max(MAX_LISTED - shown, 0)]:
            lines += _entry(a, currency, public_url)
        shown += min(len(part), max(MAX_LISTED - shown, 0))
        lines.append("")
    base = public_url.strip().rstrip("/")
    page = f"{base}/csm/{urllib.parse.quote(csm_id, safe='')}" if base and csm_id else ""
    if len(alerts) > shown:
        more = f"on your page: {page}" if page else "basewatch alerts list"
        lines.append(f"... and {len(alerts) - shown} more {more}")
    if page:
        lines += [f"Your alerts, to acknowledge, snooze or resolve: {page}", SIGN_IN_LINE]
    else:
        lines += [
            "Answer them on your basewatch page; ask your administrator for the basewatch address.",
            "Operators: basewatch alerts ack ID",
        ]
    return subject, "\n".join(lines) + "\n"


def _entry(a: dict[str, Any], currency: str, public_url: str = "") -> list[str]:
    where = a["account_name"] or a["account_id"]
    if a["subject"]:
        where += f" / {a['subject']}"
    lines = [
        f"#{a['alert_id']} P{a['priority']} {a['kind']} ({a['status']}) - {where}: "
        f"expected value {money(Decimal(a['expected_value']), currency)} per month, "
        f"due {a['due_at'][:10]}"
    ]
    lines += [f"    - {reason}" for reason in a["reasons"][:3]]
    link = alert_url(public_url, a["owner_csm_id"], int(a["alert_id"]))
    if link:
        lines.append(f"    {link}")
    if is_held(a):
        lines.append(f"    (why in the digest: {a['delivery_reason']})")
    return lines
