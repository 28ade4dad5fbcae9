"""component_due from a scikit-learn classifier trained on the fleet's own failure history.

**Question.** Does this asset fail within the next ``HORIZON_RH`` = 72 running hours? One
horizon for every data set. Assets with a ``running_hours`` counter count running hours with
it; assets without one are taken as running whenever they report (one hour of data = one
running hour, as for C-MAPSS cycles or the hourly Azure machines).

**Features** (from hourly and daily rollups only; any metric names). Each metric is compared
with the asset's own baseline (``signals.anomaly``'s reference period: mean and hourly standard
deviation ``sd``): level of the last 24 hours ``(mean24 - mean) / sd``, variability
``log(sd24 / sd)``, level of the last 7 complete days, slopes of the daily means over the last
3 and 7 complete days (per day, in ``sd``). The model keeps those per metric for the
``MAX_METRICS`` most common metrics, plus summaries that do not depend on names (largest and
mean absolute level, largest slope, metrics beyond 3 sd, largest variability), usage (running
hours per day: the rate of the ``running_hours`` counter over the last complete days, else the
hours with data in the last 24 h) and running hours since the last maintenance (a
``component_replaced``, ``service`` or ``failure`` event, or a replacement seen in the data as a
reset of a catalogued indicator, ``signals.components.replacements``; else since the first data).
Counters (metrics whose ``last`` never decreases) are left out of the levels.

**Training** (``train(conn, until)``): snapshots every ``SNAPSHOT_H`` hours of every asset that
failed before ``until`` (at most ``MAX_FAILED_ASSETS``) and of up to ``MAX_OTHER_ASSETS`` others
(chosen by a hash of their id), over the last ``TRAIN_DAYS`` days before ``until``. A snapshot
at ``t`` sees only rollups before ``t``; its label is 1 when a ``failure`` event of the asset
follows within ``HORIZON_RH`` running hours, 0 when the asset ran ``HORIZON_RH`` hours after ``t``
before ``until`` without one; snapshots whose window is not fully observed before ``until`` are
left out (no leakage). ``HistGradientBoostingClassifier`` (missing values native,
``random_state=0``). Fewer than ``MIN_FAILURES`` failures with a labelled snapshot: ``None``,
and ``findings`` emits nothing (the rule-based ``component_due`` of ``signals.wear_findings``
still runs).

**Findings.** An asset whose probability reaches ``P_ALERT`` gets a ``component_due`` finding
with subject = the asset (the model predicts a failure of the asset, not of a named component).
Ownership: ``signals.wear_findings`` owns ``asset/component`` subjects (rated life and
indicator trend per catalogued component), this module owns the asset subject, so no subject
is reported twice. Hours left: with a constant hazard over the horizon,
``λ = -ln(1 - p) / H``; the median is ``ln 2 / λ`` and the interquartile range ``ln(4/3) / λ``
to ``ln 4 / λ``; days = hours / running hours per day. When the asset has catalogued
components, the reason also names the nearest one by rated life (a) since its last replacement
and says which estimate is the smaller. Score = the probability; value =
``PriceBook.component_service``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.rows import TupleRow

from signals import anomaly
from signals.catalogue import INDICATORS, PriceBook
from signals.components import replacements
from signals.findings import Finding

NAME = "component_failure"
HORIZON_RH = 72.0
SNAPSHOT_H = 6
TRAIN_DAYS = 120
MIN_FAILURES = 5
MAX_FAILED_ASSETS = 400
MAX_OTHER_ASSETS = 200
MAX_METRICS = 30
P_ALERT = 0.5
RUNNING_HOURS = "running_hours"
MAINTENANCE = ("component_replaced", "service", "failure")
HOUR = dt.timedelta(hours=1)
DAY_H = 24
SEED = 0

Array = npt.NDArray[np.float64]
_POOLED = (
    "max_abs_level",
    "mean_abs_level",
    "max_abs_slope7",
    "metrics_beyond_3sd",
    "max_variability",
    "running_hours_per_day",
    "hours_since_maintenance",
)
_PER_METRIC = ("level24", "variability24", "level7d", "slope3d", "slope7d")


@dataclass
class FailureModel:
    """What ``train`` returns."""

    until: dt.datetime
    metrics: tuple[str, ...]
    classifier: Any
    baselines: dict[str, anomaly.Baseline]
    resets: dict[str, dt.datetime]  # last replacement seen in the data, per asset
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return list(_POOLED) + [f"{m}:{f}" for m in self.metrics for f in _PER_METRIC]


@dataclass(frozen=True)
class Window:
    """What the features of one asset at one moment are computed from, per metric (arrays
    aligned with ``metrics``)."""

    metrics: tuple[str, ...]
    mean24: Array
    sd24: Array
    daily: Array  # (7 days, metrics): complete days before the moment, oldest first
    base_mean: Array
    base_sd: Array
    running_hours_per_day: float
    hours_since_maintenance: float


def _slope(daily: Array, days: int) -> Array:
    """Least-squares slope per column over the last ``days`` rows (NaN-aware, per day)."""
    y = daily[-days:]
    x = np.arange(len(y), dtype=float)[:, None] * np.ones((1, y.shape[1]))
    ok = ~np.isnan(y)
    n = ok.sum(axis=0)
    xm = np.where(ok, x, 0.0).sum(axis=0) / np.maximum(n, 1)
    ym = np.where(ok, y, 0.0).sum(axis=0) / np.maximum(n, 1)
    dx = np.where(ok, x - xm, 0.0)
    dy = np.where(ok, y - ym, 0.0)
    sxx = (dx * dx).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (dx * dy).sum(axis=0) / sxx
    return np.where((n >= 3) & (sxx > 0), slope, np.nan)


def features(window: Window, metrics: tuple[str, ...]) -> Array:
    """The feature vector (``FailureModel.feature_names`` order) of one asset at one moment."""
    sd = window.base_sd
    with np.errstate(invalid="ignore", divide="ignore"):
        level24 = (window.mean24 - window.base_mean) / sd
        variability = np.log(np.maximum(window.sd24, 1e-12) / sd)
        daily = window.daily
        counts = (~np.isnan(daily)).sum(axis=0)
        level7 = (
            np.where(np.isnan(daily), 0.0, daily).sum(axis=0) / counts - window.base_mean
        ) / sd
        level7 = np.where(counts > 0, level7, np.nan)
        slope3 = _slope(daily, 3) / sd
        slope7 = _slope(daily, 7) / sd
    abs_level = np.abs(level24)

    def pooled(values: Array, how: str) -> float:
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return math.nan
        return float(finite.max() if how == "max" else finite.mean())

    row = [
        pooled(abs_level, "max"),
        pooled(abs_level, "mean"),
        pooled(np.abs(slope7), "max"),
        float((abs_level[np.isfinite(abs_level)] > 3).sum()),
        pooled(variability, "max"),
        window.running_hours_per_day,
        window.hours_since_maintenance,
    ]
    position = {m: i for i, m in enumerate(window.metrics)}
    per_metric = np.column_stack([level24, variability, level7, slope3, slope7])
    for metric in metrics:
        i = position.get(metric)
        row.extend(per_metric[i].tolist() if i is not None else [math.nan] * len(_PER_METRIC))
    return np.array(row, dtype=float)


# ---------------------------------------------------------------- training


@dataclass
class _History:
    """One asset's hourly rollups as dense arrays over [first hour, last hour]."""

    first: dt.datetime
    metrics: tuple[str, ...]
    mean: Array  # (hours, metrics)
    readings: Array
    last: Array
    present: npt.NDArray[np.bool_]  # hours with data


_SERIES = """
SELECT r.asset_id, s.key,
       array_agg((extract(epoch FROM r.bucket) / 3600)::bigint ORDER BY r.bucket),
       array_agg((s.value->>0)::double precision ORDER BY r.bucket),
       array_agg((s.value->>4)::double precision ORDER BY r.bucket),
       array_agg((s.value->>3)::double precision ORDER BY r.bucket)
FROM rollup_hourly r CROSS JOIN LATERAL jsonb_each(r.stats) AS s(key, value)
WHERE r.asset_id = ANY(%(assets)s) AND r.bucket >= %(since)s AND r.bucket < %(until)s
GROUP BY r.asset_id, s.key
"""


def load_histories(
    conn: psycopg.Connection[TupleRow], assets: list[str], since: dt.datetime, until: dt.datetime
) -> dict[str, _History]:
    """The hourly rollups of ``assets`` in ``[since, until)`` as dense arrays (one query; the
    database turns each metric's rows into arrays)."""
    series: dict[str, dict[str, tuple[Any, ...]]] = defaultdict(dict)
    for asset_id, metric, hours, means, readings, lasts in conn.execute(
        _SERIES, {"assets": assets, "since": since, "until": until}
    ):
        series[asset_id][metric] = (
            np.array(hours, dtype=np.int64),
            np.array(means, dtype=float),
            np.array(readings, dtype=float),
            np.array(lasts, dtype=float),
        )
    histories = {}
    for asset_id, metrics in series.items():
        first = min(int(v[0][0]) for v in metrics.values())
        length = max(int(v[0][-1]) for v in metrics.values()) - first + 1
        names = tuple(sorted(metrics))
        mean = np.full((length, len(names)), np.nan)
        weights = np.zeros((length, len(names)))
        last = np.full((length, len(names)), np.nan)
        present = np.zeros(length, dtype=bool)
        for j, name in enumerate(names):
            hours, m, n, lst = metrics[name]
            index = hours - first
            present[index] = True
            mean[index, j] = m
            weights[index, j] = np.where(np.isnan(m), 0.0, np.nan_to_num(n, nan=1.0))
            last[index, j] = lst
        start = dt.datetime.fromtimestamp(first * 3600, dt.UTC)
        histories[asset_id] = _History(start, names, mean, weights, last, present)
    return histories


def _counters(history: _History) -> npt.NDArray[np.bool_]:
    flags = np.zeros(len(history.metrics), dtype=bool)
    for j in range(len(history.metrics)):
        values = history.last[:, j][~np.isnan(history.last[:, j])]
        if len(values) >= 2 and bool(np.all(np.diff(values) >= 0)) and values[-1] > values[0]:
            flags[j] = True
    return flags


def _running_hours(history: _History) -> Array:
    """Cumulative running hours at the end of each hour: the ``running_hours`` counter when
    the asset has one, else the hours with data."""
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


def _daily(history: _History) -> tuple[int, Array, Array]:
    """(offset of the first hour within its UTC day, daily means, daily lasts) as
    ``rollup_daily`` computes them (means weighted by readings)."""
    offset = history.first.hour
    hours = len(history.mean)
    days = (offset + hours + DAY_H - 1) // DAY_H
    pad = days * DAY_H - offset - hours
    m = np.concatenate([np.full((offset, len(history.metrics)), np.nan), history.mean])
    m = np.concatenate([m, np.full((pad, len(history.metrics)), np.nan)])
    w = np.concatenate([np.zeros((offset, len(history.metrics))), history.readings])
    w = np.concatenate([w, np.zeros((pad, len(history.metrics)))])
    last = np.concatenate([np.full((offset, len(history.metrics)), np.nan), history.last])
    last = np.concatenate([last, np.full((pad, len(history.metrics)), np.nan)])
    m = m.reshape(days, DAY_H, -1)
    w = w.reshape(days, DAY_H, -1)
    last = last.reshape(days, DAY_H, -1)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(total > 0, np.nansum(np.nan_to_num(m) * w, axis=1) / total, np.nan)
    lasts = np.full((days, len(history.metrics)), np.nan)
    for d in range(days):
        block = last[d]
        for j in range(block.shape[1]):
            col = block[:, j][~np.isnan(block[:, j])]
            if len(col):
                lasts[d, j] = col[-1]
    return offset, means, lasts


def _usage(daily_lasts: Array, j_rh: int | None, hours_with_data_24: int) -> float:
    """Running hours per day: the counter's rate over the last complete days, else the hours
    with data in the last 24 h."""
    if j_rh is not None:
        col = daily_lasts[:, j_rh]
        valid = np.nonzero(~np.isnan(col))[0]
        if len(valid) >= 2:
            return float(col[valid[-1]] - col[valid[0]]) / float(valid[-1] - valid[0])
    return float(hours_with_data_24)


def _snapshots(
    history: _History,
    maintenance: list[dt.datetime],
    failures: list[dt.datetime],
    until: dt.datetime,
    since: dt.datetime,
    metrics: tuple[str, ...],
) -> tuple[list[Array], list[int], list[dt.datetime]]:
    """Labelled feature vectors of one asset (see the module docstring)."""
    counters = _counters(history)
    rh = _running_hours(history)
    end_h = min(int((until - history.first) / HOUR), len(rh))  # hours of data before until
    rh_until = float(rh[end_h - 1])
    offset, daily_means, daily_lasts = _daily(history)
    j_rh = history.metrics.index(RUNNING_HOURS) if RUNNING_HOURS in history.metrics else None
    keep = ~counters
    names = tuple(m for m, k in zip(history.metrics, keep, strict=True) if k)
    mean = history.mean[:, keep]
    daily_kept = daily_means[:, keep]
    resets = _reset_hours(history, daily_means, offset)
    sums = _Sums(mean)
    xs: list[Array] = []
    ys: list[int] = []
    times: list[dt.datetime] = []
    start_h = max(0, int((since - history.first) / HOUR))
    first_t = history.first + HOUR  # snapshot times are multiples of SNAPSHOT_H hours
    epoch_h = int(first_t.timestamp() // 3600)
    h = start_h + (-(epoch_h + start_h)) % SNAPSHOT_H + 1
    fail_rh = [(f, _rh_at(rh, history.first, f)) for f in failures]
    while h <= end_h:
        t = history.first + h * HOUR
        ref_start = max(0, h - int(anomaly.REFERENCE_MAX_AGE / HOUR))
        ref_len = anomaly.reference_hours(history.first + ref_start * HOUR, t)
        if h - (ref_start + ref_len) < anomaly.WINDOWS * anomaly.WINDOW_H:
            h += SNAPSHOT_H
            continue
        if not history.present[h - DAY_H : h].any():
            h += SNAPSHOT_H  # not reporting: not scored either
            continue
        rh_t = float(rh[h - 1])
        label = _label(rh_t, t, fail_rh, rh_until, until)
        if label is None:
            h += SNAPSHOT_H
            continue
        base_mean, base_sd = sums.mean_sd(ref_start, ref_start + ref_len, anomaly.MIN_METRIC_HOURS)
        base_sd = np.maximum(base_sd, np.maximum(1e-3 * np.abs(base_mean), 1e-9))
        mean24, sd24 = sums.mean_sd(h - DAY_H, h, 1)
        day = (offset + h) // DAY_H  # the day containing t (t's day is incomplete)
        usage = _usage(
            _last_days(daily_lasts, day), j_rh, int(history.present[h - DAY_H : h].sum())
        )
        since_h = _hours_since(maintenance, resets, history.first, t)
        window = Window(
            names,
            mean24,
            sd24,
            _last_days(daily_kept, day),
            base_mean,
            base_sd,
            usage,
            since_h * min(1.0, usage / DAY_H),
        )
        xs.append(features(window, metrics))
        ys.append(label)
        times.append(t)
        h += SNAPSHOT_H
    return xs, ys, times


class _Sums:
    """Prefix sums of an hourly matrix: mean and standard deviation of any span in O(metrics)."""

    def __init__(self, values: Array) -> None:
        zero = np.zeros((1, values.shape[1]))
        filled = np.nan_to_num(values)
        self.total = np.concatenate([zero, np.cumsum(filled, axis=0)])
        self.squares = np.concatenate([zero, np.cumsum(filled**2, axis=0)])
        self.count = np.concatenate([zero, np.cumsum(~np.isnan(values), axis=0)])

    def mean_sd(self, a: int, b: int, min_n: int) -> tuple[Array, Array]:
        """Mean and sample standard deviation over hours ``[a, b)`` (NaN below ``min_n``)."""
        s = self.total[b] - self.total[a]
        s2 = self.squares[b] - self.squares[a]
        n = self.count[b] - self.count[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n >= max(min_n, 1), s / n, np.nan)
            var = np.maximum(s2 / n - mean**2, 0.0) * n / np.maximum(n - 1, 1)
            sd = np.where(n >= 2, np.sqrt(var), np.nan)
        return mean, sd


def _last_days(daily: Array, day: int) -> Array:
    """The 7 complete days before ``day`` (oldest first, NaN rows where none)."""
    rows = daily[max(0, day - 7) : day]
    if len(rows) < 7:
        rows = np.concatenate([np.full((7 - len(rows), daily.shape[1]), np.nan), rows])
    return rows


def _rh_at(rh: Array, first: dt.datetime, moment: dt.datetime) -> float:
    """Running hours before the hour containing ``moment``."""
    h = int((moment - first) // HOUR)
    if h <= 0:
        return 0.0
    return float(rh[min(h, len(rh)) - 1])


def _label(
    rh_t: float,
    t: dt.datetime,
    failures: list[tuple[dt.datetime, float]],
    rh_until: float,
    until: dt.datetime,
) -> int | None:
    """1: a failure within the horizon after ``t``; 0: the horizon ran out before ``until``
    without one; ``None``: not known yet. Both labels need ``t`` at least the horizon (in
    clock hours) before ``until``: otherwise recent snapshots could only be labelled by a
    failure, and the model would learn that recent means failing."""
    if until - t < HORIZON_RH * HOUR:
        return None
    for when, rh_f in failures:
        if when >= t and rh_f - rh_t <= HORIZON_RH:
            return 1
    if rh_until - rh_t >= HORIZON_RH:
        return 0
    return None


def _reset_hours(history: _History, daily_means: Array, offset: int) -> list[dt.datetime]:
    """Replacements seen in the data: a catalogued indicator's daily mean dropping back."""
    found = []
    day0 = history.first - offset * HOUR
    for indicator in INDICATORS.values():
        if indicator.metric not in history.metrics:
            continue
        col = daily_means[:, history.metrics.index(indicator.metric)]
        index = np.nonzero(~np.isnan(col))[0]
        for reset in replacements(indicator, col[index]):
            found.append(day0 + int(index[reset]) * DAY_H * HOUR)
    return found


def _hours_since(
    maintenance: list[dt.datetime],
    resets: list[dt.datetime],
    first: dt.datetime,
    t: dt.datetime,
) -> float:
    """Clock hours since the last maintenance (event or reset seen by the end of the day
    before ``t``'s day), else since the first data."""
    day_start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    events = [m for m in maintenance if m < t] + [
        r for r in resets if r + dt.timedelta(days=1) <= day_start
    ]
    latest = max([first, *events])
    return (t - latest) / HOUR


def _pick(asset_id: str) -> str:
    return hashlib.sha256(asset_id.encode()).hexdigest()


def train(conn: psycopg.Connection[TupleRow], until: dt.datetime) -> FailureModel | None:
    """Fit on the snapshots labelled before ``until`` (``None``: too few failures)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    end = anomaly.hour_floor(until)
    since = end - dt.timedelta(days=TRAIN_DAYS)
    events: dict[str, dict[str, list[dt.datetime]]] = defaultdict(lambda: defaultdict(list))
    for asset_id, kind, time in conn.execute(
        "SELECT asset_id, kind, time FROM asset_events WHERE kind = ANY(%s) AND time < %s",
        (list(MAINTENANCE), end),
    ):
        events[asset_id][kind].append(time)
    failed = sorted(
        (a for a, e in events.items() if any(since <= f < end for f in e["failure"])), key=_pick
    )[:MAX_FAILED_ASSETS]
    if len(failed) == 0:
        return None
    others = [
        str(a)
        for (a,) in conn.execute(
            "SELECT asset_id FROM assets WHERE asset_id <> ALL(%s)", (failed,)
        ).fetchall()
    ]
    chosen = failed + sorted(others, key=_pick)[:MAX_OTHER_ASSETS]
    histories = load_histories(conn, chosen, since, end)
    frequency: Counter[str] = Counter()
    for h in histories.values():
        frequency.update(m for m, c in zip(h.metrics, _counters(h), strict=True) if not c)
    metrics = tuple(sorted(m for m, _ in frequency.most_common(MAX_METRICS)))
    xs: list[Array] = []
    ys: list[int] = []
    failures_seen = 0
    for asset_id in sorted(histories):
        asset_events = events.get(asset_id, {})
        maintenance = sorted(t for k in MAINTENANCE for t in asset_events.get(k, []))
        x, y, _ = _snapshots(
            histories[asset_id], maintenance, asset_events.get("failure", []), end, since, metrics
        )
        xs += x
        ys += y
        failures_seen += _failures_with_positive(x, y)
    if failures_seen < MIN_FAILURES or sum(ys) == 0 or sum(ys) == len(ys):
        return None
    classifier = HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        random_state=SEED,
    )
    features = np.vstack(xs)
    # a feature no snapshot had (a metric missing in the training window) is constant, not
    # missing: scikit-learn's binning fails on a column without a single value
    features[:, np.isnan(features).all(axis=0)] = 0.0
    classifier.fit(features, np.array(ys))
    return FailureModel(
        end,
        metrics,
        classifier,
        anomaly.baselines(conn, end),
        _data_resets(histories),
        {
            "snapshots": len(ys),
            "positives": int(sum(ys)),
            "failures": failures_seen,
            "assets": len(histories),
            "metrics": list(metrics),
            "horizon_running_hours": HORIZON_RH,
        },
    )


def _failures_with_positive(x: list[Array], y: list[int]) -> int:
    """Failures behind the positive snapshots of one asset: runs of consecutive positives."""
    runs = 0
    previous = 0
    for label in y:
        if label == 1 and previous == 0:
            runs += 1
        previous = label
    return runs


def _data_resets(histories: dict[str, _History]) -> dict[str, dt.datetime]:
    found = {}
    for asset_id, history in histories.items():
        offset, daily_means, _ = _daily(history)
        resets = _reset_hours(history, daily_means, offset)
        if resets:
            found[asset_id] = max(resets)
    return found


# ---------------------------------------------------------------- scoring

_SCORE = """
WITH h AS (
    SELECT r.asset_id, s.key AS metric, avg((s.value->>0)::double precision) AS mean24,
           stddev_samp((s.value->>0)::double precision) AS sd24, count(*) AS n24,
           max(r.bucket) AS latest
    FROM rollup_hourly r CROSS JOIN LATERAL jsonb_each(r.stats) AS s(key, value)
    WHERE r.bucket >= %(end)s - INTERVAL '24 hours' AND r.bucket < %(end)s
      AND r.asset_id = ANY(%(assets)s)
    GROUP BY 1, 2
), d AS (
    SELECT r.asset_id, s.key AS metric,
           array_agg((extract(epoch FROM %(day)s - r.bucket) / 86400)::integer) AS ago,
           array_agg((s.value->>0)::double precision) AS means,
           array_agg((s.value->>3)::double precision) AS lasts
    FROM rollup_daily r CROSS JOIN LATERAL jsonb_each(r.stats) AS s(key, value)
    WHERE r.bucket >= %(day)s - INTERVAL '7 days' AND r.bucket < %(day)s
      AND r.asset_id = ANY(%(assets)s)
    GROUP BY 1, 2
)
SELECT coalesce(h.asset_id, d.asset_id), coalesce(h.metric, d.metric), h.mean24, h.sd24,
       h.n24, h.latest, d.ago, d.means, d.lasts
FROM h FULL JOIN d ON h.asset_id = d.asset_id AND h.metric = d.metric
"""


@dataclass
class _Recent:
    mean24: dict[str, float] = field(default_factory=dict)
    sd24: dict[str, float] = field(default_factory=dict)
    hours24: int = 0
    latest: dt.datetime | None = None
    daily: dict[str, Array] = field(default_factory=dict)
    lasts: dict[str, Array] = field(default_factory=dict)


def _days(ago: list[int] | None, values: list[float | None] | None) -> Array:
    out = np.full(7, np.nan)
    for a, v in zip(ago or [], values or [], strict=True):
        if 1 <= a <= 7 and v is not None:
            out[7 - a] = v
    return out


def findings(
    conn: psycopg.Connection[TupleRow],
    as_of: dt.datetime,
    prices: PriceBook,
    model: object | None,
) -> list[Finding]:
    """component_due findings (subject = asset) from the model, as of ``as_of``."""
    if not isinstance(model, FailureModel) or not model.baselines:
        return []
    end = anomaly.hour_floor(as_of)
    day = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    assets = sorted(model.baselines)
    recent: dict[str, _Recent] = defaultdict(_Recent)
    for asset_id, metric, mean24, sd24, n24, latest, ago, means, lasts in conn.execute(
        _SCORE.encode(), {"end": end, "day": day, "assets": assets}
    ):
        r = recent[asset_id]
        if mean24 is not None:
            r.mean24[metric] = float(mean24)
            r.sd24[metric] = float(sd24) if sd24 is not None else math.nan
            r.hours24 = max(r.hours24, int(n24))
            r.latest = latest if r.latest is None else max(r.latest, latest)
        if ago is not None:
            r.daily[metric] = _days(ago, means)
            r.lasts[metric] = _days(ago, lasts)
    if not recent:
        return []
    maintenance: dict[str, dt.datetime] = {}
    failed: dict[str, dt.datetime] = {}
    for asset_id, latest, latest_failure in conn.execute(
        "SELECT asset_id, max(time), max(time) FILTER (WHERE kind = 'failure')"
        " FROM asset_events WHERE kind = ANY(%s) AND time < %s AND asset_id = ANY(%s)"
        " GROUP BY asset_id",
        (list(MAINTENANCE), end, sorted(recent)),
    ):
        maintenance[asset_id] = latest
        if latest_failure is not None:
            failed[asset_id] = latest_failure
    info = {
        str(a): (str(acc), first)
        for a, acc, first in conn.execute(
            "SELECT a.asset_id, a.account_id, (SELECT min(bucket) FROM rollup_daily d"
            " WHERE d.asset_id = a.asset_id) FROM assets a WHERE a.asset_id = ANY(%s)",
            (sorted(recent),),
        )
    }
    keys: list[str] = []
    rows: list[Array] = []
    usages: dict[str, float] = {}
    for asset_id, r in recent.items():
        baseline = model.baselines.get(asset_id)
        if baseline is None or asset_id not in info or r.hours24 == 0:
            continue
        if asset_id in failed and (
            r.latest is None or r.latest <= anomaly.hour_floor(failed[asset_id])
        ):
            continue  # down since its failure: nothing left to predict
        names = tuple(baseline.metrics)
        usage = _usage(
            np.column_stack([r.lasts.get(RUNNING_HOURS, np.full(7, np.nan))]),
            0 if RUNNING_HOURS in r.lasts else None,
            r.hours24,
        )
        first = info[asset_id][1] or end
        resets = [model.resets[asset_id]] if asset_id in model.resets else []
        resets += _recent_resets(r, day)
        events = [maintenance[asset_id]] if asset_id in maintenance else []
        since_h = _hours_since(events, resets, first, end)
        window = Window(
            names,
            np.array([r.mean24.get(m, math.nan) for m in names]),
            np.array([r.sd24.get(m, math.nan) for m in names]),
            np.column_stack([r.daily.get(m, np.full(7, np.nan)) for m in names]),
            np.array([baseline.metrics[m][0] for m in names]),
            np.array([baseline.metrics[m][1] for m in names]),
            usage,
            since_h * min(1.0, usage / DAY_H),
        )
        keys.append(asset_id)
        rows.append(features(window, model.metrics))
        usages[asset_id] = usage
    if not rows:
        return []
    probabilities = model.classifier.predict_proba(np.vstack(rows))[:, 1]
    firing = [k for k, p in zip(keys, probabilities, strict=True) if p >= P_ALERT]
    components = _components(conn, firing, end, usages) if firing else {}
    found = []
    for asset_id, p, row in zip(keys, probabilities, rows, strict=True):
        if p < P_ALERT:
            continue
        found.append(
            _finding(
                info[asset_id][0],
                asset_id,
                float(p),
                usages[asset_id],
                row,
                model,
                components.get(asset_id, []),
                prices,
            )
        )
    return found


def _recent_resets(r: _Recent, day: dt.datetime) -> list[dt.datetime]:
    found = []
    for indicator in INDICATORS.values():
        col = r.daily.get(indicator.metric)
        if col is None:
            continue
        index = np.nonzero(~np.isnan(col))[0]
        for reset in replacements(indicator, col[index]):
            found.append(day - (7 - int(index[reset])) * DAY_H * HOUR)
    return found


def _components(
    conn: psycopg.Connection[TupleRow],
    assets: list[str],
    end: dt.datetime,
    usage: dict[str, float],
) -> dict[str, list[tuple[str, float, float]]]:
    """Per asset: (component, rated life, running hours used) of its registered components.
    Used hours count from the last replacement or failure event of the component (clock hours
    at the asset's usage), else from its installation by the ``running_hours`` counter."""
    found: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    rows = conn.execute(
        """
        SELECT c.asset_id, c.kind, c.rated_life_hours::double precision,
               c.installed_at_running_hours::double precision,
               (SELECT (d.stats -> 'running_hours' ->> 3)::double precision FROM rollup_daily d
                WHERE d.asset_id = c.asset_id AND d.bucket <= %(end)s - INTERVAL '1 day'
                  AND d.stats ? 'running_hours' ORDER BY d.bucket DESC LIMIT 1),
               (SELECT max(e.time) FROM asset_events e WHERE e.asset_id = c.asset_id
                  AND e.component = c.kind AND e.kind IN ('component_replaced', 'failure')
                  AND e.time < %(end)s)
        FROM components c WHERE c.asset_id = ANY(%(assets)s)
        """,
        {"assets": assets, "end": end},
    )
    for asset_id, kind, life, installed, counter, replaced in rows:
        if not life:
            continue
        if replaced is not None:
            used = (end - replaced) / HOUR * min(1.0, usage.get(asset_id, DAY_H) / DAY_H)
        elif counter is not None:
            used = float(counter) - float(installed or 0)
        else:
            continue
        if used > 2 * life:
            continue  # no replacement on record: no data about this component
        found[asset_id].append((str(kind), float(life), used))
    return found


def _finding(
    account_id: str,
    asset_id: str,
    p: float,
    usage: float,
    row: Array,
    model: FailureModel,
    components: list[tuple[str, float, float]],
    prices: PriceBook,
) -> Finding:
    rate = -math.log(max(1.0 - p, 1e-6)) / HORIZON_RH
    median = math.log(2) / rate
    low, high = math.log(4 / 3) / rate, math.log(4) / rate
    per_day = max(usage, 0.5)
    days = median / per_day
    reasons = [
        f"{p:.0%} probability that {asset_id} fails within {HORIZON_RH:.0f} running hours "
        f"(fleet model trained on {model.summary.get('failures', 0)} failures): about "
        f"{median:,.0f} running hours left (half the chance between {low:,.0f} and "
        f"{high:,.0f}), ≈ {days:.0f} days at {usage:.1f} h/day"
    ]
    drivers = _drivers(row, model)
    if drivers:
        reasons.append("behind it: " + "; ".join(drivers))
    basis = "model"
    overdue = False
    figures = {
        "probability": round(p, 4),
        "hours_left": round(median, 1),
        "hours_left_low": round(low, 1),
        "hours_left_high": round(high, 1),
        "days_left": round(days, 1),
        "running_hours_per_day": round(usage, 2),
    }
    if components:
        kind, life, used = min(components, key=lambda c: c[1] - c[2])
        rated_left = life - used
        if rated_left < median:
            basis = "rated life"
        where = (
            f"overdue by {-rated_left:,.0f} running hours past its {life:,.0f}"
            if rated_left < 0
            else f"{rated_left:,.0f} of {life:,.0f} running hours left"
        )
        reasons.append(
            f"nearest by rated life (a): {kind}, {where}; {basis} gives the earlier date"
        )
        overdue = rated_left < 0
        figures["rated_life_hours_left"] = round(rated_left, 1)
    reasons.append(f"estimate driven by: {'(a) rated life' if basis != 'model' else '(c) model'}")
    return Finding(
        account_id,
        "component_due",
        asset_id,
        round(min(1.0, max(0.0, p)), 4),
        prices.component_service,
        max(1, math.ceil(HORIZON_RH / per_day)),
        tuple(reasons),
        figures,
        overdue=overdue,
    )


def _drivers(row: Array, model: FailureModel) -> list[str]:
    """The metrics furthest from their baseline, in words."""
    names = model.feature_names
    pooled = len(_POOLED)
    out = []
    for i, metric in enumerate(model.metrics):
        level = row[pooled + i * len(_PER_METRIC)]
        slope = row[pooled + i * len(_PER_METRIC) + 4]
        if math.isfinite(level) and abs(level) >= 1.5:
            out.append((abs(level), f"{metric} {level:+.1f} sd from its normal over 24 h"))
        elif math.isfinite(slope) and abs(slope) >= 0.5:
            out.append((abs(slope), f"{metric} moving {slope:+.2f} sd a day over 7 days"))
    hours = row[names.index("hours_since_maintenance")]
    text = [t for _, t in sorted(out, reverse=True)[:3]]
    if math.isfinite(hours):
        text.append(f"{hours:,.0f} running hours since the last maintenance")
    return text
