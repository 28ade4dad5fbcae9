"""Each CSM's alerts over a window, for the managers' team page: how many were raised, how many
are still active (and overdue), how many a person acted on, and what was won.

Basis: the alerts *opened* in the window (``opened_at >= since``), so every rate has the same
denominator. *Acted on* = acknowledged at some point, or resolved by a person (won, lost or
dismissed); an alert that only expired (closed by ``system``) or is still open unread was not
acted on. *Won value* = the sum of the won alerts' money value (per month, in the currency the
alerts were scored in, the reporting currency). A CSM without alerts in the window is listed
with zeros; alerts of accounts without a CSM are left out (``signals.alerts.unowned_active``
counts those)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from psycopg.rows import TupleRow


@dataclass(frozen=True)
class CsmAlerts:
    """One CSM's alert figures over the window."""

    csm_id: str
    name: str
    raised: int
    active: int
    overdue: int  # active with their due date passed
    acted_on: int
    won: int
    won_value: Decimal

    @property
    def acted_on_share(self) -> float | None:
        """acted_on / raised; None without alerts (no rate, not 0 %)."""
        return self.acted_on / self.raised if self.raised else None


def alerts_per_csm(
    conn: psycopg.Connection[TupleRow], since: dt.datetime, now: dt.datetime
) -> list[CsmAlerts]:
    """Every CSM's figures over the alerts opened since ``since``, by name."""
    rows = conn.execute(
        "SELECT c.csm_id, c.name, count(a.alert_id),"
        " count(a.alert_id) FILTER (WHERE a.status IN ('open', 'acknowledged')),"
        " count(a.alert_id) FILTER (WHERE a.status IN ('open', 'acknowledged')"
        "  AND a.due_at < %(now)s),"
        " count(a.alert_id) FILTER (WHERE a.acknowledged_at IS NOT NULL"
        "  OR a.status IN ('won', 'lost', 'dismissed')),"
        " count(a.alert_id) FILTER (WHERE a.status = 'won'),"
        " coalesce(sum(a.value) FILTER (WHERE a.status = 'won'), 0)"
        " FROM csms c LEFT JOIN alerts a ON a.owner_csm_id = c.csm_id AND a.opened_at >= %(since)s"
        " GROUP BY c.csm_id, c.name ORDER BY c.name, c.csm_id",
        {"since": since, "now": now},
    ).fetchall()
    return [
        CsmAlerts(str(c), str(n), int(r), int(a), int(o), int(d), int(w), Decimal(v))
        for c, n, r, a, o, d, w, v in rows
    ]
