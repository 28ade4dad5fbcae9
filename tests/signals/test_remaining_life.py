"""The remaining-life model (signals.remaining_life): targets from outcomes with the 125-hour
cap, a calibration split by asset, intervals that cover about 80 % of held-out assets' truth on
a synthetic run-to-failure fleet with a central estimate better than a constant, and the alert
wording."""

from __future__ import annotations

import math

import numpy as np
import pytest

from signals import conformal, remaining_life
from signals.failure_data import Outcome


def _outcome(left: float, to_failure: float, observed: float) -> Outcome:
    return Outcome(left, to_failure, observed, None)


def test_target_caps_and_labels_healthy_history() -> None:
    assert remaining_life.target(_outcome(500, 40.0, 400)) == 40.0
    assert remaining_life.target(_outcome(500, 300.0, 400)) == remaining_life.CAP_RH
    # no failure followed, 125 running hours observed: remaining life is 125 or more
    assert remaining_life.target(_outcome(500, math.nan, 130)) == remaining_life.CAP_RH
    assert remaining_life.target(_outcome(500, math.nan, 100)) is None  # not known
    assert remaining_life.target(_outcome(100, 40.0, 100)) is None  # too near the cut-off


def test_calibration_assets_are_split_by_asset_and_stable() -> None:
    names = [f"engine-{i}" for i in range(20)]
    fit, cal = remaining_life.split_groups(names)
    assert not fit & cal
    assert fit | cal == set(names)
    assert len(cal) == 6
    assert remaining_life.split_groups(list(reversed(names))) == (fit, cal)
    assert remaining_life.split_groups(["a", "b"])[1]
    assert remaining_life.split_groups(["a"]) == ({"a"}, set())


def _fleet(rng: np.random.Generator, engines: int, prefix: str) -> tuple[np.ndarray, ...]:
    """Engines run to failure over 150-350 hours; a health index degrades exponentially in
    the last ~120 hours (noisy), a second feature is noise. One row per 3 hours."""
    xs, ys, gs = [], [], []
    for e in range(engines):
        life = int(rng.integers(150, 350))
        hours = np.arange(0, life, 3)
        rul = life - hours
        wear = np.exp(-rul / 40.0) * rng.uniform(0.8, 1.2)
        health = wear + 0.03 * rng.standard_normal(len(hours))
        noise = rng.standard_normal(len(hours))
        xs.append(np.column_stack([health, noise, hours]))
        ys.append(np.minimum(rul, remaining_life.CAP_RH).astype(float))
        gs += [f"{prefix}{e}"] * len(hours)
    return np.vstack(xs), np.concatenate(ys), np.array(gs)


def test_intervals_cover_held_out_engines_and_the_centre_beats_a_constant() -> None:
    rng = np.random.default_rng(4)
    x, y, groups = _fleet(rng, 40, "train-")
    model = remaining_life.fit(x, y, list(groups))
    assert model is not None
    assert model.summary["calibration_assets"] == 12
    assert math.isfinite(model.q)
    xt, yt, _ = _fleet(rng, 60, "test-")
    central, low, high = model.predict(xt)
    assert ((low <= central) & (central <= high)).all()
    assert low.min() >= 0.0
    assert high.max() <= remaining_life.CAP_RH
    rate = conformal.coverage(yt, low, high)
    assert 0.72 <= rate <= 0.9, rate
    rmse = float(np.sqrt(np.mean((central - yt) ** 2)))
    constant = float(np.sqrt(np.mean((yt.mean() - yt) ** 2)))
    assert rmse < 0.5 * constant, (rmse, constant)
    # the interval is narrower where the engine is clearly healthy or clearly failing
    width = high - low
    assert width[yt <= 20].mean() < width[(yt > 50) & (yt < 100)].mean()


def test_one_asset_cannot_be_calibrated() -> None:
    rng = np.random.default_rng(5)
    x, y, _ = _fleet(rng, 1, "only-")
    assert remaining_life.fit(x, y, ["only-0"] * len(y)) is None


@pytest.mark.parametrize(
    ("low", "high", "text"),
    [
        (40.2, 89.6, "fails in 40–90 running hours (80 %)"),
        (0.0, 31.0, "fails within 31 running hours (80 %)"),
        (60.0, 125.0, "fails in 60–125+ running hours (80 %)"),
        (0.0, 125.0, "fails in 0–125+ running hours (80 %)"),
    ],
)
def test_phrase(low: float, high: float, text: str) -> None:
    assert remaining_life.phrase(low, high, 0.8) == text
