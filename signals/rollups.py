"""Incremental refresh of the hourly and daily rollups (set-based, in the database).

A refresh finds the (asset, hour) buckets touched by telemetry written since the last refresh
(``ingested_at`` above the watermark, minus a safety overlap for transactions that were still
open), recomputes those buckets whole from telemetry, then the days that contain them from the
hourly rollup. Recomputing whole buckets makes a refresh idempotent: running it twice, or over
an overlap, changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

OVERLAP = dt.timedelta(minutes=5)  # longer than any write transaction of the ingesters
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_CHANGED = """
CREATE TEMP TABLE rollup_changed ON COMMIT DROP AS
SELECT DISTINCT asset_id, date_bin('1 hour', time, %(origin)s) AS bucket
FROM telemetry WHERE ingested_at > %(since)s AND ingested_at <= %(until)s
"""
# The aggregate of one bucket's (or one day's) rows; the FROM clause differs between the
# first refresh (every row, one pass) and an incremental one (the changed buckets, each read
# through the primary key).
_HOURLY_VALUES = """
SELECT asset_id, bucket, max(readings)::integer,
       jsonb_object_agg(metric, jsonb_build_array(mean, minimum, maximum, last, readings))
FROM (
    SELECT t.asset_id, date_bin('1 hour', t.time, %(origin)s) AS bucket, m.key AS metric,
           count(*) AS readings, avg(m.value::double precision) AS mean,
           min(m.value::double precision) AS minimum, max(m.value::double precision) AS maximum,
           (array_agg(m.value::double precision ORDER BY t.time DESC))[1] AS last
    FROM {source}
    CROSS JOIN LATERAL jsonb_each_text(t.metrics) AS m(key, value)
    GROUP BY 1, 2, 3
) per_metric
GROUP BY asset_id, bucket
"""
_HOURLY_ALL = "telemetry t"
_HOURLY_CHANGED = """rollup_changed c
JOIN LATERAL (SELECT * FROM telemetry t1 WHERE t1.asset_id = c.asset_id
              AND t1.time >= c.bucket AND t1.time < c.bucket + INTERVAL '1 hour') t ON true"""
_DAILY_VALUES = """
SELECT asset_id, day, max(readings)::integer,
       jsonb_object_agg(metric, jsonb_build_array(mean, minimum, maximum, last, readings))
FROM (
    SELECT h.asset_id, date_bin('1 day', h.bucket, %(origin)s) AS day, s.key AS metric,
           sum((s.value->>4)::integer) AS readings,
           sum((s.value->>0)::double precision * (s.value->>4)::integer)
               / sum((s.value->>4)::integer) AS mean,
           min((s.value->>1)::double precision) AS minimum,
           max((s.value->>2)::double precision) AS maximum,
           (array_agg((s.value->>3)::double precision ORDER BY h.bucket DESC))[1] AS last
    FROM {source}
    CROSS JOIN LATERAL jsonb_each(h.stats) AS s(key, value)
    GROUP BY 1, 2, 3
) per_metric
GROUP BY asset_id, day
"""
_DAILY_ALL = "rollup_hourly h"
_DAILY_CHANGED = """(SELECT DISTINCT asset_id, date_bin('1 day', bucket, %(origin)s) AS day
      FROM rollup_changed) d
JOIN LATERAL (SELECT * FROM rollup_hourly h1 WHERE h1.asset_id = d.asset_id
              AND h1.bucket >= d.day AND h1.bucket < d.day + INTERVAL '1 day') h ON true"""
_UPSERT = """
INSERT INTO {table} AS r (asset_id, bucket, samples, stats)
{values}
ON CONFLICT (asset_id, bucket) DO UPDATE SET samples = EXCLUDED.samples, stats = EXCLUDED.stats
"""


def _statement(table: str, values: str, source: str) -> bytes:
    return _UPSERT.format(table=table, values=values.format(source=source)).encode()


@dataclass(frozen=True)
class RefreshResult:
    buckets: int
    hourly_rows: int
    daily_rows: int
    seconds: float


def refresh_rollups(conn: psycopg.Connection[TupleRow]) -> RefreshResult:
    """Bring the rollups up to date with telemetry written since the last refresh."""
    started = time.monotonic()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7420240002)")  # one refresher at a time
        row = conn.execute("SELECT watermark FROM rollup_state WHERE name = 'telemetry'").fetchone()
        since = (row[0] - OVERLAP) if row else _EPOCH
        until_row = conn.execute("SELECT now()").fetchone()
        assert until_row is not None
        until = until_row[0]
        params = {"since": since, "until": until, "origin": _EPOCH}
        first = row is None
        conn.execute(_CHANGED, params)
        conn.execute("ANALYZE rollup_changed")
        changed_row = conn.execute("SELECT count(*) FROM rollup_changed").fetchone()
        changed = int(changed_row[0]) if changed_row else 0
        hourly = daily = 0
        if changed:
            hourly = conn.execute(
                _statement(
                    "rollup_hourly", _HOURLY_VALUES, _HOURLY_ALL if first else _HOURLY_CHANGED
                ),
                params,
            ).rowcount
            daily = conn.execute(
                _statement("rollup_daily", _DAILY_VALUES, _DAILY_ALL if first else _DAILY_CHANGED),
                params,
            ).rowcount
        conn.execute(
            "INSERT INTO rollup_state (name, watermark) VALUES ('telemetry', %s)"
            " ON CONFLICT (name) DO UPDATE SET watermark = EXCLUDED.watermark,"
            " refreshed_at = now()",
            (until,),
        )
    result = RefreshResult(changed, hourly, daily, time.monotonic() - started)
    log.info(
        "rollups refreshed: %d hour buckets, %d hourly and %d daily rows in %.1f s",
        changed,
        hourly,
        daily,
        result.seconds,
    )
    return result
