"""Split conformal intervals (signals.conformal) on synthetic exchangeable data: the quantile's
rank, the finite-sample edge cases, and coverage close to the level, exactly k/(n+1) in
expectation for small calibration sets, with widths that follow the scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from signals import conformal


@pytest.mark.parametrize(
    ("n", "alpha", "rank"),
    [
        (9, 0.2, 8),
        (4, 0.2, 4),
        (5, 0.2, 5),
        (3, 0.2, 4),
        (0, 0.2, 1),
        (99, 0.1, 90),
        (19, 0.05, 19),
    ],
)
def test_rank_is_ceil_of_n_plus_one_times_level(n: int, alpha: float, rank: int) -> None:
    assert conformal.quantile_rank(n, alpha) == rank


def test_quantile_is_the_kth_smallest_or_infinite() -> None:
    scores = [5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 7.0, 8.0, 6.0]  # n = 9, k = 8 at 80 %
    assert conformal.conformal_quantile(scores, 0.2) == 8.0
    assert conformal.conformal_quantile(scores[:4], 0.2) == 5.0  # n = 4, k = 4: the largest
    assert conformal.conformal_quantile(scores[:3], 0.2) == math.inf  # k = 4 > 3
    assert conformal.conformal_quantile([], 0.2) == math.inf
    assert conformal.conformal_quantile([2.0, 2.0, 2.0, 2.0], 0.2) == 2.0  # ties
    with pytest.raises(ValueError):
        conformal.conformal_quantile([1.0, math.nan], 0.2)
    with pytest.raises(ValueError):
        conformal.quantile_rank(10, 0.0)


def test_an_infinite_quantile_gives_the_whole_range() -> None:
    low, high = conformal.intervals([50.0, 0.0], [3.0, 0.0], math.inf, 1.0, 0.0, 125.0)
    assert low.tolist() == [0.0, 0.0]
    assert high.tolist() == [125.0, 125.0]


def test_scores_and_intervals_use_the_floor_and_clip() -> None:
    s = conformal.scores([10.0, 10.0], [7.0, 7.0], [2.0, 0.0], floor=1.0)
    assert s.tolist() == [1.5, 3.0]
    low, high = conformal.intervals([10.0, 120.0], [2.0, 0.1], 2.0, 1.0, 0.0, 125.0)
    assert low.tolist() == [6.0, 118.0]
    assert high.tolist() == [14.0, 122.0]
    low, high = conformal.intervals([3.0], [4.0], 2.0, 1.0, 0.0, 125.0)
    assert (low[0], high[0]) == (0.0, 11.0)
    assert conformal.coverage([1.0, 5.0, 9.0], [0.0, 6.0, 9.0], [2.0, 8.0, 9.0]) == pytest.approx(
        2 / 3
    )
    assert conformal.mean_width([0.0, 6.0], [2.0, 10.0]) == 3.0
    assert math.isnan(conformal.coverage([], [], []))


def _heteroscedastic(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    x = rng.uniform(0.0, 10.0, size)
    scale = 0.2 + x  # noise grows with x
    y = 3.0 * x + scale * rng.standard_normal(size)
    return x, scale, y


@pytest.mark.parametrize(("n", "alpha"), [(9, 0.2), (5, 0.2), (4, 0.2), (19, 0.1)])
def test_small_calibration_sets_cover_exactly_k_over_n_plus_one(n: int, alpha: float) -> None:
    # the guarantee is on the expectation over calibration sets: E[coverage] = k / (n + 1)
    rng = np.random.default_rng(n)
    trials, tests = 20_000, 10
    x, scale, y = _heteroscedastic(rng, (trials, n + tests))
    s = conformal.scores(y, 3.0 * x, scale, floor=1e-6)
    k = conformal.quantile_rank(n, alpha)
    q = np.sort(s[:, :n], axis=1)[:, k - 1]
    covered = s[:, n:] <= q[:, None]
    expected = k / (n + 1)
    assert covered.mean() == pytest.approx(expected, abs=0.006)
    # and the library's quantile is that one
    for row in range(5):
        assert conformal.conformal_quantile(s[row, :n], alpha) == q[row]


def test_normalised_intervals_cover_the_level_on_held_out_data() -> None:
    rng = np.random.default_rng(7)
    alpha = 0.2
    rates = []
    widths_low_x, widths_high_x = [], []
    for _ in range(200):
        x, scale, y = _heteroscedastic(rng, (1_000,))
        calib, test = slice(0, 300), slice(300, None)
        prediction = 3.0 * x + 0.1  # a slightly biased model
        q = conformal.conformal_quantile(
            conformal.scores(y[calib], prediction[calib], scale[calib], 1e-6), alpha
        )
        low, high = conformal.intervals(prediction[test], scale[test], q, 1e-6)
        rates.append(conformal.coverage(y[test], low, high))
        width = high - low
        widths_low_x.append(width[x[test] < 2].mean())
        widths_high_x.append(width[x[test] > 8].mean())
    # between 1 - alpha and 1 - alpha + 1/(n + 1), up to Monte Carlo error
    assert 0.8 - 0.005 <= float(np.mean(rates)) <= 0.8 + 1 / 301 + 0.005
    assert np.mean(widths_high_x) > 4 * np.mean(widths_low_x)  # adaptive


def test_a_misscaled_model_still_covers_marginally() -> None:
    # a useless scale (constant) loses adaptivity, not coverage
    rng = np.random.default_rng(8)
    rates = []
    for _ in range(200):
        x, _, y = _heteroscedastic(rng, (800,))
        ones = np.ones_like(x)
        q = conformal.conformal_quantile(
            conformal.scores(y[:200], 3 * x[:200], ones[:200], 1.0), 0.2
        )
        low, high = conformal.intervals(3 * x[200:], ones[200:], q, 1.0)
        rates.append(conformal.coverage(y[200:], low, high))
    assert float(np.mean(rates)) == pytest.approx(0.8, abs=0.01)
