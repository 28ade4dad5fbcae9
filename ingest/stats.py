"""Figures about what ingest stored, for ``basewatch db stats``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import TupleRow


def stored_counts(conn: psycopg.Connection[TupleRow]) -> tuple[int, int, int]:
    """(telemetry rows, asset events, dead letters) stored so far."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM telemetry),"
        " (SELECT count(*) FROM asset_events),"
        " (SELECT count(*) FROM dead_letters)"
    ).fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def storage_stats(conn: psycopg.Connection[TupleRow]) -> dict[str, Any]:
    """Row counts of telemetry, events and dead letters, and telemetry's time span.

    A telemetry row is one reading (an asset at a device time); ``values`` counts its metrics.
    Dead letters: ``rows`` stored, ``suppressed`` the messages over the per-topic rate limit
    that were counted in a summary row instead of stored, ``truncated`` the (other) rows whose
    payload is a prefix of the message.
    """
    telemetry = conn.execute(
        "SELECT count(*), coalesce(sum((SELECT count(*) FROM jsonb_object_keys(metrics))), 0),"
        " count(DISTINCT asset_id), min(time), max(time), max(received_at) FROM telemetry"
    ).fetchone()
    events = conn.execute("SELECT count(*), min(time), max(time) FROM asset_events").fetchone()
    dead = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE resolved_at IS NULL),"
        " coalesce(sum(suppressed), 0),"
        " count(*) FILTER (WHERE suppressed = 0"
        " AND coalesce(payload_bytes, length(payload)) > length(payload))"
        " FROM dead_letters"
    ).fetchone()
    metrics = conn.execute("SELECT count(*) FROM metric_names").fetchone()
    assert telemetry is not None
    assert events is not None
    assert dead is not None
    assert metrics is not None
    return {
        "telemetry": {
            "rows": int(str(telemetry[0])),
            "values": int(str(telemetry[1])),
            "assets": int(str(telemetry[2])),
            "first_time": _iso(telemetry[3]),
            "last_time": _iso(telemetry[4]),
            "last_received_at": _iso(telemetry[5]),
            "metric_names": int(str(metrics[0])),
        },
        "events": {
            "rows": int(str(events[0])),
            "first_time": _iso(events[1]),
            "last_time": _iso(events[2]),
        },
        "dead_letters": {
            "rows": int(str(dead[0])),
            "unresolved": int(str(dead[1])),
            "suppressed": int(str(dead[2])),
            "truncated": int(str(dead[3])),
        },
    }


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else None
