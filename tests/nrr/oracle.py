"""The test oracle of MRR movements and the monthly bridge: the definitions on plain data (pure,
no I/O), computed account by account the obvious way.

Production computes movements in SQL only (``nrr.bridge``, whose docstring has the
definitions); the tests hold that set-based query to this line-by-line reading of the same
definitions, hand-worked and over random histories (tests/nrr/test_movements_sql.py). It lived
in ``nrr`` as ``nrr.movements`` until the only thing production used from it, the
:class:`~nrr.bridge.Bridge` type, moved to ``nrr.bridge``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from core.money import ZERO, convert
from core.months import add_months, months_between
from nrr.bridge import Bridge

KINDS = ("new", "reactivation", "expansion", "contraction", "churn", "none")
ADDING = ("new", "reactivation", "expansion")


@dataclass(frozen=True)
class Movement:
    """One account's movement in one month; money in the reporting currency."""

    kind: str
    amount: Decimal
    fx: Decimal
    previous_mrr: Decimal
    mrr: Decimal
    constant_currency_mrr: Decimal

    @property
    def signed_amount(self) -> Decimal:
        return self.amount if self.kind in ADDING else -self.amount


def classify(
    previous: Decimal, current: Decimal, constant_currency: Decimal, positive_before: bool
) -> Movement:
    """The movement from ``previous`` (MRR_{t-1}) to ``current`` (MRR_t), measured with
    ``constant_currency`` (MRR_t at t-1's rates); ``positive_before``: MRR > 0 in some month
    before t-1."""
    if previous <= 0 and current <= 0:
        return Movement("none", ZERO, ZERO, ZERO, ZERO, ZERO)
    fx = current - constant_currency
    if previous <= 0:
        kind = "reactivation" if positive_before else "new"
        return Movement(kind, constant_currency, fx, previous, current, constant_currency)
    if current <= 0:
        return Movement("churn", previous, ZERO, previous, current, ZERO)
    delta = constant_currency - previous
    kind = "expansion" if delta > 0 else "contraction" if delta < 0 else "none"
    return Movement(kind, abs(delta), fx, previous, current, constant_currency)


def series_kinds(series: Sequence[Decimal]) -> list[str]:
    """Movement kinds of one single-currency MRR series, the month before the first being 0.
    ``100, 100, 0, 0, 120, 150, 0`` -> new, none, churn, none, reactivation, expansion, churn."""
    kinds: list[str] = []
    previous = ZERO
    positive_before = False
    for current in series:
        kinds.append(classify(previous, current, current, positive_before).kind)
        positive_before = positive_before or previous > 0
        previous = current
    return kinds


@dataclass(frozen=True)
class LedgerLine:
    """One ledger line as plain data: MRR in the line's currency for an account and month."""

    account_id: str
    month: dt.date
    currency: str
    fixed_local: Decimal
    metered_local: Decimal

    def at(self, rate: Decimal) -> Decimal:
        """The line in the reporting currency at ``rate``, fixed and metered each to the cent."""
        return convert(self.fixed_local, rate) + convert(self.metered_local, rate)


class Rates:
    """Exchange rates by (month, currency); the reporting currency is 1."""

    def __init__(self, rates: Mapping[tuple[dt.date, str], Decimal], reporting: str) -> None:
        self.rates = rates
        self.reporting = reporting

    def get(self, month: dt.date, currency: str) -> Decimal | None:
        if currency == self.reporting:
            return Decimal(1)
        return self.rates.get((month, currency))

    def of(self, month: dt.date, currency: str) -> Decimal:
        rate = self.get(month, currency)
        if rate is None:
            raise KeyError(f"no rate for {currency} in {month:%Y-%m}")
        return rate

    def earlier_or_same(self, earlier: dt.date, month: dt.date, currency: str) -> Decimal:
        """The rate of ``earlier`` for constant-currency figures, else ``month``'s own."""
        rate = self.get(earlier, currency)
        return rate if rate is not None else self.of(month, currency)


def ledger_movements(
    lines: Iterable[LedgerLine], rates: Rates, first: dt.date, last: dt.date
) -> dict[tuple[str, dt.date], Movement]:
    """Movements of every account in months first+1 .. last (``first`` is the opening balance),
    keyed by (account, month); accounts without MRR in both months are left out."""
    by_account: dict[str, dict[dt.date, list[LedgerLine]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        by_account[line.account_id][line.month].append(line)
    result: dict[tuple[str, dt.date], Movement] = {}
    for account_id, months in by_account.items():
        mrr = {
            m: sum((x.at(rates.of(m, x.currency)) for x in ls), ZERO) for m, ls in months.items()
        }
        for step in range(1, months_between(first, last) + 1):
            month = add_months(first, step)
            before = add_months(month, -1)
            current_lines = months.get(month, [])
            constant = sum(
                (x.at(rates.earlier_or_same(before, month, x.currency)) for x in current_lines),
                ZERO,
            )
            positive_before = any(v > 0 for m, v in mrr.items() if m < before)
            movement = classify(
                mrr.get(before, ZERO), mrr.get(month, ZERO), constant, positive_before
            )
            if movement.previous_mrr > 0 or movement.mrr > 0:
                result[(account_id, month)] = movement
    return result


def bridge_of(month: dt.date, movements: Iterable[Movement]) -> Bridge:
    """Sum one month's account movements into its bridge."""
    totals: dict[str, Decimal] = defaultdict(lambda: ZERO)
    counts: dict[str, int] = defaultdict(int)
    start = end = fx = ZERO
    cohort = retained = 0
    for movement in movements:
        totals[movement.kind] += movement.amount
        counts[movement.kind] += 1
        start += movement.previous_mrr
        end += movement.mrr
        fx += movement.fx
        if movement.previous_mrr > 0:
            cohort += 1
            retained += movement.mrr > 0
    return Bridge(
        month=month,
        start=start,
        new=totals["new"],
        reactivation=totals["reactivation"],
        expansion=totals["expansion"],
        contraction=totals["contraction"],
        churn=totals["churn"],
        fx=fx,
        end=end,
        cohort_size=cohort,
        retained_logos=retained,
        new_logos=counts["new"],
        reactivated_logos=counts["reactivation"],
        churned_logos=counts["churn"],
    )
