"""When the fleet really replaces a component, relative to its rated life: the horizon of
``service_due``'s promise, learnt from the replacements on record (pure: numbers in, numbers out).

A service organisation does not replace a part the hour its rated life runs out: it replaces it
at a planned visit, some hundreds of running hours before or after (the simulator's plan: a
visit every 2,000 running hours, each part replaced at the first visit within 1,000 h of its
rated life). An alert that promised the replacement within the days left to the rated limit was
right about one time in seven. So the promise is made from what the fleet did: the **lag** of a
replacement is the component's running hours since its previous replacement minus its rated
life (negative: replaced early), and the lags of one component kind are a survival sample.

**Censoring.** A component not yet replaced is a lag still running: it counts as right-censored
at its current lag (Kaplan-Meier), so a fleet whose late replacements have not happened yet does
not make the lags look shorter than they are.

**The promise** for a component at lag ``x`` (:meth:`ReplacementLags.promise`): the smallest
``h`` such that, of the components of its kind still in service at lag ``x``, the share
replaced by ``x + h`` reaches :data:`COVERAGE`: ``1 - S(x + h) / S(x) >= COVERAGE``, ``S`` the
Kaplan-Meier survival of the lags. It is made only once the component has entered the fleet's
replacement window - at least :data:`WINDOW_OPENS` of its kind replaced by its lag - and only
when the sample reaches that coverage past ``x`` (a censored tail makes no promise).

**Pooling.** A kind with fewer than :data:`MIN_REPLACEMENTS` replacements on record uses the
lags of every kind together (in hours: the lag comes from the visit plan, not the part); fewer
than that in all gives no promise (``signals.wear_findings`` then falls back to the rated-life
rule).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

COVERAGE = 0.8  # the promise: this share of such components is replaced within the horizon
WINDOW_OPENS = 0.1  # promise once this share of the kind has been replaced by the lag
MIN_REPLACEMENTS = 10  # replacements on record before a kind has its own lags
POOLED = ""  # the key of every kind's lags together


@dataclass(frozen=True)
class LagObservation:
    """One component's lag in running hours (time in service minus rated life): ``replaced``
    when a replacement ended it, else still running (censored)."""

    kind: str
    lag_hours: float
    replaced: bool


@dataclass(frozen=True)
class LagPromise:
    """A component's promised replacement: within ``horizon_hours`` running hours from now,
    with probability ``coverage`` by the fleet's record; ``replaced_share`` of its kind were
    replaced by its current lag; the fleet's replacements seen (``replacements``, of
    ``basis``: the kind or ``"all kinds"``) and their middle lags (``lag_p10_hours``,
    ``lag_p90_hours``, by Kaplan-Meier)."""

    horizon_hours: float
    coverage: float
    replaced_share: float
    replacements: int
    basis: str
    lag_p10_hours: float
    lag_p90_hours: float


@dataclass(frozen=True)
class _Survival:
    """Kaplan-Meier survival of lags: ``survival[i]`` just after ``times[i]``."""

    times: tuple[float, ...]
    survival: tuple[float, ...]
    replacements: int

    def at(self, lag: float) -> float:
        """S(lag): the share still in service after ``lag`` (inclusive of replacements at it)."""
        value = 1.0
        for time, surviving in zip(self.times, self.survival, strict=True):
            if time > lag:
                break
            value = surviving
        return value

    def quantile(self, share: float) -> float:
        """The smallest lag by which ``share`` of the kind was replaced (``inf``: never)."""
        for time, surviving in zip(self.times, self.survival, strict=True):
            if 1.0 - surviving >= share - 1e-12:
                return time
        return math.inf


def _kaplan_meier(observations: Iterable[tuple[float, bool]]) -> _Survival:
    by_time: dict[float, list[int]] = defaultdict(lambda: [0, 0])  # lag -> [replaced, censored]
    for lag, ended in observations:
        by_time[lag][0 if ended else 1] += 1
    at_risk = sum(r + c for r, c in by_time.values())
    surviving, times, survival, replacements = 1.0, [], [], 0
    for lag in sorted(by_time):
        replaced, censored = by_time[lag]
        if replaced:
            surviving *= 1.0 - replaced / at_risk
            times.append(lag)
            survival.append(surviving)
            replacements += replaced
        at_risk -= replaced + censored
    return _Survival(tuple(times), tuple(survival), replacements)


@dataclass(frozen=True)
class ReplacementLags:
    """The fleet's replacement lags per component kind (:meth:`fit`), and the promise they
    give a component (:meth:`promise`)."""

    by_kind: dict[str, _Survival]

    @classmethod
    def fit(cls, observations: Iterable[LagObservation]) -> ReplacementLags:
        grouped: dict[str, list[tuple[float, bool]]] = defaultdict(list)
        for o in observations:
            grouped[o.kind].append((o.lag_hours, o.replaced))
            grouped[POOLED].append((o.lag_hours, o.replaced))
        return cls({kind: _kaplan_meier(rows) for kind, rows in grouped.items()})

    def knows(self, kind: str) -> bool:
        """Whether the record has enough replacements to promise anything about ``kind``
        (its own or, pooled, every kind's)."""
        return any(
            s is not None and s.replacements >= MIN_REPLACEMENTS
            for s in (self.by_kind.get(kind), self.by_kind.get(POOLED))
        )

    def promise(self, kind: str, lag_hours: float) -> LagPromise | None:
        """The promise for a component of ``kind`` at ``lag_hours`` (see the module
        docstring), or ``None``: too little history, not yet in the replacement window, or no
        lag in the record reaching the coverage past it."""
        basis, survival = kind, self.by_kind.get(kind)
        if survival is None or survival.replacements < MIN_REPLACEMENTS:
            basis, survival = "all kinds", self.by_kind.get(POOLED)
        if survival is None or survival.replacements < MIN_REPLACEMENTS:
            return None
        still = survival.at(lag_hours)
        if 1.0 - still < WINDOW_OPENS - 1e-12 or still <= 0.0:
            return None
        for time, surviving in zip(survival.times, survival.survival, strict=True):
            if time > lag_hours and 1.0 - surviving / still >= COVERAGE - 1e-12:
                return LagPromise(
                    time - lag_hours,
                    COVERAGE,
                    1.0 - still,
                    survival.replacements,
                    basis,
                    survival.quantile(0.1),
                    survival.quantile(0.9),
                )
        return None
