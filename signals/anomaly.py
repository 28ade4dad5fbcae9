"""asset_anomaly: an asset behaving unlike its own normal operation, for any metric names.

Unsupervised and per asset, so it needs no failure history and no knowledge of the machine:

- **Baseline** (``train``, nightly): each asset's reference period is a stretch of its own
  hourly rollups, starting at the later of its first data and 28 days before the cut-off, and
  ``clip(history / 2, 48 h, 168 h)`` long (a young asset's first half, at most a week). Per
  metric: mean, hourly standard deviation and lag-1 autocorrelation of the hourly means.
  Counters (a ``last`` value that never decreases over the reference) are skipped: their
  level says nothing and their rate is usage, which the usage signals judge; so are metrics
  constant over the reference (a counter that did not move, a fixed setting): no spread to
  judge a change against. An asset needs at
  least 24 hours after its reference period before it is scored.
  Metrics that a rule already watches against a known limit (the component wear indicators of
  ``signals.catalogue.INDICATORS``, judged by ``service_due`` and ``third_party_parts``) are
  left to that rule: the detector is for failure modes no rule knows, and a filter clogging
  towards its service limit, or reset by a replacement, is normal wear, not an anomaly.
- **Score** (``findings``): the last 24 complete hours split into 3 windows of 8 hours. A metric
  is out of its normal range when, in every window, its mean differs from the baseline mean by at
  least ``Z_ALERT`` standard errors of an 8-hour mean (the hourly standard deviation widened for
  autocorrelation, ``sqrt((1 + r) / (1 - r))``, at most the hourly deviation itself) in the same
  direction, and by at least ``MIN_SHIFT_SD`` hourly standard deviations (so that a statistically
  clear but negligible change does not count). Persistence over the three windows keeps single
  spikes quiet. The asset's strength is the largest persistent z of its metrics;
  ``score = 1 - 0.5 (Z_ALERT / strength)^2`` (0.5 at the threshold, towards 1 beyond).
- Money: ``PriceBook.component_service`` (an anomaly usually ends in a service visit);
  horizon ``HORIZON_DAYS``. Promise (``signals.kinds``), stated last in the finding's reasons:
  the asset fails or raises an alarm (an ``alarm`` event, e.g. an imported error code) within
  the horizon. In the backtest either confirms an alert; recall counts failures only (an alarm
  missed is no miss).

**Measured on a held-out simulated fleet, and what did not help** (issue 13; seed 11, 80 assets,
the last six months replayed day by day, ``basewatch signals backtest --kind asset_anomaly``):
15 alerts, 3 confirmed (20 %, chance 1.2 %), 3 of 24 failures foreseen, median lead 50 h. Most
false alerts are changes of use, not faults: pressure sagging or power and flow falling when the
customer's demand changed, against a normal that is a plain mean. Tried and left out:

- *A maintenance starts a new normal* (the reference period starting after the last
  ``component_replaced``, ``service`` or ``failure``; offline, 68 % of the snapshots with a
  metric 6 sd off the failure features' normal had a maintenance in the 28 days before): 24
  alerts, 1 confirmed (4 %), 1 of 24 foreseen. The references after a service are 2-3 days long
  and miss the weekly rhythm of demand, so more changes of use fire, and the assets serviced in
  the 3 days before a failure were not scored.
- *The failure features' normal conditioned on load and ambient* (offline, every metric's
  24-hour residual, daily snapshots, with and without the restart above): of the snapshots
  beyond 6 sd, 9-16 % were followed by a failure within 720 hours. A detector promising a
  failure within 7 days cannot be made precise on this fleet from the asset's own history
  alone: precursors drift for 100-1,500 running hours and the fleet's normal variation
  (season, demand stories, ageing parts) moves metrics as far.

Cost: ``train`` runs one SQL query that reads at most 168 hourly rows per asset and returns
only the per-metric figures (2,000 assets with 15 metrics: about 15 s); ``findings`` runs one
SQL query that aggregates the last 24 hourly rows of every asset per metric and window in the
database (about 1.4 s for 2,000 assets), then loops over the (asset, metric) rows.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from signals.catalogue import INDICATORS, PriceBook
from signals.findings import Finding
from signals.kinds import SignalKind

NAME = "asset_anomaly"
HOUR = dt.timedelta(hours=1)
REFERENCE_MAX_AGE = dt.timedelta(days=28)
REFERENCE_MIN_H = 48
REFERENCE_MAX_H = 168
# metrics a rule judges against a known limit: not this detector's business
WATCHED_BY_RULES = frozenset(indicator.metric for indicator in INDICATORS.values())
MIN_METRIC_HOURS = 24  # hours of a metric in the reference period to learn its normal
WINDOW_H = 8
WINDOWS = 3
Z_ALERT = 5.0
MIN_SHIFT_SD = 0.75
MAX_AUTOCORRELATION = 0.9
HORIZON_DAYS = 7

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Baseline:
    """One asset's normal: per metric mean, hourly standard deviation, autocorrelation."""

    reference_start: dt.datetime
    reference_end: dt.datetime
    metrics: dict[str, tuple[float, float, float]]  # metric -> (mean, sd, lag-1 autocorr)
    counters: tuple[str, ...] = ()

    def window_se(self, metric: str, hours: float) -> float:
        """The standard error of a mean of ``hours`` hourly means of ``metric``."""
        _, sd, r = self.metrics[metric]
        widen = math.sqrt((1 + r) / (1 - r))
        return sd * min(1.0, widen / math.sqrt(max(hours, 1.0)))


@dataclass
class Baselines:
    """What ``train`` returns: every asset's baseline as of ``until``."""

    until: dt.datetime
    assets: dict[str, Baseline]
    summary: dict[str, Any] = field(default_factory=dict)


def hour_floor(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


_BASELINES = """
WITH firsts AS (
    SELECT asset_id, greatest(min(bucket), %(until)s - %(max_age)s) AS since
    FROM rollup_daily WHERE bucket < %(until)s GROUP BY asset_id
), reference AS (
    SELECT f.asset_id, h.bucket, h.stats, min(h.bucket) OVER (PARTITION BY f.asset_id) AS first
    FROM firsts f
    JOIN LATERAL (
        SELECT bucket, stats FROM rollup_hourly
        WHERE asset_id = f.asset_id AND bucket >= f.since AND bucket < %(until)s
        ORDER BY bucket LIMIT %(max_h)s
    ) h ON true
), kept AS (
    SELECT asset_id, bucket, stats, first, first + make_interval(hours => least(%(max_h)s,
           greatest(%(min_h)s, floor(extract(epoch FROM %(until)s - first) / 7200)::integer)))
           AS reference_end
    FROM reference
), readings AS (
    SELECT k.asset_id, k.first, k.reference_end, s.key AS metric, k.bucket,
           (s.value->>0)::double precision AS mean, (s.value->>3)::double precision AS last
    FROM kept k CROSS JOIN LATERAL jsonb_each(k.stats) AS s(key, value)
    WHERE k.bucket < k.reference_end AND %(until)s - k.reference_end >= %(scored)s
), paired AS (
    SELECT *, lag(mean) OVER w AS previous_mean, lag(bucket) OVER w AS previous_bucket,
           lag(last) OVER w AS previous_last
    FROM readings WINDOW w AS (PARTITION BY asset_id, metric ORDER BY bucket)
)
SELECT asset_id, first, reference_end, metric, count(mean), avg(mean), stddev_samp(mean),
       corr(mean, previous_mean) FILTER (WHERE bucket - previous_bucket = INTERVAL '1 hour'),
       count(*) FILTER (WHERE bucket - previous_bucket = INTERVAL '1 hour'
                        AND mean IS NOT NULL AND previous_mean IS NOT NULL),
       coalesce(bool_and(last >= previous_last), true)
FROM paired
GROUP BY asset_id, first, reference_end, metric
ORDER BY asset_id, metric
"""


def reference_hours(first: dt.datetime, until: dt.datetime) -> int:
    """The length of the reference period of an asset whose data (within the last 28 days)
    starts at ``first``."""
    history_h = (until - first) / HOUR
    return int(min(REFERENCE_MAX_H, max(REFERENCE_MIN_H, history_h // 2)))


def baselines(conn: psycopg.Connection[TupleRow], until: dt.datetime) -> dict[str, Baseline]:
    """Every asset's baseline from hourly rollups complete before ``until``, computed in the
    database (one query; only the per-metric figures come back)."""
    end = hour_floor(until)
    found: dict[str, tuple[dt.datetime, dt.datetime, dict[str, tuple[float, float, float]]]] = {}
    counters: dict[str, list[str]] = defaultdict(list)
    params = {
        "until": end,
        "max_age": REFERENCE_MAX_AGE,
        "min_h": REFERENCE_MIN_H,
        "max_h": REFERENCE_MAX_H,
        "scored": WINDOWS * WINDOW_H * HOUR,
    }
    for asset_id, first, ref_end, metric, n, mean, sd, r, pairs, counter in conn.execute(
        _BASELINES, params
    ):
        entry = found.setdefault(asset_id, (first, ref_end, {}))
        if n < MIN_METRIC_HOURS:
            continue
        if counter:
            counters[asset_id].append(metric)
            continue
        spread = max(float(sd or 0.0), 1e-3 * abs(float(mean)), 1e-9)
        constant = float(sd or 0.0) <= 1e-9 * max(1.0, abs(float(mean)))
        rho = float(r) if r is not None and pairs >= 3 and not constant else 0.0
        rho = rho if math.isfinite(rho) else 0.0
        entry[2][metric] = (float(mean), spread, min(MAX_AUTOCORRELATION, max(0.0, rho)))
    return {
        a: Baseline(first, ref_end, metrics, tuple(sorted(counters.get(a, []))))
        for a, (first, ref_end, metrics) in found.items()
        if metrics
    }


def train(conn: psycopg.Connection[TupleRow], until: dt.datetime) -> Baselines | None:
    """Per-asset baselines as of ``until`` (``None`` when no asset has enough history)."""
    found = baselines(conn, until)
    if not found:
        return None
    return Baselines(
        until,
        found,
        {
            "assets": len(found),
            "metrics": sum(len(b.metrics) for b in found.values()),
            "counters_skipped": sum(len(b.counters) for b in found.values()),
        },
    )


_WINDOWS = """
SELECT r.asset_id, s.key, {columns}
FROM rollup_hourly r CROSS JOIN LATERAL jsonb_each(r.stats) AS s(key, value)
WHERE r.bucket >= %(end)s - make_interval(hours => {span}) AND r.bucket < %(end)s
  AND r.asset_id = ANY(%(assets)s)
GROUP BY r.asset_id, s.key
"""
_WINDOW_COLUMNS = """
avg((s.value->>0)::double precision) FILTER (WHERE {cond}), count(s.value->>0) FILTER (WHERE {cond})
"""


def _windows_sql(windows: int, width_h: int) -> sql.Composed:
    """Per (asset, metric): the mean and count of hourly means in each window, newest first."""
    columns = []
    for k in range(windows):
        cond = sql.SQL(
            "r.bucket >= %(end)s - make_interval(hours => {start})"
            " AND r.bucket < %(end)s - make_interval(hours => {stop})"
        ).format(start=sql.Literal((k + 1) * width_h), stop=sql.Literal(k * width_h))
        columns.append(sql.SQL(_WINDOW_COLUMNS.strip()).format(cond=cond))
    return sql.SQL(_WINDOWS).format(
        columns=sql.SQL(", ").join(columns), span=sql.Literal(windows * width_h)
    )


@dataclass(frozen=True)
class Outlier:
    metric: str
    recent: float
    mean: float
    sd: float
    z: float  # the smallest |z| over the windows, signed


def outliers(
    baseline: Baseline, windows: dict[str, list[tuple[float | None, int]]]
) -> list[Outlier]:
    """The metrics of one asset out of their normal range in every window (strongest first)."""
    found = []
    for metric, values in windows.items():
        if metric not in baseline.metrics or metric in WATCHED_BY_RULES:
            continue
        mean, sd, _ = baseline.metrics[metric]
        zs = []
        for value, n in values:
            if value is None or n < WINDOW_H / 2:
                break
            if abs(value - mean) < MIN_SHIFT_SD * sd:
                break
            zs.append((value - mean) / baseline.window_se(metric, n))
        if len(zs) < WINDOWS:
            continue
        z = np.array(zs)
        if not (bool(np.all(z >= Z_ALERT)) or bool(np.all(z <= -Z_ALERT))):
            continue
        weights = [n for _, n in values]
        recent = float(np.average([v for v, _ in values], weights=weights))
        found.append(Outlier(metric, recent, mean, sd, float(z[np.argmin(np.abs(z))])))
    return sorted(found, key=lambda o: -abs(o.z))


def findings(
    conn: psycopg.Connection[TupleRow],
    as_of: dt.datetime,
    prices: PriceBook,
    model: object | None,
) -> list[Finding]:
    """asset_anomaly findings as of ``as_of`` (hourly buckets complete by then)."""
    if not isinstance(model, Baselines) or not model.assets:
        return []
    end = hour_floor(as_of)
    windows: dict[str, dict[str, list[tuple[float | None, int]]]] = defaultdict(dict)
    query = _windows_sql(WINDOWS, WINDOW_H)
    for row in conn.execute(query, {"end": end, "assets": sorted(model.assets)}):
        values = [(row[2 + 2 * k], int(row[3 + 2 * k])) for k in range(WINDOWS)]
        windows[row[0]][row[1]] = values
    if not windows:
        return []
    owners: dict[str, str] = dict(
        conn.execute(
            "SELECT asset_id, account_id FROM assets WHERE asset_id = ANY(%s)",
            (sorted(windows),),
        ).fetchall()
    )
    found = []
    for asset_id, metrics in windows.items():
        account_id = owners.get(asset_id)
        baseline = model.assets.get(asset_id)
        if account_id is None or baseline is None:
            continue
        out = outliers(baseline, metrics)
        if out:
            found.append(_finding(account_id, asset_id, out, len(baseline.metrics), prices))
    return found


def _finding(
    account_id: str, asset_id: str, out: list[Outlier], watched: int, prices: PriceBook
) -> Finding:
    strength = abs(out[0].z)
    score = min(1.0, max(0.0, 1.0 - 0.5 * (Z_ALERT / strength) ** 2))
    hours = WINDOWS * WINDOW_H
    # the figures' rounding first, so that the text is as stable as the figures: an average
    # summed in another order (a continuous aggregate refreshed again) differs in the last
    # bits, which would turn 3.8365 into 3.836 or 3.837
    reasons = [
        f"{o.metric} {round(o.recent, 6):.4g} vs its normal {round(o.mean, 6):.4g} ± "
        f"{round(o.sd, 6):.2g} over the last "
        f"{hours} h ({o.z:+.1f} standard errors in each {WINDOW_H} h window)"
        for o in out[:3]
    ]
    reasons.append(
        f"{len(out)} of {watched} metrics of {asset_id} outside their normal range for {hours} h"
    )
    reasons.append(
        f"promise: {asset_id} fails or raises an alarm within {HORIZON_DAYS} days "
        "(behaviour unlike its own normal)"
    )
    figures = {"metrics_out": float(len(out)), "metrics_watched": float(watched)}
    for o in out[:3]:
        figures[f"{o.metric}_recent"] = round(o.recent, 6)
        figures[f"{o.metric}_normal"] = round(o.mean, 6)
        figures[f"{o.metric}_z"] = round(o.z, 2)
    return Finding(
        account_id,
        SignalKind.ASSET_ANOMALY,
        asset_id,
        round(score, 4),
        prices.component_service,
        HORIZON_DAYS,
        tuple(reasons),
        figures,
    )
