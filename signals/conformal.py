"""Split conformal prediction intervals, normalised by a per-case scale: pure functions.

A point model ``mu`` and a scale model ``sigma`` (how wrong ``mu`` tends to be at ``x``) are
fitted on one part of the data; on a *calibration* part they never saw, the nonconformity score
of each case is ``|y - mu(x)| / sigma(x)``. With ``n`` calibration scores and miscoverage
``alpha``, the interval of a new case is ``mu(x) ± q · sigma(x)`` where ``q`` is the
``k``-th smallest score, ``k = ceil((n + 1)(1 - alpha))`` (the finite-sample quantile). When the
calibration and new cases are exchangeable, the interval contains the truth with probability
at least ``1 - alpha`` (and at most ``1 - alpha + 1/(n + 1)`` when the scores have no ties);
Lei, G'Sell, Rinaldo, Tibshirani, Wasserman, "Distribution-free predictive inference for
regression", JASA 2018, and Papadopoulos et al. 2002 for the normalised score.

Decisions:

- ``k > n`` (too few calibration cases for the level: ``n < 1/alpha - 1``): ``q`` is infinite,
  the interval is everything. Said, not hidden: :func:`conformal_quantile` returns ``inf``.
- ``n = 0`` is the same case (``k = 1 > 0``).
- A scale below ``floor`` is raised to it, at calibration and at prediction alike (a scale
  model predicting 0 would make a score infinite or an interval empty).
- Intervals may be clipped to the range the truth can take (``lower``/``upper``): clipping never
  removes a possible truth, so coverage is unchanged.
- Calibration cases from one machine are not independent of each other; the guarantee holds for
  a new machine when *machines* are exchangeable, which is why callers split calibration by
  machine (``signals.remaining_life``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def quantile_rank(n: int, alpha: float) -> int:
    """``ceil((n + 1)(1 - alpha))``: the rank (1-based) of the calibration score used as ``q``.

    The product is rounded to 12 decimals first so that e.g. ``(9 + 1) · 0.8`` is 8, not 9
    (``10 * 0.8 = 8.000000000000002`` in floating point)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return math.ceil(round((n + 1) * (1.0 - alpha), 12))


def conformal_quantile(scores: npt.ArrayLike, alpha: float) -> float:
    """The finite-sample conformal quantile of ``scores`` (``inf`` when there are fewer than
    ``ceil((n + 1)(1 - alpha))`` of them). NaN scores are refused."""
    values = np.sort(np.asarray(scores, dtype=float).ravel())
    if np.isnan(values).any():
        raise ValueError("calibration scores contain NaN")
    k = quantile_rank(len(values), alpha)
    if k > len(values):
        return math.inf
    return float(values[k - 1])


def scores(
    y: npt.ArrayLike, prediction: npt.ArrayLike, scale: npt.ArrayLike, floor: float
) -> Array:
    """Normalised nonconformity scores ``|y - prediction| / max(scale, floor)``."""
    if floor <= 0:
        raise ValueError("floor must be positive")
    y_, p_, s_ = (np.asarray(a, dtype=float) for a in (y, prediction, scale))
    return np.asarray(np.abs(y_ - p_) / np.maximum(s_, floor), dtype=float)


def intervals(
    prediction: npt.ArrayLike,
    scale: npt.ArrayLike,
    q: float,
    floor: float,
    lower: float = -math.inf,
    upper: float = math.inf,
) -> tuple[Array, Array]:
    """``prediction ± q · max(scale, floor)``, clipped to ``[lower, upper]``."""
    p_ = np.asarray(prediction, dtype=float)
    half = q * np.maximum(np.asarray(scale, dtype=float), floor)
    with np.errstate(invalid="ignore"):  # inf · 0 cannot happen: the floor is positive
        low = np.clip(p_ - half, lower, upper)
        high = np.clip(p_ + half, lower, upper)
    return np.asarray(low, dtype=float), np.asarray(high, dtype=float)


def coverage(y: npt.ArrayLike, low: npt.ArrayLike, high: npt.ArrayLike) -> float:
    """Share of cases whose truth lies in ``[low, high]`` (NaN for no cases)."""
    y_, lo, hi = (np.asarray(a, dtype=float) for a in (y, low, high))
    if y_.size == 0:
        return math.nan
    return float(np.mean((y_ >= lo) & (y_ <= hi)))


def mean_width(low: npt.ArrayLike, high: npt.ArrayLike) -> float:
    """Mean of ``high - low`` (NaN for no cases)."""
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if lo.size == 0:
        return math.nan
    return float(np.mean(hi - lo))
