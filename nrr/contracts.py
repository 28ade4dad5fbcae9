"""Contracts and the rules that turn one into monthly recurring revenue (pure, no I/O).

The ledger's SQL (``nrr/ledger.py``) applies the same rules set-based; the tests hold the two
to each other. Amounts are in the contract's currency.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from nrr.money import ZERO, to_cents, to_local
from nrr.months import add_months, last_day, month_of

KINDS = ("fixed", "metered", "addon")
BILLING_PERIODS = ("month", "quarter", "year", "multi_year")
RENEWALS = ("auto", "manual", "none")
MONTHS_PER_PERIOD = {"month": 1, "quarter": 3, "year": 12}


@dataclass(frozen=True)
class Contract:
    """One contract as imported (see the CSV layout in ``nrr``'s docstring)."""

    contract_id: str
    account_id: str
    product_line: str
    kind: str
    currency: str
    start_date: dt.date
    end_date: dt.date | None = None
    billing_period: str = "month"
    fee: Decimal | None = None
    unit_price: Decimal | None = None
    unit: str | None = None
    monthly_minimum: Decimal | None = None
    renewal: str = "none"
    notice_days: int | None = None
    term_months: int | None = None


def months_per_period(billing_period: str, term_months: int | None) -> int:
    """How many months one fee covers: 1, 3, 12, or term_months for multi_year."""
    if billing_period == "multi_year":
        if not term_months:
            raise ValueError("a multi_year contract needs term_months")
        return term_months
    return MONTHS_PER_PERIOD[billing_period]


def monthly_fee(contract: Contract) -> Decimal:
    """Fixed MRR in the contract currency: fee / months per period (six decimals)."""
    if contract.kind == "metered" or contract.fee is None:
        return ZERO
    return to_local(contract.fee / months_per_period(contract.billing_period, contract.term_months))


def metered_charge(volume: Decimal, unit_price: Decimal, minimum: Decimal | None) -> Decimal:
    """A month's metered charge from usage: max(volume × unit_price to the cent, minimum)."""
    return max(to_cents(volume * unit_price), minimum or ZERO)


def in_force(contract: Contract, month: dt.date) -> bool:
    """True when the contract counts in ``month``: in force on the month's last day."""
    end_of_month = last_day(month)
    return contract.start_date <= end_of_month and (
        contract.end_date is None or contract.end_date >= end_of_month
    )


def first_month(contract: Contract) -> dt.date:
    return month_of(contract.start_date)


def last_month(contract: Contract) -> dt.date | None:
    """The last month the contract counts in (None when open-ended); may precede first_month."""
    if contract.end_date is None:
        return None
    return add_months(month_of(contract.end_date + dt.timedelta(days=1)), -1)
