"""Component wear estimates on hand-made series (pure, no services)."""

from __future__ import annotations

import numpy as np
import pytest

from signals.catalogue import INDICATORS
from signals.components import replacements, wear

FILTER = INDICATORS["oil_filter"]  # 0.25 bar new, 1.25 bar limit


def test_trend_extrapolates_to_the_limit() -> None:
    hours = np.arange(0.0, 200.0, 10.0) + 1000.0  # 20 days, 10 running hours a day
    indicator = 0.85 + 0.001 * (hours - 1000.0)  # rises 0.1 bar per 100 h
    estimate = wear(
        FILTER, rated_life_h=4000, installed_at_h=0, running_hours=hours, daily_mean=indicator
    )
    assert estimate.basis == "trend"
    # at 1190 h the filter reads 1.04 bar; 0.21 bar more at 0.001 bar/h -> 210 h left
    assert estimate.hours_left == pytest.approx(210.0, abs=1e-6)
    assert estimate.slope_per_100h == pytest.approx(0.1)


def test_rated_life_when_the_indicator_is_flat_or_missing() -> None:
    hours = np.arange(0.0, 100.0, 10.0) + 3500.0
    flat = np.full(hours.shape, 0.4)
    estimate = wear(FILTER, 4000, 0, hours, flat)
    assert estimate.basis == "rated life"
    assert estimate.hours_left == pytest.approx(4000 - 3590)
    no_indicator = wear(None, 24000, 20000, hours, None)
    assert no_indicator.hours_left == pytest.approx(24000 - (3590 - 20000))


def test_a_reset_is_a_replacement_and_restarts_the_count() -> None:
    values = np.array([1.0, 1.05, 1.1, 0.27, 0.28, 0.29, 0.30, 0.31, 0.32])
    assert replacements(FILTER, values) == [3]
    hours = np.arange(len(values), dtype=float) * 10.0 + 5000.0
    estimate = wear(FILTER, 4000, 0, hours, values)
    assert estimate.used_hours == pytest.approx(50.0)  # since the reset day
    assert estimate.current == pytest.approx(0.32)
