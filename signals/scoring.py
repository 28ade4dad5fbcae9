"""A scoring pass: every signal of every account as of one moment, from rollups only.

``score(conn, as_of)`` returns the findings; ``signals.alerts`` turns them into alerts. The
rule signals live in ``signals.rules`` (usage, silence, capacity and leaks, energy) and
``signals.wear_findings`` (component due, third-party parts).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import psycopg
from psycopg.rows import TupleRow

from signals.catalogue import PriceBook
from signals.findings import Finding
from signals.rules import capacity_findings, energy_findings, silence_findings, usage_findings
from signals.wear_findings import wear_findings

log = logging.getLogger(__name__)

KINDS_SCORED = frozenset(
    {
        "usage_decline",
        "usage_growth",
        "silent_assets",
        "capacity_saturation",
        "efficiency_upgrade",
        "heat_recovery",
        "component_due",
        "third_party_parts",
    }
)


def accounts_with_heat_recovery(conn: psycopg.Connection[TupleRow]) -> set[str]:
    """Accounts that have a heat-recovery module: a registered component of that kind."""
    rows = conn.execute(
        "SELECT DISTINCT a.account_id FROM components c JOIN assets a"
        " USING (asset_id) WHERE c.kind = 'heat_recovery'"
    ).fetchall()
    return {str(r[0]) for r in rows}


def score(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime, prices: PriceBook | None = None
) -> list[Finding]:
    """All findings as of ``as_of`` (only rollup buckets before it are read)."""
    prices = prices or PriceBook()
    started = time.monotonic()
    findings = (
        usage_findings(conn, as_of, prices)
        + silence_findings(conn, as_of, prices)
        + capacity_findings(conn, as_of, prices)
        + energy_findings(conn, as_of, prices, accounts_with_heat_recovery(conn))
        + wear_findings(conn, as_of, prices)
    )
    log.info(
        "scored as of %s: %d findings in %.1f s",
        as_of.isoformat(),
        len(findings),
        time.monotonic() - started,
    )
    return findings


def score_now(
    conn: psycopg.Connection[TupleRow],
    now: dt.datetime,
    clear_after: dt.timedelta = dt.timedelta(hours=48),
    cooldown: dt.timedelta = dt.timedelta(days=7),
) -> int:
    """The scheduler's hourly job: score as of ``now`` and apply the findings to the alerts;
    returns the number of alerts opened."""
    from signals.alerts import apply_findings

    findings = score(conn, now)
    result = apply_findings(
        conn,
        findings,
        now=now,
        kinds_scored=KINDS_SCORED,
        clear_after=clear_after,
        cooldown=cooldown,
    )
    return len(result.opened)
