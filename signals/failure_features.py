"""Features of one asset at one moment, for the failure classifier and the remaining-life model.

One function, :func:`snapshot_features`, computes them for training (every snapshot of the
fleet's history) and for scoring (now): both paths load the asset's rows into an
:class:`AssetHistory` (``signals.failure_data``) and call it, so the features of an asset at a
moment are the same, bit for bit, whichever path computed them
(``tests/signals/test_failure_features.py``). Pure: numpy arrays in, numbers out.

**What the features of an asset at ``t`` (a whole hour) see**: the hourly rollups of the hours
before ``t``, its events before ``t`` and its model in the registry. Nothing else:

- *Baseline*: the reference period of ``signals.anomaly`` as of ``t``: from the later of the
  hour of the asset's first reading and ``t`` - 28 days, ``clip(history / 2, 48 h, 168 h)``
  long (every third hour of it). The asset is scored from 24 hours after its reference period
  on, and only while it reported in the last 24 hours (else ``None``).
- *The asset's own normal* (:func:`fit_normal`): per metric, a linear function of the
  operating ``CONDITIONS`` (``load_pct``, ``ambient_temp_c``; standardised, ridge ``RIDGE`` on
  the slopes) fitted by least squares on the reference rows; a metric's *residual* is its value
  minus that normal, in units of the reference residuals' standard deviation ``sd``. A
  condition that does not vary in the reference period, and every condition for a data set
  that has none, is left out (the normal is then the mean, as before); a condition is not
  explained by the conditions. The normal is linear, so a day's residual is the residual of
  the day's means. Why: temperatures, vibration and power follow load and ambient far more than
  a precursor moves them; a z-score against the mean mostly measured the weather and the shift.
- *Per metric* (the ``FeatureSpec.metrics`` of the model, any names): mean residual of the
  last 24 hours (``residual24``), variability ``log(sd of the residuals over 24 h / sd)``, mean
  residual of the last 7 complete UTC days (``residual7d``), trends: slopes of the hourly
  residuals over the last 24 hours and of the daily residuals over the last 7 and 28 complete
  days (``slope1d``, ``slope7d``, ``slope28d``; per day, in ``sd``; precursors lead failures by
  100-1,500 running hours, longer than a week), and the raw mean of the last 24 hours
  (``mean24``: the fleet's model learns what a level means on its own machines). Days are
  ``rollup_daily``'s rows (the last ``DAILY_DAYS`` = 28). A counter (its ``last`` never
  decreases and rises over the reference period) has no per-metric features: its level says
  nothing.
- *Pooled* (names do not matter): largest and mean absolute 24-hour residual, largest
  absolute 7-day and 28-day slope, metrics beyond 3 sd, largest variability; usage in running
  hours per day (the ``running_hours`` counter's rate over the last ``USAGE_DAYS`` complete
  days, else the hours with data in the last 24 hours).
- *Maintenance*: running hours since the last maintenance event (``component_replaced``,
  ``service`` or ``failure``), else since the asset's first reading; per component kind of
  ``FeatureSpec.components``, running hours since its last ``component_replaced`` or
  ``failure`` event (missing when none is on record). Running hours here are clock hours ×
  ``min(1, usage / 24)``. Replacements seen only in the data (an indicator reset, see
  ``signals.components``) are not counted: finding them needs the asset's whole history at
  every scoring pass; the indicator's own level is a feature.
- *Alarms and errors* (events of any other kind, keyed by their code, else their kind): how
  many in the last 24 hours and 7 days, distinct keys in 7 days, and per key of
  ``FeatureSpec.codes`` the counts over both windows.
- *Asset model* from the registry: a category (missing when unknown to the model).

**Measured** (issue 13; before: z-scores against the reference mean, slopes over 3 and 7
days). Offline, snapshot level, the classifier as ``signals.failure_model`` fits it
(``HORIZON_RH`` 72, snapshots every 6 h): simulator seed 7, trained on the 120 days before the
last 183, scored on those: AUC 0.618 → 0.634 (seed 11, never tuned on: 0.701 → 0.716);
Azure, trained before the last 45 days: AUC
0.879 → 0.881; C-MAPSS, 70 % of the engines for training, 30 % held out: AUC 0.984 → 0.988.
Small gains; on the simulator no held-out snapshot reaches ``P_ALERT`` either way (no
failure_risk alert at all, offline with one fit; the replay below retrains every 30 days).
Weighting the rare positives (balanced) did not pay: on Azure it raised the alerts that
caught a failure from 3 to 5 of 9 but dropped their precision from 0.60 to 0.50 (C-MAPSS
AUC 0.988 → 0.989); left out.

Replayed through the CLI (``nice .venv/bin/python bench/backtest.py --datasets simulator
--seed 7 --kinds failure_risk``, likewise ``--seed 11`` and ``--datasets azure,cmapss``),
failure_risk before → after: simulator seed 7, 1 alert (0 of 18 failures) → 5 alerts, none
confirmed (chance 0.9 %), 0 of 18; seed 11, no alert either way (0 of 24); Azure, 7 alerts,
precision 57 % → 5 alerts, 80 % (chance 5.5 %), recall 6/22 both, median lead 26 → 26.5 h;
at 24 h (as published) precision 40 % (chance 1.8 %), recall 3/22; C-MAPSS unchanged: 79
alerts, precision 80 % (chance 35.4 %), recall 63/100, lead 30 h. Kept: it does not hurt the
real data and sharpens Azure, but the simulator's precursors are still not turned into alerts.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from signals import anomaly

Array = npt.NDArray[np.float64]
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
DAY_H = 24
DAILY_DAYS = 28
TREND_DAYS = (7, 28)
USAGE_DAYS = 7  # running hours per day: the counter's rate over the last 7 complete days
RECENT_H = 24
# The operating conditions each metric's normal is conditioned on (DESIGN.md's names for the
# reference machine); an asset without them has a normal that is a constant (its mean).
CONDITIONS = ("load_pct", "ambient_temp_c")
# a condition whose reference spread is below this share of its mean (or absolute) is constant
MIN_CONDITION_SPREAD = 1e-3
# ridge penalty of the per-asset fit, in units of the standardised conditions' sum of squares
RIDGE = 1e-2
# The reference period's statistics take every third hour of it: reading the hourly rollups is
# what scoring costs, and 16-56 hourly means estimate a mean and a spread about as well as
# 48-168 neighbouring (correlated) ones.
REFERENCE_STRIDE_H = 3
ALARM_WINDOWS = (dt.timedelta(hours=24), dt.timedelta(days=7))
RUNNING_HOURS = "running_hours"
MAINTENANCE = ("component_replaced", "service", "failure")
REPLACEMENT = ("component_replaced", "failure")
# how far back of ``t`` a snapshot's rows can reach (the reference period's earliest start)
LOOKBACK = anomaly.REFERENCE_MAX_AGE

POOLED = (
    "max_abs_level",
    "mean_abs_level",
    "max_abs_slope7",
    "max_abs_slope28",
    "metrics_beyond_3sd",
    "max_variability",
    "running_hours_per_day",
    "hours_since_maintenance",
    "alarms_24h",
    "alarms_7d",
    "alarm_codes_7d",
    "asset_model",
)
PER_METRIC = (
    "residual24",
    "variability24",
    "residual7d",
    "slope1d",
    "slope7d",
    "slope28d",
    "mean24",
)
PER_CODE = ("alarms_24h", "alarms_7d")


@dataclass(frozen=True)
class AssetEvent:
    time: dt.datetime
    kind: str
    code: str = ""
    component: str = ""

    @property
    def alarm_key(self) -> str:
        """What an alarm or error is counted under: its code, else its kind."""
        return self.code or self.kind


@dataclass(frozen=True)
class FeatureSpec:
    """The names a model's features are built from, fixed at training."""

    metrics: tuple[str, ...]
    codes: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    models: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return (
            list(POOLED)
            + [f"{c}:{f}" for c in self.codes for f in PER_CODE]
            + [f"hours_since_replaced:{c}" for c in self.components]
            + [f"{m}:{f}" for m in self.metrics for f in PER_METRIC]
        )

    @property
    def categorical(self) -> npt.NDArray[np.bool_]:
        """Which columns are categories (for ``HistGradientBoosting*``'s
        ``categorical_features``)."""
        return np.array([n == "asset_model" for n in self.names], dtype=bool)


@dataclass
class AssetHistory:
    """One asset's rollups as dense arrays, hourly from ``start`` (row 0) and daily from
    ``day_start``, with what else the features read. ``first_seen`` is the hour of its first
    reading ever (before the cut-off the rows were loaded for); ``start`` may be later, but
    then no snapshot may reach before it (see :func:`needed_from`). Only the metrics the
    features use are loaded (the spec's and ``running_hours``)."""

    asset_id: str
    first_seen: dt.datetime
    start: dt.datetime
    metrics: tuple[str, ...]
    mean: Array  # (hours, metrics)
    last: Array
    present: npt.NDArray[np.bool_]  # hours with a rollup row
    day_start: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    daily_mean: Array = field(default_factory=lambda: np.zeros((0, 0)))  # (days, metrics)
    daily_last: Array = field(default_factory=lambda: np.zeros((0, 0)))
    model: str | None = None
    events: tuple[AssetEvent, ...] = ()
    _index: _EventIndex | None = field(default=None, init=False, repr=False)

    def index(self) -> _EventIndex:
        if self._index is None:
            self._index = _EventIndex(self.events)
        return self._index

    def hour(self, t: dt.datetime) -> int:
        """Row index of the hour starting at ``t``."""
        return round((t - self.start) / HOUR)

    def day(self, t: dt.datetime) -> int:
        """Row index of the daily rollup of ``t``'s UTC day."""
        return round((day_floor(t) - self.day_start) / DAY)


class _EventIndex:
    """Event times in seconds, sorted, for counting and finding the latest before a moment."""

    def __init__(self, events: tuple[AssetEvent, ...]) -> None:
        ordered = sorted(events, key=lambda e: e.time)
        self.maintenance = [e.time.timestamp() for e in ordered if e.kind in MAINTENANCE]
        self.replaced: dict[str, list[float]] = {}
        for e in ordered:
            if e.kind in REPLACEMENT and e.component:
                self.replaced.setdefault(e.component, []).append(e.time.timestamp())
        alarms = [e for e in ordered if e.kind not in MAINTENANCE]
        self.alarm_times = [e.time.timestamp() for e in alarms]
        self.alarm_keys = [e.alarm_key for e in alarms]
        self.by_key: dict[str, list[float]] = {}
        for e in alarms:
            self.by_key.setdefault(e.alarm_key, []).append(e.time.timestamp())


def reference_start(first_seen: dt.datetime, t: dt.datetime) -> dt.datetime:
    return max(first_seen, t - anomaly.REFERENCE_MAX_AGE)


def needed_from(first_seen: dt.datetime, t: dt.datetime) -> dt.datetime:
    """The earliest hour whose hourly row the features at ``t`` can read."""
    return max(first_seen, min(reference_start(first_seen, t), t - RECENT_H * HOUR))


def days_needed_from(first_seen: dt.datetime, t: dt.datetime) -> dt.datetime:
    """The earliest day whose daily row the features at ``t`` can read."""
    return max(day_floor(first_seen), day_floor(t) - DAILY_DAYS * DAY)


def day_floor(t: dt.datetime) -> dt.datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def scorable(history: AssetHistory, t: dt.datetime) -> bool:
    """Whether the asset has a baseline and reported in the last 24 hours at ``t``."""
    ref_from = reference_start(history.first_seen, t)
    ref_len = anomaly.reference_hours(ref_from, t)
    if (t - ref_from) / HOUR - ref_len < anomaly.WINDOWS * anomaly.WINDOW_H:
        return False
    h = history.hour(t)
    return bool(history.present[max(0, h - RECENT_H) : max(0, h)].any())


def _rows(values: Array, a: int, b: int) -> Array:
    """Rows ``[a, b)`` of ``values``, NaN where outside it (a fresh contiguous array, so the
    arithmetic on it does not depend on where the slice came from)."""
    out = np.full((b - a, values.shape[1]), np.nan)
    lo, hi = max(a, 0), min(b, len(values))
    if hi > lo:
        out[lo - a : hi - a] = values[lo:hi]
    return out


def _mean_sd(block: Array, min_n: int) -> tuple[Array, Array]:
    """Per column mean (NaN below ``min_n`` values) and sample standard deviation."""
    ok = ~np.isnan(block)
    n = ok.sum(axis=0)
    filled = np.where(ok, block, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n >= max(min_n, 1), filled.sum(axis=0) / n, np.nan)
        dev = np.where(ok, block - mean, 0.0)
        var = (dev * dev).sum(axis=0) / np.maximum(n - 1, 1)
    return mean, np.where(n >= 2, np.sqrt(var), np.nan)


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


def _counters(last: Array) -> npt.NDArray[np.bool_]:
    """Columns whose values never decrease and rise over the block (NaN rows skipped)."""
    ok = ~np.isnan(last)
    rows = np.arange(len(last))[:, None]
    index = np.maximum.accumulate(np.where(ok, rows, 0), axis=0)
    filled = np.take_along_axis(last, index, axis=0)  # each NaN holds the value before it
    with np.errstate(invalid="ignore"):
        steps = np.diff(filled, axis=0)
        never_down = ~(steps < 0).any(axis=0)
    first = np.take_along_axis(last, ok.argmax(axis=0)[None, :], axis=0)[0]
    with np.errstate(invalid="ignore"):
        rises = filled[-1] > first if len(last) else np.zeros(last.shape[1], dtype=bool)
    return np.asarray((ok.sum(axis=0) >= 2) & never_down & rises, dtype=bool)


def _daily(history: AssetHistory, t: dt.datetime) -> tuple[Array, Array]:
    """Daily rollup means and lasts of the ``DAILY_DAYS`` complete UTC days before ``t``'s
    day, oldest first, NaN where a day has no data."""
    d = history.day(t)
    width = len(history.metrics)
    if history.daily_mean.shape[1:] != (width,):
        return np.full((DAILY_DAYS, width), np.nan), np.full((DAILY_DAYS, width), np.nan)
    days = (d - DAILY_DAYS, d)
    return _rows(history.daily_mean, *days), _rows(history.daily_last, *days)


def _usage(history: AssetHistory, daily_lasts: Array, hours_with_data: int) -> float:
    """Running hours per day: the counter's rate over the last complete days, else the hours
    with data in the last 24 hours."""
    if RUNNING_HOURS in history.metrics:
        col = daily_lasts[:, history.metrics.index(RUNNING_HOURS)]
        valid = np.nonzero(~np.isnan(col))[0]
        if len(valid) >= 2:
            return float(col[valid[-1]] - col[valid[0]]) / float(valid[-1] - valid[0])
    return float(hours_with_data)


def _count(times: list[float], since: float, until: float) -> float:
    return float(bisect.bisect_left(times, until) - bisect.bisect_left(times, since))


def _latest(times: list[float], until: float) -> float | None:
    i = bisect.bisect_left(times, until)
    return times[i - 1] if i else None


def _event_features(
    history: AssetHistory, t: dt.datetime, spec: FeatureSpec, running_share: float
) -> tuple[list[float], list[float], list[float]]:
    """(pooled alarm counts + hours since maintenance, per-code counts, per-component hours)."""
    index = history.index()
    now = t.timestamp()
    day_ago, week_ago = (now - w.total_seconds() for w in ALARM_WINDOWS)
    first = history.first_seen.timestamp()
    latest = _latest(index.maintenance, now)
    since = (now - max(first, latest if latest is not None else first)) / 3600
    lo = bisect.bisect_left(index.alarm_times, week_ago)
    hi = bisect.bisect_left(index.alarm_times, now)
    pooled = [
        since * running_share,
        _count(index.alarm_times, day_ago, now),
        float(hi - lo),
        float(len(set(index.alarm_keys[lo:hi]))),
    ]
    per_code: list[float] = []
    for code in spec.codes:
        times = index.by_key.get(code, [])
        per_code += [_count(times, day_ago, now), _count(times, week_ago, now)]
    per_component: list[float] = []
    for component in spec.components:
        replaced = _latest(index.replaced.get(component, []), now)
        per_component.append(
            math.nan if replaced is None else (now - replaced) / 3600 * running_share
        )
    return pooled, per_code, per_component


def _pooled(values: Array, how: str) -> float:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return math.nan
    return float(finite.max() if how == "max" else finite.mean())


def _design(rows: Array, conditions: list[int], centre: Array, scale: Array) -> Array:
    """``[1, standardised conditions...]`` per row of ``rows`` (NaN where a condition is)."""
    x = np.ones((len(rows), 1 + len(conditions)))
    if conditions:
        x[:, 1:] = (rows[:, conditions] - centre) / scale
    return x


@dataclass(frozen=True)
class Normal:
    """Each metric's normal as a linear function of the operating conditions, fitted on the
    reference period: ``coef`` (metrics, 1 + conditions) on the design of :func:`_design`,
    and the residuals' standard deviation ``sd`` (floored like the baseline's)."""

    conditions: list[int]  # columns of the history's metrics
    centre: Array
    scale: Array
    coef: Array
    sd: Array

    def residuals(self, rows: Array, columns: npt.NDArray[np.bool_]) -> Array:
        """``rows`` (all metrics) minus their normal, for the ``columns`` fitted."""
        x = _design(rows, self.conditions, self.centre, self.scale)
        return np.asarray(rows[:, columns] - x @ self.coef.T, dtype=float)


def fit_normal(
    reference: Array, columns: npt.NDArray[np.bool_], conditions: list[int], min_n: int
) -> Normal:
    """Per metric of ``reference[:, columns]`` a ridge fit on the conditions (an intercept
    only for a condition itself, and for every metric when the conditions do not vary).
    A metric with fewer than ``min_n`` rows where it and the conditions are present has a
    NaN normal."""
    cond = reference[:, conditions]
    centre, spread = _mean_sd(cond, 2)
    varies = np.isfinite(spread) & (
        spread > np.maximum(MIN_CONDITION_SPREAD * np.abs(centre), 1e-9)
    )
    conditions = [c for c, v in zip(conditions, varies, strict=True) if v]
    centre, spread = centre[varies], spread[varies]
    x = _design(reference, conditions, centre, spread)
    y = reference[:, columns]
    p = x.shape[1]
    rows_ok = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)
    ok = np.isfinite(y) & rows_ok[:, None]  # (rows, metrics)
    w = ok.astype(float)
    xf = np.nan_to_num(x)
    yf = np.where(ok, y, 0.0)
    xtx = np.einsum("rm,ri,rj->mij", w, xf, xf)
    xty = np.einsum("rm,ri,rm->mi", w, xf, yf)
    n = w.sum(axis=0)
    # a condition explains no metric that is itself a condition
    own = np.flatnonzero(columns)
    uses = np.ones((len(own), p), dtype=bool)
    uses[np.isin(own, conditions), 1:] = False
    penalty = RIDGE * np.maximum(n, 1.0)[:, None] * np.r_[0.0, np.ones(p - 1)][None, :]
    xtx = xtx + np.einsum("mi,ij->mij", penalty, np.eye(p))
    off = ~(uses[:, :, None] & uses[:, None, :])
    xtx = np.where(off, 0.0, xtx) + np.einsum("mi,ij->mij", (~uses).astype(float), np.eye(p))
    xty = np.where(uses, xty, 0.0)
    enough = n >= max(min_n, p + 2)
    xtx[~enough] = np.eye(p)
    coef = np.linalg.solve(xtx, xty[:, :, None])[:, :, 0]
    coef[~enough] = np.nan
    residual = np.where(ok, yf - np.einsum("ri,mi->rm", xf, coef), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.maximum(n - uses.sum(axis=1), 1.0)
        sd = np.sqrt((residual * residual).sum(axis=0) / dof)
    level = np.abs(coef[:, 0])
    sd = np.where(enough, np.maximum(sd, np.maximum(1e-3 * level, 1e-9)), np.nan)
    return Normal(conditions, centre, spread, coef, sd)


def _mean_rows(block: Array) -> Array:
    """Per column NaN-aware mean (NaN without values)."""
    return _mean_sd(block, 1)[0]


def snapshot_features(history: AssetHistory, t: dt.datetime, spec: FeatureSpec) -> Array | None:
    """The feature vector (``spec.names`` order) of the asset at ``t`` (a whole hour), or
    ``None`` when it is not scored then (no baseline yet, or silent for 24 hours)."""
    if history.start > needed_from(history.first_seen, t) or history.day_start > (
        days_needed_from(history.first_seen, t)
    ):
        raise ValueError(
            f"{history.asset_id}: rows from {history.start.isoformat()} (days from "
            f"{history.day_start.isoformat()}) on, the features at {t.isoformat()} need them "
            f"from {needed_from(history.first_seen, t).isoformat()} (days from "
            f"{days_needed_from(history.first_seen, t).isoformat()})"
        )
    if not scorable(history, t):
        return None
    h = history.hour(t)
    ref_from = reference_start(history.first_seen, t)
    a = history.hour(ref_from)
    b = a + anomaly.reference_hours(ref_from, t)
    # every REFERENCE_STRIDE_H-th hour on the epoch grid, as scoring reads them
    skip = (-int(ref_from.timestamp() // 3600)) % REFERENCE_STRIDE_H
    reference = _rows(history.mean, a, b)[skip::REFERENCE_STRIDE_H]
    kept = ~_counters(_rows(history.last, a, b)[skip::REFERENCE_STRIDE_H])
    conditions = [history.metrics.index(c) for c in CONDITIONS if c in history.metrics]
    normal = fit_normal(reference, kept, conditions, anomaly.MIN_METRIC_HOURS // REFERENCE_STRIDE_H)
    recent_rows = _rows(history.mean, h - RECENT_H, h)
    recent = normal.residuals(recent_rows, kept)
    mean24 = _mean_rows(recent_rows[:, kept])
    resid24, sd24 = _mean_sd(recent, 1)
    daily_means, daily_lasts = _daily(history, t)
    daily = normal.residuals(daily_means, kept)
    hours_with_data = int(history.present[max(0, h - RECENT_H) : max(0, h)].sum())
    usage = _usage(history, daily_lasts[-USAGE_DAYS:], hours_with_data)
    sd = normal.sd
    with np.errstate(invalid="ignore", divide="ignore"):
        level24 = resid24 / sd
        variability = np.log(np.maximum(sd24, 1e-12) / sd)
        level7 = _mean_rows(daily[-TREND_DAYS[0] :]) / sd
        slope1 = _slope(recent, RECENT_H) * DAY_H / sd
        slope7 = _slope(daily, TREND_DAYS[0]) / sd
        slope28 = _slope(daily, TREND_DAYS[1]) / sd
    abs_level = np.abs(level24)
    alarms, per_code, per_component = _event_features(history, t, spec, min(1.0, usage / DAY_H))
    model = spec.models.index(history.model) if history.model in spec.models else math.nan
    row = [
        _pooled(abs_level, "max"),
        _pooled(abs_level, "mean"),
        _pooled(np.abs(slope7), "max"),
        _pooled(np.abs(slope28), "max"),
        float((abs_level[np.isfinite(abs_level)] > 3).sum()),
        _pooled(variability, "max"),
        usage,
        *alarms,
        float(model),
        *per_code,
        *per_component,
    ]
    names = [m for m, k in zip(history.metrics, kept, strict=True) if k]
    position = {m: i for i, m in enumerate(names)}
    per_metric = np.column_stack([level24, variability, level7, slope1, slope7, slope28, mean24])
    for metric in spec.metrics:
        i = position.get(metric)
        row.extend(per_metric[i].tolist() if i is not None else [math.nan] * len(PER_METRIC))
    return np.array(row, dtype=float)
