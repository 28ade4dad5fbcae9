"""What the pages show of machines from the rollups (never raw telemetry): each machine's
running hours (the counter's latest daily value) and the air an account's machines delivered
per day.

Air delivered per day = the day's mean ``flow_m3_min`` x 1,440 minutes, summed over the
account's machines: the daily rollup keeps the mean of the readings, so a day with readings
over only part of it counts that part's mean for the whole day (a gap in the data is not
drawn as a drop in usage). A day without a flow reading on any machine is absent.

The business review reads a period's figures per machine (:func:`usage_over_period`): air,
energy on the same daily-mean basis, hours with data, and the running-hours counter's rise."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class MachinePeriod:
    """What one machine did over a period of whole UTC days, from the rollups.

    ``air_m3`` and ``energy_kwh``: the sum over the days with a reading of the day's mean
    ``flow_m3_min`` x 1,440 and mean ``power_kw`` x 24 (the same basis as
    :func:`air_delivered_per_day`, so their ratio is the specific power); ``hours_reported``:
    hourly rollups with any reading; ``running_hours``: the ``running_hours`` counter's rise
    over the period (None without two readings of it)."""

    asset_id: str
    air_m3: float | None
    energy_kwh: float | None
    days_with_data: int
    hours_reported: int
    running_hours: float | None


def usage_over_period(
    conn: psycopg.Connection[TupleRow],
    asset_ids: Sequence[str],
    first: dt.date,
    last: dt.date,
) -> dict[str, MachinePeriod]:
    """``asset_id -> MachinePeriod`` over the UTC days ``first``..``last`` (both included);
    a machine without any rollup in the period is absent."""
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
    daily = conn.execute(
        "SELECT r.asset_id,"
        " sum((r.stats -> 'flow_m3_min' ->> 0)::float) * %(minutes)s,"
        " sum((r.stats -> 'power_kw' ->> 0)::float) * 24,"
        " count(*),"
        " max((r.stats -> 'running_hours' ->> 3)::float)"
        " - min((r.stats -> 'running_hours' ->> 1)::float)"
        " FROM rollup_daily r WHERE r.asset_id = ANY(%(assets)s)"
        " AND r.bucket >= %(start)s AND r.bucket < %(end)s GROUP BY r.asset_id",
        {"minutes": MINUTES_PER_DAY, "assets": list(asset_ids), "start": start, "end": end},
    ).fetchall()
    hourly: dict[str, int] = {
        str(asset_id): int(hours)
        for asset_id, hours in conn.execute(
            "SELECT r.asset_id, count(*) FROM rollup_hourly r WHERE r.asset_id = ANY(%s)"
            " AND r.bucket >= %s AND r.bucket < %s AND r.samples > 0 GROUP BY r.asset_id",
            (list(asset_ids), start, end),
        ).fetchall()
    }
    return {
        str(asset_id): MachinePeriod(
            str(asset_id),
            None if air is None else float(air),
            None if energy is None else float(energy),
            int(days),
            hourly.get(str(asset_id), 0),
            None if ran is None else max(float(ran), 0.0),
        )
        for asset_id, air, energy, days, ran in daily
    }
