"""Contracts and their rules on plain data (pure, no I/O): the one home of the contract terms.

Contracts are reference data like accounts and assets: ``core`` owns their table (migration
002), their CSV layout (``core.layouts``) and the rules below; nrr turns them into MRR
(``nrr.mrr_rules``, and the ledger's SQL applies the same rules set-based), signals reads their
renewal terms for account health (``signals.health``).

- A contract is *in force* on a day from its ``start_date`` through its ``end_date`` (the last
  day of service; None = open-ended). It counts in a month when it is in force on the month's
  last day (:func:`in_force_in_month`).
- Its *fee per month* is the fee of a billing period divided by the months the period covers
  (1, 3, 12, or ``term_months`` for multi_year), to six decimals (``core.money.to_local``);
  metered contracts have none.
- Its *next renewal* as known on a day: the end of service (``end_date`` + 1 day) when that end
  is known on the day - the contract does not renew (``renewal = 'none'``), or the day is within
  its notice period of the end (``end_date`` + 1 - ``notice_days``), the latest a notice could
  have been given - else the next anniversary of its start, every ``term_months`` (12 by
  default), strictly after the day. The database does not record when an end date was entered,
  so an earlier knowledge would be a guess, and a later one would hide a notice from the past.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from core.money import ZERO, to_local
from core.months import add_months, last_day, month_of

KINDS = ("fixed", "metered", "addon")
BILLING_PERIODS = ("month", "quarter", "year", "multi_year")
RENEWALS = ("auto", "manual", "none")
MONTHS_PER_PERIOD = {"month": 1, "quarter": 3, "year": 12}
DEFAULT_TERM_MONTHS = 12  # the renewal cycle of a contract without term_months


@dataclass(frozen=True)
class Contract:
    """One contract as imported (the CSV layout: ``core.layouts.CONTRACTS``)."""

    contract_id: str
    account_id: str
    product_line: str
    kind: str
    currency: str
    start_date: dt.date
    end_date: dt.date | None = None  # last day of service
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


def in_force(contract: Contract, day: dt.date) -> bool:
    """True when ``day`` is one of the contract's days of service."""
    return contract.start_date <= day and (contract.end_date is None or day <= contract.end_date)


def in_force_in_month(contract: Contract, month: dt.date) -> bool:
    """True when the contract counts in ``month``: in force on the month's last day."""
    return in_force(contract, last_day(month))


def first_month(contract: Contract) -> dt.date:
    return month_of(contract.start_date)


def last_month(contract: Contract) -> dt.date | None:
    """The last month the contract counts in (None when open-ended); may precede first_month."""
    if contract.end_date is None:
        return None
    return add_months(month_of(contract.end_date + dt.timedelta(days=1)), -1)


def service_end(contract: Contract) -> dt.date | None:
    """The first day without service (None when open-ended)."""
    return contract.end_date + dt.timedelta(days=1) if contract.end_date is not None else None


def end_known(contract: Contract, day: dt.date) -> bool:
    """True when the contract's end is known on ``day`` (see the module docstring)."""
    end = service_end(contract)
    if end is None:
        return False
    if contract.renewal == "none":
        return True
    return day >= end - dt.timedelta(days=contract.notice_days or 0)


def next_renewal(contract: Contract, day: dt.date) -> tuple[dt.date, str] | None:
    """The next renewal or end after ``day`` as known on ``day``: (date, 'end' | 'renewal');
    None for an open-ended contract that does not renew."""
    end = service_end(contract)
    if end is not None and end_known(contract, day):
        return end, "end"
    if end is None and contract.renewal == "none":
        return None
    term = contract.term_months or DEFAULT_TERM_MONTHS
    k = 1
    while (renewal := add_months(contract.start_date, k * term)) <= day:
        k += 1
    return renewal, "renewal"
