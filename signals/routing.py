"""Which new alerts interrupt a CSM at once and which wait for the weekly digest, and the
measured precision per kind that decides it.

An alert always opens (``signals.alerts``): it is listed by ``basewatch alerts list``, the API
and the pages whatever its delivery. What is decided here is only how its owner hears of it:

- **immediate**: its email and webhook are enqueued when it opens (``signals.delivery``);
- **digest**: it is held for the owner's weekly digest (``signals.digest``), which lists the
  alerts held since the last digest first.

The rules (:func:`route`), for the alerts one scoring pass opens, highest expected value first:

1. **Precision gate.** A kind whose latest measured precision is below ``min_precision``
   (``BASEWATCH_ALERT_MIN_PRECISION``, default 0.5) goes to the digest: most of its alerts
   have been false, and a CSM who is wrong-footed twice stops reading. The precision is the
   backtest's ``precision_decided``: true alerts over the alerts the data could judge. An
   alert whose window reached past the end of the replayed data is pending, neither true nor
   false, and does not count against its kind (counting it false would hold back a kind with
   a long horizon just because its latest alerts had not come due).
2. **Unmeasured kinds go to the digest.** A kind the backtest has not measured (no row in
   ``kind_precision``, or a row without a decided precision because the backtest had no truth
   for it or all its alerts were pending) has not shown it deserves an interruption;
   ``basewatch signals backtest`` measures it. A newly added or renamed kind is unmeasured
   until the next backtest.
3. **Weekly budget.** At most ``weekly_budget`` (``BASEWATCH_ALERT_WEEKLY_BUDGET``, default 2)
   immediate alerts per CSM in any rolling 7 days (:data:`BUDGET_WINDOW`), counted over the
   alerts opened in the 7 days up to now with delivery ``immediate``; within one pass the
   higher expected values take the budget first. The rest go to the digest.
4. An alert whose account has no CSM has no budget to count against: it passes or fails the
   gate alone (and has nobody to be sent to: ``signals.alerts`` logs it).

Reminders after a snooze are not new alerts and are not counted. Each alert keeps its decision
and the reason in words (``delivery``, ``delivery_reason``), shown by ``alerts list`` and in
its JSON.

The measured precision is the backtest's (``signals.backtest``): :func:`record_precision`
stores one row per kind of a :class:`~signals.backtest.BacktestResult` in ``kind_precision``
and :func:`latest_precision` reads the latest row per kind. :class:`Budget`, :func:`route`,
:func:`route_in_order` and :func:`delivery_load` are pure, so the backtest's in-memory replay
can route its raised alerts with the same rules (``route_in_order``: pass by pass, one rolling
budget) and count the immediate and digest alerts per CSM (``delivery_load``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import TupleRow

if TYPE_CHECKING:
    from signals.backtest import BacktestResult

IMMEDIATE = "immediate"
DIGEST = "digest"
NO_CSM = "(no CSM)"  # delivery_load's key for the alerts of accounts without a CSM
BUDGET_WINDOW = dt.timedelta(days=7)
MIN_PRECISION = 0.5
WEEKLY_BUDGET = 2


@dataclass(frozen=True)
class Routing:
    """The gate's inputs: the latest measured precision per kind (a kind absent or None is
    unmeasured), the least precision for an immediate alert, and the weekly budget."""

    precision: Mapping[str, float | None]
    min_precision: float = MIN_PRECISION
    weekly_budget: int = WEEKLY_BUDGET


@dataclass(frozen=True)
class Candidate:
    """A new alert to route: ``key`` identifies it to the caller (an alert id)."""

    key: int
    kind: str
    owner: str | None
    expected_value: Decimal


@dataclass(frozen=True)
class Route:
    """How one alert reaches its CSM: ``delivery`` is :data:`IMMEDIATE` or :data:`DIGEST`."""

    delivery: str
    reason: str


class Budget:
    """The immediate alerts each CSM received, to count them over the rolling window (pure,
    in memory): seeded with earlier immediate alerts' opening times, taken as alerts are
    routed."""

    def __init__(
        self, weekly: int, sent: Mapping[str, Iterable[dt.datetime]] | None = None
    ) -> None:
        self.weekly = weekly
        self._sent: dict[str, list[dt.datetime]] = defaultdict(list)
        for owner, times in (sent or {}).items():
            self._sent[owner].extend(times)

    def used(self, owner: str, now: dt.datetime) -> int:
        """Immediate alerts of ``owner`` opened in ``(now - 7 days, now]``."""
        return sum(now - BUDGET_WINDOW < t <= now for t in self._sent.get(owner, ()))

    def take(self, owner: str, now: dt.datetime) -> None:
        self._sent[owner].append(now)


def route(
    candidates: Sequence[Candidate], routing: Routing, budget: Budget, now: dt.datetime
) -> dict[int, Route]:
    """Pure: the delivery of each candidate (the rules of the module docstring), by key;
    ``budget`` takes the immediate ones."""
    routes: dict[int, Route] = {}
    floor = f"{routing.min_precision:.0%}"
    for c in sorted(candidates, key=lambda c: (-c.expected_value, c.key)):
        measured = routing.precision.get(c.kind)
        if measured is None:
            routes[c.key] = Route(
                DIGEST,
                f"{c.kind} has no measured precision yet (basewatch signals backtest measures "
                "it): held for the digest",
            )
        elif measured < routing.min_precision:
            routes[c.key] = Route(
                DIGEST,
                f"{c.kind}'s measured precision {measured:.0%} is below {floor}: held for the "
                "digest",
            )
        elif c.owner is None:
            routes[c.key] = Route(
                IMMEDIATE, f"{c.kind}'s measured precision {measured:.0%} ≥ {floor}; no CSM"
            )
        elif budget.used(c.owner, now) >= budget.weekly:
            routes[c.key] = Route(
                DIGEST,
                f"weekly budget used: {c.owner} had {budget.weekly} immediate alerts in the "
                "last 7 days (higher expected values first): held for the digest",
            )
        else:
            budget.take(c.owner, now)
            routes[c.key] = Route(
                IMMEDIATE,
                f"{c.kind}'s measured precision {measured:.0%} ≥ {floor}; immediate alert "
                f"{budget.used(c.owner, now)} of {budget.weekly} in 7 days",
            )
    return routes


def route_in_order(
    raised: Iterable[tuple[dt.datetime, Candidate]], routing: Routing
) -> dict[int, Route]:
    """Pure: route alerts raised over time (a replay's, each with its raise time) pass by pass
    in time order, as the lifecycle would, with one rolling budget per CSM; by key."""
    passes: dict[dt.datetime, list[Candidate]] = defaultdict(list)
    for at, candidate in raised:
        passes[at].append(candidate)
    budget = Budget(routing.weekly_budget)
    routes: dict[int, Route] = {}
    for at in sorted(passes):
        routes.update(route(passes[at], routing, budget, at))
    return routes


def delivery_load(
    raised: Iterable[tuple[dt.datetime, Candidate]], routes: Mapping[int, Route]
) -> dict[str, dict[str, int]]:
    """Pure: per CSM (:data:`NO_CSM` for none), how many of the alerts were immediate and how
    many held for the digest, and the most immediate ones in any 7 days (``max_7_days``)."""
    load: dict[str, dict[str, int]] = defaultdict(
        lambda: {IMMEDIATE: 0, DIGEST: 0, "max_7_days": 0}
    )
    times: dict[str, list[dt.datetime]] = defaultdict(list)
    for at, c in raised:
        owner = c.owner or NO_CSM
        load[owner][routes[c.key].delivery] += 1
        if routes[c.key].delivery == IMMEDIATE:
            times[owner].append(at)
    for owner, sent in times.items():
        sent.sort()
        load[owner]["max_7_days"] = max(sum(t <= u < t + BUDGET_WINDOW for u in sent) for t in sent)
    return {owner: load[owner] for owner in sorted(load)}


# -- measured precision -----------------------------------------------------------------------

_INSERT = """
INSERT INTO kind_precision (kind, measured_at, period_from, period_to, step_hours, alerts,
                            true_alerts, precision, chance_precision, truth, decided_alerts,
                            precision_decided)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (kind, measured_at) DO UPDATE
SET period_from = EXCLUDED.period_from, period_to = EXCLUDED.period_to,
    step_hours = EXCLUDED.step_hours, alerts = EXCLUDED.alerts,
    true_alerts = EXCLUDED.true_alerts, precision = EXCLUDED.precision,
    chance_precision = EXCLUDED.chance_precision, truth = EXCLUDED.truth,
    decided_alerts = EXCLUDED.decided_alerts, precision_decided = EXCLUDED.precision_decided
"""
_LATEST = """
SELECT DISTINCT ON (kind) kind, measured_at, period_from, period_to, alerts, true_alerts,
       precision, chance_precision, truth,
       CASE WHEN decided_alerts IS NULL THEN precision ELSE precision_decided END
FROM kind_precision
ORDER BY kind, measured_at DESC
"""


def record_precision(
    conn: psycopg.Connection[TupleRow], result: BacktestResult, measured_at: dt.datetime
) -> int:
    """Store the precision of every kind of a backtest (one row per kind, a kind without a
    precision stored as such); returns the rows written. Commits unless the caller has a
    transaction open."""
    step_hours = result.step / dt.timedelta(hours=1)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            _INSERT,
            [
                (
                    k.kind,
                    measured_at,
                    result.start,
                    result.end,
                    step_hours,
                    k.alerts,
                    k.true_alerts,
                    k.precision,
                    k.chance_precision,
                    k.truth,
                    k.decided_alerts,
                    k.precision_decided,
                )
                for k in result.kinds
            ],
        )
    return len(result.kinds)


def latest_precision(conn: psycopg.Connection[TupleRow]) -> dict[str, float | None]:
    """The latest measured precision of every kind measured, over its decided alerts (None:
    measured without truth, or every alert still pending). Rows recorded before the decided
    figures were (``decided_alerts`` NULL) give their precision over all alerts."""
    return {str(r[0]): r[9] for r in conn.execute(_LATEST)}


def load_routing(
    conn: psycopg.Connection[TupleRow],
    min_precision: float = MIN_PRECISION,
    weekly_budget: int = WEEKLY_BUDGET,
) -> Routing:
    """The gate with the stored precision."""
    return Routing(latest_precision(conn), min_precision, weekly_budget)
