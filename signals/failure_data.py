"""The rows and events that ``signals.failure_features`` computes features from, read from the
database, and the fleet's labelled snapshots for training.

Training and scoring read the same rollups into the same :class:`AssetHistory` shape and call
the same ``snapshot_features``; they differ only in how much they read:

- **training** (:func:`training_snapshots`) reads every hourly and daily row of the chosen
  assets from ``LOOKBACK`` (28 days) before the first snapshot to the cut-off, in batches of
  ``BATCH_ASSETS`` assets (memory stays flat), and all their events before the cut-off;
- **scoring** (:func:`scoring_histories`) reads, per asset, only the rows a snapshot at ``t``
  uses: every third hour of its reference period, the last 24 hourly rows, the last 28 daily
  rows, the alarms of the last 7 days and the latest maintenance event per kind and component.

Only the metrics the features use are read (the spec's and ``running_hours``), as arrays of
figures per row. ``first_seen`` (the hour of an asset's first reading) comes from the hourly
rollups in both: the first hourly bucket of its first day. Scoring used to count "hours since
maintenance" from the first *daily* bucket (midnight of the first day) while training counted
from the first hourly one of its window, so the two disagreed; they now share
:func:`first_seen`.

Cost (bench/score.py's 500 assets × 60 days with 30 failure events added, run back to back
with the previous implementation, load average 2.7-3.9): training 18.8-20.3 s for 45,826
snapshots (before: 21.6-26.8 s), scoring 0.77-0.87 s (before: 0.34-0.40 s, which read 24
hourly and 7 daily rows per asset but computed its features differently from training).

The spec (which metrics, alarm codes, component kinds and asset models become features) is
fixed at training by :func:`build_spec`: the ``MAX_METRICS`` metrics most assets report, the
``MAX_CODES`` most frequent alarm keys, the ``MAX_COMPONENTS`` most replaced component kinds,
the ``MAX_MODELS`` most common registry models.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from signals import anomaly
from signals.failure_features import (
    CONDITIONS,
    DAILY_DAYS,
    DAY,
    HOUR,
    LOOKBACK,
    MAINTENANCE,
    RECENT_H,
    REFERENCE_STRIDE_H,
    RUNNING_HOURS,
    AssetEvent,
    AssetHistory,
    FeatureSpec,
    day_floor,
    days_needed_from,
    needed_from,
    reference_start,
    snapshot_features,
)

Array = npt.NDArray[np.float64]
MAX_METRICS = 30
MAX_CODES = 20
MAX_COMPONENTS = 10
MAX_MODELS = 20
BATCH_ASSETS = 50

# One row per rollup bucket: its hour (or day) since the epoch, then the means and the lasts of
# the wanted metrics as arrays ({means} and {lasts}: one ``(r.stats -> 'metric' ->> i)``
# per metric, see ``_figures``). Taking a few figures out of each row's JSON is the cost of
# these reads; a row per (bucket, metric) from ``jsonb_each`` and grouping them costs three
# times more.
_HOURLY = """
SELECT r.asset_id, (extract(epoch FROM r.bucket) / 3600)::bigint, {means}, {lasts}
FROM rollup_hourly r
WHERE r.asset_id = ANY(%(assets)s) AND r.bucket >= %(since)s AND r.bucket < %(until)s
"""
_DAILY = """
SELECT r.asset_id, (extract(epoch FROM r.bucket) / 86400)::bigint, {means}, {lasts}
FROM rollup_daily r
WHERE r.asset_id = ANY(%(assets)s) AND r.bucket >= %(since)s AND r.bucket < %(until)s
"""

# Only the hourly rows a snapshot at ``until`` reads: every REFERENCE_STRIDE_H-th hour of the
# reference period (at most REFERENCE_MAX_H hours from its start) and the last 24 hours.
_RECENT_HOURLY = """
WITH wanted AS (
    SELECT * FROM unnest(%(assets)s::text[], %(reference)s::timestamptz[]) AS w(asset_id, ref)
)
SELECT w.asset_id, (extract(epoch FROM r.bucket) / 3600)::bigint, {means}, {lasts}
FROM wanted w
CROSS JOIN LATERAL (
    SELECT bucket, stats FROM rollup_hourly
    WHERE asset_id = w.asset_id AND bucket >= w.ref
      AND bucket < least(w.ref + make_interval(hours => %(reference_h)s), %(recent)s)
      AND (extract(epoch FROM bucket) / 3600)::bigint %% %(stride)s = 0
    UNION ALL
    SELECT bucket, stats FROM rollup_hourly
    WHERE asset_id = w.asset_id AND bucket >= greatest(%(recent)s, w.ref) AND bucket < %(until)s
) r
"""


def _figures(query: str, metrics: tuple[str, ...]) -> sql.Composed:
    """``query`` with the arrays of means and lasts of ``metrics`` filled in."""

    def array(position: int) -> sql.Composable:
        return sql.SQL("ARRAY[{}]::double precision[]").format(
            sql.SQL(", ").join(
                sql.SQL("(r.stats -> {} ->> {})::double precision").format(
                    sql.Literal(m), sql.Literal(position)
                )
                for m in metrics
            )
        )

    return sql.SQL(query).format(means=array(0), lasts=array(3))


# The hour of each asset's first reading before ``until``: the first hourly bucket of its
# first day (the daily rollup finds the day cheaply).
_FIRST_SEEN = """
SELECT a.asset_id, (
    SELECT min(h.bucket) FROM rollup_hourly h
    WHERE h.asset_id = a.asset_id AND h.bucket >= d.day
      AND h.bucket < least(d.day + INTERVAL '1 day', %(until)s)
)
FROM unnest(%(assets)s::text[]) AS a(asset_id)
CROSS JOIN LATERAL (
    SELECT min(bucket) AS day FROM rollup_daily
    WHERE asset_id = a.asset_id AND bucket < %(until)s
) d
"""

_EVENTS = """
SELECT asset_id, time, kind, code, component FROM asset_events
WHERE asset_id = ANY(%(assets)s) AND time < %(until)s
ORDER BY asset_id, time
"""

# What a snapshot at ``until`` reads of the events: alarms of the last 7 days and the latest
# maintenance event of each kind and component.
_RECENT_EVENTS = """
SELECT asset_id, time, kind, code, component FROM asset_events
WHERE asset_id = ANY(%(assets)s) AND time < %(until)s AND time >= %(until)s - %(alarms)s
  AND kind <> ALL(%(maintenance)s)
UNION ALL
(SELECT DISTINCT ON (asset_id, kind, component) asset_id, time, kind, code, component
 FROM asset_events
 WHERE asset_id = ANY(%(assets)s) AND time < %(until)s AND kind = ANY(%(maintenance)s)
 ORDER BY asset_id, kind, component, time DESC)
"""


def first_seen(
    conn: psycopg.Connection[TupleRow], assets: list[str], until: dt.datetime
) -> dict[str, dt.datetime]:
    """The hour of each asset's first reading before ``until`` (assets without one left out)."""
    return {
        str(a): first
        for a, first in conn.execute(_FIRST_SEEN, {"assets": assets, "until": until})
        if first is not None
    }


def asset_models(conn: psycopg.Connection[TupleRow], assets: list[str]) -> dict[str, str]:
    return {
        str(a): str(m)
        for a, m in conn.execute(
            "SELECT asset_id, model FROM assets WHERE asset_id = ANY(%s) AND model IS NOT NULL",
            (assets,),
        )
    }


def _events(rows: Any) -> dict[str, list[AssetEvent]]:
    found: dict[str, list[AssetEvent]] = defaultdict(list)
    for asset_id, time, kind, code, component in rows:
        found[str(asset_id)].append(AssetEvent(time, str(kind), str(code), str(component)))
    return found


def _arrays(rows: Any) -> dict[str, tuple[Any, Array, Array]]:
    """Rows of ``_HOURLY``-shaped queries by asset: (index, means, lasts) arrays."""
    found: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        found[str(row[0])].append(row[1:])
    arrays = {}
    for asset_id, mine in found.items():
        index = np.array([r[0] for r in mine], dtype=np.int64)
        means = np.array([r[1] for r in mine], dtype=float)
        lasts = np.array([r[2] for r in mine], dtype=float)
        arrays[asset_id] = (index, means, lasts)
    return arrays


def _dense(
    rows: tuple[Any, Array, Array] | None,
    width: int,
    start: dt.datetime,
    end: dt.datetime,
    unit: dt.timedelta,
) -> tuple[Array, Array, npt.NDArray[np.bool_]]:
    """(means, lasts, rows present) from ``start`` to ``end``, NaN where there is no row."""
    length = max(0, round((end - start) / unit))
    mean = np.full((length, width), np.nan)
    last = np.full((length, width), np.nan)
    present = np.zeros(length, dtype=bool)
    if rows is not None:
        index, means, lasts = rows
        index = index - round(start.timestamp() / unit.total_seconds())
        keep = (index >= 0) & (index < length)
        present[index[keep]] = True
        mean[index[keep]] = means[keep]
        last[index[keep]] = lasts[keep]
    return mean, last, present


@dataclass(frozen=True)
class _Span:
    start: dt.datetime  # first hourly row
    day_start: dt.datetime  # first daily row
    until: dt.datetime  # hourly rows end here
    day_until: dt.datetime  # daily rows end here


def _histories(
    hourly: Any,
    daily: Any,
    spans: dict[str, _Span],
    firsts: dict[str, dt.datetime],
    metrics: tuple[str, ...],
    models: dict[str, str],
    events: dict[str, list[AssetEvent]],
) -> dict[str, AssetHistory]:
    hours = _arrays(hourly)
    days = _arrays(daily)
    histories = {}
    for asset_id in sorted(spans):
        span = spans[asset_id]
        mean, last, present = _dense(
            hours.get(asset_id), len(metrics), span.start, span.until, HOUR
        )
        day_mean, day_last, _ = _dense(
            days.get(asset_id), len(metrics), span.day_start, span.day_until, DAY
        )
        histories[asset_id] = AssetHistory(
            asset_id,
            firsts[asset_id],
            span.start,
            metrics,
            mean,
            last,
            present,
            span.day_start,
            day_mean,
            day_last,
            models.get(asset_id),
            tuple(events.get(asset_id, ())),
        )
    return histories


def feature_metrics(spec: FeatureSpec) -> tuple[str, ...]:
    """The metrics a history is loaded with: the spec's, the operating conditions and the
    running-hours counter."""
    return tuple(sorted({*spec.metrics, *CONDITIONS, RUNNING_HOURS}))


def load_histories(
    conn: psycopg.Connection[TupleRow],
    assets: list[str],
    since: dt.datetime,
    until: dt.datetime,
    spec: FeatureSpec,
) -> dict[str, AssetHistory]:
    """Every rollup row of ``assets`` in ``[since, until)`` (from their first reading when that
    is later), with all their events before ``until``: enough for a snapshot at any whole hour
    in ``[since + LOOKBACK, until]``."""
    firsts = first_seen(conn, assets, until)
    present = sorted(firsts)
    if not present:
        return {}
    metrics = feature_metrics(spec)
    day_until = day_floor(until) + DAY
    spans = {
        a: _Span(max(firsts[a], since), day_floor(max(firsts[a], since)), until, day_until)
        for a in present
    }
    params = {"assets": present, "since": day_floor(since), "until": until}
    hourly = conn.execute(_figures(_HOURLY, metrics), params, binary=True).fetchall()
    daily = conn.execute(_figures(_DAILY, metrics), params, binary=True).fetchall()
    events = _events(conn.execute(_EVENTS, {"assets": present, "until": until}))
    return _histories(hourly, daily, spans, firsts, metrics, asset_models(conn, present), events)


def scoring_histories(
    conn: psycopg.Connection[TupleRow], assets: list[str], t: dt.datetime, spec: FeatureSpec
) -> dict[str, AssetHistory]:
    """What a snapshot of each asset at ``t`` (a whole hour) reads, and nothing more."""
    firsts = first_seen(conn, assets, t)
    present = sorted(firsts)
    if not present:
        return {}
    metrics = feature_metrics(spec)
    day = day_floor(t)
    spans = {
        a: _Span(needed_from(firsts[a], t), days_needed_from(firsts[a], t), t, day) for a in present
    }
    hourly = conn.execute(
        _figures(_RECENT_HOURLY, metrics),
        {
            "assets": present,
            "reference": [reference_start(firsts[a], t) for a in present],
            "reference_h": anomaly.REFERENCE_MAX_H,
            "stride": REFERENCE_STRIDE_H,
            "recent": t - RECENT_H * HOUR,
            "until": t,
        },
        binary=True,
    ).fetchall()
    daily = conn.execute(
        _figures(_DAILY, metrics),
        {"assets": present, "since": day - DAILY_DAYS * DAY, "until": day},
        binary=True,
    ).fetchall()
    events = _events(
        conn.execute(
            _RECENT_EVENTS,
            {
                "assets": present,
                "until": t,
                "alarms": dt.timedelta(days=7),
                "maintenance": list(MAINTENANCE),
            },
        )
    )
    return _histories(hourly, daily, spans, firsts, metrics, asset_models(conn, present), events)


# ---------------------------------------------------------------- the spec


def build_spec(
    conn: psycopg.Connection[TupleRow], assets: list[str], since: dt.datetime, until: dt.datetime
) -> FeatureSpec:
    """Which names become features (see the module docstring); ties by name."""
    metrics = [
        str(m)
        for (m,) in conn.execute(
            "SELECT k FROM rollup_daily r CROSS JOIN LATERAL jsonb_object_keys(r.stats) AS k"
            " WHERE r.asset_id = ANY(%s) AND r.bucket >= %s AND r.bucket < %s"
            " GROUP BY k ORDER BY count(DISTINCT r.asset_id) DESC, k LIMIT %s",
            (assets, since, until, MAX_METRICS),
        )
    ]
    codes = [
        str(c)
        for (c,) in conn.execute(
            "SELECT CASE WHEN code <> '' THEN code ELSE kind END AS key FROM asset_events"
            " WHERE asset_id = ANY(%s) AND time < %s AND kind <> ALL(%s)"
            " GROUP BY key ORDER BY count(*) DESC, key LIMIT %s",
            (assets, until, list(MAINTENANCE), MAX_CODES),
        )
    ]
    components = [
        str(c)
        for (c,) in conn.execute(
            "SELECT component FROM asset_events WHERE asset_id = ANY(%s) AND time < %s"
            " AND kind IN ('component_replaced', 'failure') AND component <> ''"
            " GROUP BY component ORDER BY count(*) DESC, component LIMIT %s",
            (assets, until, MAX_COMPONENTS),
        )
    ]
    models = [
        str(m)
        for (m,) in conn.execute(
            "SELECT model FROM assets WHERE asset_id = ANY(%s) AND model IS NOT NULL"
            " GROUP BY model ORDER BY count(*) DESC, model LIMIT %s",
            (assets, MAX_MODELS),
        )
    ]
    return FeatureSpec(tuple(sorted(metrics)), tuple(codes), tuple(components), tuple(models))


# ---------------------------------------------------------------- training snapshots


@dataclass(frozen=True)
class Outcome:
    """What followed a snapshot, in running hours (see :func:`running_hours`)."""

    clock_hours_left: float  # clock hours from the snapshot to the cut-off
    to_failure: float  # running hours to the next failure, its hour included; NaN: none
    observed: float  # running hours from the snapshot to the cut-off
    failure_at: dt.datetime | None  # that failure's time


@dataclass
class Snapshots:
    """The fleet's snapshots with known outcome, one row each."""

    spec: FeatureSpec
    x: Array
    assets: list[str]
    times: list[dt.datetime]
    outcomes: list[Outcome]


def running_hours(history: AssetHistory) -> Array:
    """Cumulative running hours at the end of each hour of the history: the
    ``running_hours`` counter when the asset has one, else the hours with data."""
    if RUNNING_HOURS in history.metrics:
        j = history.metrics.index(RUNNING_HOURS)
        counter = history.last[:, j]
        valid = ~np.isnan(counter)
        if valid.sum() >= 2:
            first = int(np.argmax(valid))
            idx = np.where(valid, np.arange(len(counter)), first)
            np.maximum.accumulate(idx, out=idx)
            return np.asarray(counter[idx] - counter[first], dtype=float)
    return np.cumsum(history.present.astype(float))


def snapshot_times(since: dt.datetime, until: dt.datetime, step_h: int) -> list[dt.datetime]:
    """Whole hours in ``(since, until]`` on the epoch grid of ``step_h`` hours."""
    first = int(since.timestamp() // 3600) + 1
    first += (-first) % step_h
    last = int(until.timestamp() // 3600)
    return [dt.datetime.fromtimestamp(h * 3600, dt.UTC) for h in range(first, last + 1, step_h)]


def outcomes(history: AssetHistory, times: list[dt.datetime], until: dt.datetime) -> list[Outcome]:
    """What followed each snapshot time of one asset before ``until``."""
    rh = running_hours(history)
    failures = sorted(e.time for e in history.events if e.kind == "failure" and e.time < until)
    end = min(history.hour(until), len(rh))
    rh_until = float(rh[end - 1]) if end > 0 else 0.0
    found = []
    for t in times:
        h = history.hour(t)
        rh_t = float(rh[h - 1]) if h > 0 else 0.0
        following = [f for f in failures if f >= t]
        to_failure = np.nan
        if following:
            fh = min(history.hour(anomaly.hour_floor(following[0])), len(rh) - 1)
            to_failure = float(rh[fh]) - rh_t
        found.append(
            Outcome(
                (until - t) / HOUR,
                to_failure,
                rh_until - rh_t,
                following[0] if following else None,
            )
        )
    return found


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def training_snapshots(
    conn: psycopg.Connection[TupleRow],
    assets: list[str],
    since: dt.datetime,
    until: dt.datetime,
    step_h: int,
    keep: Callable[[Outcome], bool],
    spec: FeatureSpec | None = None,
) -> Snapshots:
    """Features of ``assets`` every ``step_h`` hours in ``(since, until]`` where ``keep``
    accepts the outcome (the label is known) and the asset is scored (a baseline, data in the
    last 24 hours)."""
    spec = spec or build_spec(conn, assets, since, until)
    times = snapshot_times(since, until, step_h)
    xs: list[Array] = []
    names: list[str] = []
    when: list[dt.datetime] = []
    results: list[Outcome] = []
    for batch in _chunks(sorted(assets), BATCH_ASSETS):
        histories = load_histories(conn, batch, since - LOOKBACK, until, spec)
        for asset_id in sorted(histories):
            history = histories[asset_id]
            mine = [t for t in times if t > history.first_seen]
            for t, outcome in zip(mine, outcomes(history, mine, until), strict=True):
                if not keep(outcome):
                    continue
                row = snapshot_features(history, t, spec)
                if row is None:
                    continue
                xs.append(row)
                names.append(asset_id)
                when.append(t)
                results.append(outcome)
    x = np.vstack(xs) if xs else np.zeros((0, len(spec.names)))
    return Snapshots(spec, x, names, when, results)


# ---------------------------------------------------------------- choosing and scoring assets


def _pick(asset_id: str) -> str:
    return hashlib.sha256(asset_id.encode()).hexdigest()


def choose_assets(
    conn: psycopg.Connection[TupleRow],
    since: dt.datetime,
    until: dt.datetime,
    max_failed: int,
    max_other: int,
) -> tuple[list[str], list[str]]:
    """(assets with a failure in ``[since, until)``, others), each chosen by a hash of the id
    when there are more than the maximum (the same assets at every training)."""
    failed = sorted(
        (
            str(a)
            for (a,) in conn.execute(
                "SELECT DISTINCT asset_id FROM asset_events WHERE kind = 'failure'"
                " AND time >= %s AND time < %s",
                (since, until),
            )
        ),
        key=_pick,
    )[:max_failed]
    others = [
        str(a)
        for (a,) in conn.execute(
            "SELECT asset_id FROM assets WHERE asset_id <> ALL(%s)", (failed,)
        ).fetchall()
    ]
    return failed, sorted(others, key=_pick)[:max_other]


@dataclass(frozen=True)
class Scored:
    """One asset's features now."""

    asset_id: str
    account_id: str
    x: Array
    running_hours_per_day: float


def scoring_snapshots(
    conn: psycopg.Connection[TupleRow], t: dt.datetime, spec: FeatureSpec
) -> list[Scored]:
    """The features at ``t`` (a whole hour) of every asset that reported in the last 24 hours
    and is scored (a baseline; not down since its last failure)."""
    owners = {
        str(a): str(acc)
        for a, acc in conn.execute(
            "SELECT a.asset_id, a.account_id FROM assets a WHERE EXISTS (SELECT 1 FROM"
            " rollup_hourly r WHERE r.asset_id = a.asset_id AND r.bucket >= %s AND r.bucket < %s)",
            (t - dt.timedelta(hours=24), t),
        )
    }
    if not owners:
        return []
    histories = scoring_histories(conn, sorted(owners), t, spec)
    usage = spec.names.index("running_hours_per_day")
    found = []
    for asset_id in sorted(histories):
        history = histories[asset_id]
        if _down_since_failure(history, t):
            continue
        row = snapshot_features(history, t, spec)
        if row is not None:
            found.append(Scored(asset_id, owners[asset_id], row, float(row[usage])))
    return found


def _down_since_failure(history: AssetHistory, t: dt.datetime) -> bool:
    failures = [e.time for e in history.events if e.kind == "failure" and e.time < t]
    if not failures:
        return False
    after = history.hour(anomaly.hour_floor(max(failures))) + 1
    return not bool(history.present[max(after, 0) :].any())
