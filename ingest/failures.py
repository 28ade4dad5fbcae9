"""The failures machines reported (``asset_events`` of kind ``failure``, from MQTT or an import),
for the business review."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow


@dataclass(frozen=True)
class Failure:
    asset_id: str
    time: dt.datetime
    component: str  # "" when the event names none
    code: str


def failures_between(
    conn: psycopg.Connection[TupleRow],
    asset_ids: Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
) -> list[Failure]:
    """The failures of ``asset_ids`` at ``since`` or later and before ``until``, oldest first."""
    rows = conn.execute(
        "SELECT asset_id, time, component, code FROM asset_events"
        " WHERE kind = 'failure' AND asset_id = ANY(%s) AND time >= %s AND time < %s"
        " ORDER BY time, asset_id",
        (list(asset_ids), since, until),
    ).fetchall()
    return [Failure(str(a), t, str(c), str(k)) for a, t, c, k in rows]
