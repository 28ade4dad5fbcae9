"""Remaining useful life: running hours to the next failure, with an interval whose coverage is
measured (issue 13 item 3).

**Target.** Running hours from a snapshot to the asset's next ``failure`` event (its hour
included, ``signals.failure_data.outcomes``), capped at ``CAP_RH`` = 125: the C-MAPSS
convention (Heimes 2008; Zheng et al. 2017 use 125-130), under which an engine far from failure
has remaining life "125 or more" and the figures published for C-MAPSS (RMSE 12-18) are
comparable. The cap also labels healthy history: a snapshot followed by ``CAP_RH`` running hours
without a failure before the cut-off has target exactly ``CAP_RH``, so the model learns from
assets that did not fail as well as from run-to-failure histories. Snapshots less than
``CAP_RH`` clock hours before the cut-off are left out (as ``failure_model.label`` does with its
horizon: otherwise recent snapshots could only be labelled by a failure). Every snapshot with a
target also has a ``failure_model`` label, so the two models train on the same read.

**Model.** ``HistGradientBoostingRegressor`` on ``signals.failure_features``' features (the one
feature function of training and scoring), squared loss, 200 iterations at learning rate 0.05,
no early stopping, ``random_state=0``, on one OpenMP thread (:func:`one_thread`); the central
estimate is its prediction clipped to ``[0, CAP_RH]``. One configuration for every fleet and
data set (``bench/rul.py`` runs it unchanged on C-MAPSS and Azure).

**Interval: normalised split conformal** (``signals.conformal``). The assets are split by a
hash of their id: ``CALIBRATION_SHARE`` of them (at least one, and one is always left to fit on)
are calibration assets, never seen by either model, so a calibration asset is as new as a
scored one. On the others, the point model is fitted, and a *scale* model (the same regressor
on the absolute residuals of the point model's out-of-fold predictions, two folds by asset)
learns how wrong the point model tends to be where. Calibration scores are
``|y - central| / max(scale, SCALE_FLOOR_RH)``; ``q`` is their ``ceil((n+1)·LEVEL)``-th
smallest; an interval is ``central ± q · scale`` clipped to ``[0, CAP_RH]`` (an upper end at the
cap reads "125 or more"). Coverage holds for new assets exchangeable with the calibration
assets; snapshots of one asset are correlated, so the effective calibration size is nearer the
number of calibration assets than of snapshots. ``bench/rul.py`` measures coverage and RMSE by
leave-engines-out cross-validation on C-MAPSS FD001 and on the Azure machines.

Fewer than ``MIN_FAILURES`` failures with a target, or fewer than two assets: no model.
The calibration split is part of the price of honesty: the point model sees about 70 % of the
fleet's histories.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from signals import conformal
from signals.failure_data import Outcome, Snapshots

Array = npt.NDArray[np.float64]
CAP_RH = 125.0
LEVEL = 0.8
CALIBRATION_SHARE = 0.3
SCALE_FLOOR_RH = 2.0
MIN_FAILURES = 5
SEED = 0


@contextmanager
def one_thread() -> Iterator[None]:
    """scikit-learn's OpenMP threads limited to one while fitting and predicting: on this
    2-core machine shared with the database and other work, two spinning OpenMP threads made a
    fit 10-30 times slower than one thread (``tests/signals/test_remaining_life.py``'s fit:
    13-33 s with two threads under load, 1.0-2.6 s with one)."""
    import sklearn.ensemble  # noqa: F401 - loads the OpenMP runtime the limit must reach
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def target(outcome: Outcome) -> float | None:
    """Running hours to the next failure capped at ``CAP_RH``; ``None`` when not known."""
    if outcome.clock_hours_left < CAP_RH:
        return None
    if math.isfinite(outcome.to_failure):
        return min(max(outcome.to_failure, 0.0), CAP_RH)
    if outcome.observed >= CAP_RH:
        return CAP_RH
    return None


@dataclass
class RemainingLifeModel:
    """Point and scale regressors with the calibrated conformal quantile ``q``."""

    point: Any
    scale: Any
    q: float
    level: float = LEVEL
    cap: float = CAP_RH
    summary: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: Array) -> tuple[Array, Array, Array]:
        """(central, low, high) running hours to failure for each row of ``x``."""
        with one_thread():
            central = np.clip(self.point.predict(x), 0.0, self.cap)
            scale = self.scale.predict(x)
        low, high = conformal.intervals(central, scale, self.q, SCALE_FLOOR_RH, 0.0, self.cap)
        return np.asarray(central, dtype=float), low, high


def _regressor(categorical: npt.NDArray[np.bool_] | None) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        early_stopping=False,  # "auto" would hold out random rows above 10,000: not by asset
        categorical_features=categorical if categorical is not None and categorical.any() else None,
        random_state=SEED,
    )


def _ready(x: Array) -> Array:
    """A column no row has (all NaN) as a constant: scikit-learn's binning needs a value."""
    ready = x.copy()
    ready[:, np.isnan(ready).all(axis=0)] = 0.0
    return ready


def _order(group: str) -> str:
    return hashlib.sha256(group.encode()).hexdigest()


def split_groups(groups: list[str], share: float = CALIBRATION_SHARE) -> tuple[set[str], set[str]]:
    """(fit groups, calibration groups): ``share`` of the distinct groups, chosen by a hash of
    their name (the same split at every training), at least one of each when there are two."""
    distinct = sorted(set(groups), key=_order)
    if len(distinct) < 2:
        return set(distinct), set()
    n_cal = min(len(distinct) - 1, max(1, round(share * len(distinct))))
    return set(distinct[n_cal:]), set(distinct[:n_cal])


def fit(
    x: Array,
    y: Array,
    groups: list[str],
    categorical: npt.NDArray[np.bool_] | None = None,
    level: float = LEVEL,
) -> RemainingLifeModel | None:
    """Fit the point and scale models on the fit groups and calibrate on the others (``None``:
    fewer than two groups or a group split leaving a side empty)."""
    with one_thread():
        return _fit(x, y, groups, categorical, level)


def _fit(
    x: Array,
    y: Array,
    groups: list[str],
    categorical: npt.NDArray[np.bool_] | None,
    level: float,
) -> RemainingLifeModel | None:
    fit_groups, cal_groups = split_groups(groups)
    if not cal_groups:
        return None
    g = np.array(groups)
    on_fit = np.isin(g, sorted(fit_groups))
    on_cal = ~on_fit
    xf, yf, gf = x[on_fit], y[on_fit], g[on_fit]
    point = _regressor(categorical).fit(_ready(xf), yf)
    # out-of-fold residuals (two folds by group) for the scale model
    ordered = sorted(fit_groups, key=_order)
    residual = np.abs(yf - np.clip(point.predict(_ready(xf)), 0.0, CAP_RH))
    if len(ordered) >= 2:
        fold = np.isin(gf, ordered[::2])
        for train_mask in (fold, ~fold):
            half = _regressor(categorical).fit(_ready(xf[train_mask]), yf[train_mask])
            held = ~train_mask
            residual[held] = np.abs(yf[held] - np.clip(half.predict(_ready(xf[held])), 0.0, CAP_RH))
    scale = _regressor(categorical).fit(_ready(xf), residual)
    unfitted = RemainingLifeModel(point, scale, math.inf, level)
    central, _, _ = unfitted.predict(x[on_cal])
    calibration = conformal.scores(y[on_cal], central, scale.predict(x[on_cal]), SCALE_FLOOR_RH)
    q = conformal.conformal_quantile(calibration, 1.0 - level)
    return RemainingLifeModel(
        point,
        scale,
        q,
        level,
        CAP_RH,
        {
            "fit_snapshots": int(on_fit.sum()),
            "fit_assets": len(fit_groups),
            "calibration_snapshots": int(on_cal.sum()),
            "calibration_assets": len(cal_groups),
            "conformal_quantile": round(q, 4) if math.isfinite(q) else None,
            "interval_level": level,
            "cap_running_hours": CAP_RH,
        },
    )


def from_snapshots(snapshots: Snapshots) -> RemainingLifeModel | None:
    """The model trained on the snapshots whose target is known (``None``: fewer than
    ``MIN_FAILURES`` failures reached within the cap, or too few assets)."""
    targets = [target(o) for o in snapshots.outcomes]
    keep = np.array([t is not None for t in targets], dtype=bool)
    if not keep.any():
        return None
    failures = {
        (a, o.failure_at)
        for a, o, t in zip(snapshots.assets, snapshots.outcomes, targets, strict=True)
        if t is not None and t < CAP_RH
    }
    if len(failures) < MIN_FAILURES:
        return None
    y = np.array([t for t in targets if t is not None], dtype=float)
    groups = [a for a, k in zip(snapshots.assets, keep, strict=True) if k]
    model = fit(snapshots.x[keep], y, groups, snapshots.spec.categorical)
    if model is not None:
        model.summary["failures"] = len(failures)
    return model


def phrase(low: float, high: float, level: float, cap: float = CAP_RH) -> str:
    """ "fails in 40–90 running hours (80 %)"; an upper end at the cap reads "125+", a lower
    end at 0 "within"."""
    upper = f"{high:.0f}+" if high >= cap else f"{high:.0f}"
    share = f"({level * 100:.0f} %)"
    if low <= 0.5 and high < cap:
        return f"fails within {upper} running hours {share}"
    return f"fails in {low:.0f}–{upper} running hours {share}"
