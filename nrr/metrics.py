"""Retention formulas on plain data (pure, no I/O): NRR, GRR and logo retention.

Ratios are ``Decimal`` fractions (``1.075`` is 107.5 %) or ``None`` when the cohort is empty
or its starting MRR is 0: an absent figure, never 0 or 100 %.

* Month over month (cohort: MRR_{t-1} > 0, constant currency):
  NRR = (start + expansion - contraction - churn) / start, GRR = (start - contraction - churn) /
  start, logo retention = accounts still > 0 / cohort size.
* Trailing window of W months (12: T12M; 3: quarter over quarter), cohort MRR_{t-W} > 0:
  NRR = Σ MRR_t / Σ MRR_{t-W}, GRR = Σ min(MRR_t, MRR_{t-W}) / Σ MRR_{t-W}, logo retention =
  share of the cohort with MRR_t > 0, MRR_t in constant currency at the rates of t-W. An account
  that churned and came back inside the window counts at its MRR_t; one that is new inside the
  window is not in the cohort.

Check figures (DESIGN.md): start 1,000,000, churn 75,000, contraction 50,000, expansion 200,000
-> NRR 107.5 %, GRR 87.5 %.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from core.money import ZERO, ratio
from nrr.bridge import Bridge


def net_and_gross(
    start: Decimal, expansion: Decimal, contraction: Decimal, churn: Decimal
) -> tuple[Decimal | None, Decimal | None]:
    """(NRR, GRR) of a cohort that started at ``start``."""
    gross = start - contraction - churn
    return ratio(gross + expansion, start), ratio(gross, start)


@dataclass(frozen=True)
class MonthOverMonth:
    """Month-over-month retention of month ``month`` from its bridge."""

    month: dt.date
    start: Decimal
    expansion: Decimal
    contraction: Decimal
    churn: Decimal
    cohort_size: int
    retained_logos: int

    @classmethod
    def from_bridge(cls, bridge: Bridge) -> MonthOverMonth:
        return cls(
            bridge.month,
            bridge.start,
            bridge.expansion,
            bridge.contraction,
            bridge.churn,
            bridge.cohort_size,
            bridge.retained_logos,
        )

    @property
    def nrr(self) -> Decimal | None:
        return net_and_gross(self.start, self.expansion, self.contraction, self.churn)[0]

    @property
    def grr(self) -> Decimal | None:
        return net_and_gross(self.start, self.expansion, self.contraction, self.churn)[1]

    @property
    def logo_retention(self) -> Decimal | None:
        return ratio(Decimal(self.retained_logos), Decimal(self.cohort_size))


@dataclass(frozen=True)
class Trailing:
    """Retention of the cohort with MRR > 0 ``window_months`` before ``month``."""

    month: dt.date
    window_months: int
    cohort_size: int = 0
    start_mrr: Decimal = ZERO
    end_mrr: Decimal = ZERO
    retained_mrr: Decimal = ZERO
    retained_logos: int = 0

    @property
    def expansion(self) -> Decimal:
        """Σ max(MRR_t - MRR_{t-W}, 0) over the cohort."""
        return self.end_mrr - self.retained_mrr

    @property
    def nrr(self) -> Decimal | None:
        return ratio(self.end_mrr, self.start_mrr) if self.cohort_size else None

    @property
    def grr(self) -> Decimal | None:
        return ratio(self.retained_mrr, self.start_mrr) if self.cohort_size else None

    @property
    def logo_retention(self) -> Decimal | None:
        return ratio(Decimal(self.retained_logos), Decimal(self.cohort_size))


def trailing_from_pairs(
    month: dt.date, window_months: int, pairs: Iterable[tuple[Decimal, Decimal]]
) -> Trailing:
    """Trailing retention from (MRR_{t-W}, MRR_t) per account; accounts with MRR_{t-W} <= 0 are
    not in the cohort."""
    size = retained_logos = 0
    start = end = retained = ZERO
    for then, now in pairs:
        if then <= 0:
            continue
        size += 1
        start += then
        end += now
        retained += min(now, then)
        retained_logos += now > 0
    return Trailing(month, window_months, size, start, end, retained, retained_logos)
