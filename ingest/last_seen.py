"""When each machine's latest reading was taken (device time), for the pages' "last data
received": one index probe per machine on telemetry's (asset_id, time) key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import psycopg
from psycopg.rows import TupleRow


def last_readings(
    conn: psycopg.Connection[TupleRow], asset_ids: Sequence[str]
) -> dict[str, dt.datetime]:
    """``asset_id -> time`` of its latest stored reading; a machine without any is absent."""
    rows = conn.execute(
        "SELECT a.asset_id, last.time FROM unnest(%s::text[]) AS a(asset_id)"
        " CROSS JOIN LATERAL (SELECT t.time FROM telemetry t WHERE t.asset_id = a.asset_id"
        " ORDER BY t.time DESC LIMIT 1) AS last",
        (list(asset_ids),),
    ).fetchall()
    return {str(asset_id): time for asset_id, time in rows}


def last_reading_per_account(
    conn: psycopg.Connection[TupleRow], account_ids: Sequence[str]
) -> dict[str, dt.datetime]:
    """``account_id -> time`` of the latest reading of any of its machines; an account
    without any is absent."""
    rows = conn.execute(
        "SELECT a.account_id, max(last.time) FROM assets a"
        " CROSS JOIN LATERAL (SELECT t.time FROM telemetry t WHERE t.asset_id = a.asset_id"
        " ORDER BY t.time DESC LIMIT 1) AS last"
        " WHERE a.account_id = ANY(%s) GROUP BY a.account_id",
        (list(account_ids),),
    ).fetchall()
    return {str(account_id): time for account_id, time in rows}
