"""Keeping telemetry bounded: TimescaleDB policies, or plain deletes by the scheduler."""

from __future__ import annotations

import logging

import psycopg
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)


def apply_timescale_policies(
    conn: psycopg.Connection[TupleRow], *, retention_days: int, compress_after_days: int
) -> None:
    """(Re)set the compression and retention policies of the telemetry hypertable.

    ``retention_days`` 0 keeps data forever. Safe to call on every migrate."""
    conn.execute("SELECT remove_compression_policy('telemetry', if_exists => true)")
    conn.execute(
        "SELECT add_compression_policy('telemetry', make_interval(days => %s))",
        (compress_after_days,),
    )
    conn.execute("SELECT remove_retention_policy('telemetry', if_exists => true)")
    if retention_days > 0:
        conn.execute(
            "SELECT add_retention_policy('telemetry', make_interval(days => %s))", (retention_days,)
        )
    log.info(
        "telemetry: compress after %d days, retention %s",
        compress_after_days,
        f"{retention_days} days" if retention_days else "forever",
    )


def delete_expired(conn: psycopg.Connection[TupleRow], retention_days: int) -> int:
    """Plain PostgreSQL: delete telemetry older than ``retention_days``; returns rows deleted."""
    if retention_days <= 0:
        return 0
    cur = conn.execute(
        "DELETE FROM telemetry WHERE time < now() - make_interval(days => %s)", (retention_days,)
    )
    conn.commit()
    return cur.rowcount
