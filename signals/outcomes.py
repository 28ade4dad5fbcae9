"""What became of an account's alerts over a period, for the business review: each alert opened
in the period with its kind, family, machine, status, money value and when it was acknowledged
and closed. Read from the alerts table this package owns; other packages read the published
``alert_outcomes`` view, the composition root this function."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from psycopg.rows import TupleRow

from signals.alerts import OUTCOMES
from signals.findings import asset_of


@dataclass(frozen=True)
class AlertOutcome:
    alert_id: int
    kind: str
    family: str  # risk, expansion or service
    subject: str  # the machine (``asset`` or ``asset/component``), or "" for the account
    status: str  # open, acknowledged, won, lost, dismissed, expired
    value: Decimal  # the alert's money value per month, reporting currency
    expected_value: Decimal
    opened_at: dt.datetime
    acknowledged_at: dt.datetime | None
    closed_at: dt.datetime | None

    @property
    def asset_id(self) -> str:
        """The machine the alert is about ("" for the account as a whole)."""
        return asset_of(self.subject)

    @property
    def acted_on(self) -> bool:
        """Acknowledged at some point, or resolved by a person (won, lost or dismissed)."""
        # the outcomes a person records; as the team page counts (signals.team_figures),
        # expired is not acted on
        return self.acknowledged_at is not None or self.status in OUTCOMES


def alerts_opened_between(
    conn: psycopg.Connection[TupleRow],
    account_id: str,
    since: dt.datetime,
    until: dt.datetime,
) -> list[AlertOutcome]:
    """The account's alerts opened at ``since`` or later and before ``until``, oldest first."""
    rows = conn.execute(
        "SELECT alert_id, kind, family, subject, status, value, expected_value, opened_at,"
        " acknowledged_at, closed_at FROM alerts"
        " WHERE account_id = %s AND opened_at >= %s AND opened_at < %s"
        " ORDER BY opened_at, alert_id",
        (account_id, since, until),
    ).fetchall()
    return [AlertOutcome(*row) for row in rows]
