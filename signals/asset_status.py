"""What the pages show of machines from the rollups (never raw telemetry): each machine's
running hours (the counter's latest daily value) and the air an account's machines delivered
per day.

Air delivered per day = the day's mean ``flow_m3_min`` x 1,440 minutes, summed over the
account's machines: the daily rollup keeps the mean of the readings, so a day with readings
over only part of it counts that part's mean for the whole day (a gap in the data is not
drawn as a drop in usage). A day without a flow reading on any machine is absent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import psycopg
from psycopg.rows import TupleRow

MINUTES_PER_DAY = 1440


def running_hours(conn: psycopg.Connection[TupleRow], asset_ids: Sequence[str]) -> dict[str, float]:
    """``asset_id -> running hours`` at its latest daily rollup that has the counter."""
    rows = conn.execute(
        "SELECT a.asset_id, last.hours FROM unnest(%s::text[]) AS a(asset_id)"
        " CROSS JOIN LATERAL (SELECT (r.stats -> 'running_hours' ->> 3)::float AS hours"
        " FROM rollup_daily r WHERE r.asset_id = a.asset_id AND r.stats ? 'running_hours'"
        " ORDER BY r.bucket DESC LIMIT 1) AS last",
        (list(asset_ids),),
    ).fetchall()
    return {str(asset_id): float(hours) for asset_id, hours in rows if hours is not None}


def air_delivered_per_day(
    conn: psycopg.Connection[TupleRow],
    asset_ids: Sequence[str],
    first: dt.date,
    last: dt.date,
) -> list[tuple[dt.date, float]]:
    """(UTC day, m³ delivered by ``asset_ids`` together) for the days ``first``..``last`` with
    a flow reading, oldest first."""
    rows = conn.execute(
        "SELECT (r.bucket AT TIME ZONE 'UTC')::date AS day,"
        " sum((r.stats -> 'flow_m3_min' ->> 0)::float) * %s"
        " FROM rollup_daily r WHERE r.asset_id = ANY(%s) AND r.stats ? 'flow_m3_min'"
        " AND r.bucket >= %s AND r.bucket < %s GROUP BY day ORDER BY day",
        (
            MINUTES_PER_DAY,
            list(asset_ids),
            dt.datetime.combine(first, dt.time(), dt.UTC),
            dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC),
        ),
    ).fetchall()
    return [(day, float(volume)) for day, volume in rows if volume is not None]
