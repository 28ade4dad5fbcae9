"""Component wear: hours left before a component reaches its limit, and replacements detected
from the data (an indicator that drops back towards its as-new value).

For each component: (a) rated life against running hours since the last replacement, (b) the
trend of its indicator since that replacement extrapolated to the limit (a least-squares line
of the daily mean against running hours). The estimate is the smaller of the two; its
uncertainty is the spread the trend's residuals give at the limit. Days left = hours left /
the asset's running hours per day over the last week. Pure: numpy arrays in, values out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from signals.catalogue import Indicator

Array = npt.NDArray[np.float64]
RESET_SHARE = 0.4  # a day-over-day drop of this share of (limit - new) is a replacement
MIN_TREND_DAYS = 5


@dataclass(frozen=True)
class Wear:
    """Estimate for one component of one asset."""

    hours_left: float
    hours_left_sd: float
    basis: str  # "trend" or "rated life"
    current: float | None
    used_hours: float
    slope_per_100h: float | None


def replacements(indicator: Indicator, daily_mean: Array) -> list[int]:
    """Indexes of days on which the indicator dropped back (a replacement)."""
    if len(daily_mean) < 2:
        return []
    drop = daily_mean[:-1] - daily_mean[1:]
    threshold = RESET_SHARE * (indicator.limit - indicator.new)
    return [int(i) + 1 for i in np.nonzero(drop > threshold)[0]]


def wear(
    indicator: Indicator | None,
    rated_life_h: float,
    installed_at_h: float,
    running_hours: Array,
    daily_mean: Array | None,
) -> Wear:
    """Hours left for one component; ``running_hours`` and ``daily_mean`` are aligned per day
    (the indicator's daily mean, NaN where there is no data)."""
    used = float(running_hours[-1]) - installed_at_h
    rated_left = rated_life_h - used
    if indicator is None or daily_mean is None:
        return Wear(rated_left, 0.1 * rated_life_h, "rated life", None, used, None)
    valid = ~np.isnan(daily_mean) & ~np.isnan(running_hours)
    if valid.sum() < MIN_TREND_DAYS:
        return Wear(rated_left, 0.1 * rated_life_h, "rated life", None, used, None)
    hours, values = running_hours[valid], daily_mean[valid]
    resets = replacements(indicator, values)
    if resets:
        start = resets[-1]
        hours, values = hours[start:], values[start:]
        used = float(running_hours[-1]) - float(hours[0])
        rated_left = rated_life_h - used
    current = float(values[-1])
    if len(values) < MIN_TREND_DAYS or float(hours[-1] - hours[0]) < 1.0:
        return Wear(rated_left, 0.1 * rated_life_h, "rated life", current, used, None)
    slope, intercept = np.polyfit(hours, values, 1)
    residual_sd = float(np.std(values - (slope * hours + intercept)))
    if slope <= 0:
        return Wear(rated_left, 0.1 * rated_life_h, "rated life", current, used, float(slope))
    trend_left = (indicator.limit - current) / slope
    trend_sd = residual_sd / slope if slope > 0 else math.inf
    if trend_left < rated_left:
        return Wear(
            max(0.0, float(trend_left)), float(trend_sd), "trend", current, used, float(slope) * 100
        )
    return Wear(rated_left, 0.1 * rated_life_h, "rated life", current, used, float(slope) * 100)
