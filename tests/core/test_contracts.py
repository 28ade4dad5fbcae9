"""core's contract terms on plain data, hand-worked: month arithmetic, in force, fee per month,
the next renewal as known on a day (the rules nrr's ledger and signals' health share)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from core.contracts import (
    Contract,
    end_known,
    in_force,
    in_force_in_month,
    monthly_fee,
    next_renewal,
    service_end,
)
from core.months import add_months

D = Decimal


def _contract(**terms: object) -> Contract:
    base: dict[str, object] = {
        "contract_id": "c-1",
        "account_id": "a-1",
        "product_line": "maintenance",
        "kind": "fixed",
        "currency": "EUR",
        "start_date": dt.date(2023, 1, 31),
        "billing_period": "year",
        "fee": D(1200),
    }
    return Contract(**(base | terms))  # type: ignore[arg-type]


def test_add_months_keeps_the_day_or_the_last_day_of_a_shorter_month() -> None:
    assert add_months(dt.date(2024, 1, 1), 1) == dt.date(2024, 2, 1)
    assert add_months(dt.date(2024, 1, 1), -13) == dt.date(2022, 12, 1)
    assert add_months(dt.date(2024, 1, 31), 1) == dt.date(2024, 2, 29)
    assert add_months(dt.date(2023, 1, 31), 1) == dt.date(2023, 2, 28)
    assert add_months(dt.date(2023, 1, 31), 3) == dt.date(2023, 4, 30)
    assert add_months(dt.date(2023, 3, 15), 12) == dt.date(2024, 3, 15)


@pytest.mark.parametrize(
    ("period", "fee", "term", "monthly"),
    [("month", "90", None, "90"), ("quarter", "100", None, "33.333333"),
     ("year", "1200", None, "100"), ("multi_year", "7200", 36, "200")],
)  # fmt: skip
def test_fee_per_month(period: str, fee: str, term: int | None, monthly: str) -> None:
    contract = _contract(billing_period=period, fee=D(fee), term_months=term)
    assert monthly_fee(contract) == D(monthly)
    assert monthly_fee(_contract(kind="metered", fee=None, unit_price=D(1))) == 0


def test_in_force_from_start_through_the_last_day_of_service() -> None:
    contract = _contract(start_date=dt.date(2024, 6, 20), end_date=dt.date(2024, 7, 31))
    assert not in_force(contract, dt.date(2024, 6, 19))
    assert in_force(contract, dt.date(2024, 6, 20))
    assert in_force(contract, dt.date(2024, 7, 31))
    assert not in_force(contract, dt.date(2024, 8, 1))
    assert in_force_in_month(contract, dt.date(2024, 6, 1))  # in force on June 30
    assert not in_force_in_month(contract, dt.date(2024, 8, 1))
    assert service_end(contract) == dt.date(2024, 8, 1)


def test_next_renewal_is_the_anniversary_until_the_end_is_known() -> None:
    """Auto renewal every month from 2023-01-31, 30 days' notice, last day of service
    2024-01-30 (so ending on 2024-01-31): the end is known from 2024-01-01 (31 - 30 days) on;
    before, the next monthly anniversary counts (the 31st, or a shorter month's last day)."""
    contract = _contract(
        end_date=dt.date(2024, 1, 30), renewal="auto", notice_days=30, term_months=1
    )
    assert not end_known(contract, dt.date(2023, 12, 31))
    assert next_renewal(contract, dt.date(2023, 2, 27)) == (dt.date(2023, 2, 28), "renewal")
    assert next_renewal(contract, dt.date(2023, 2, 28)) == (dt.date(2023, 3, 31), "renewal")
    assert end_known(contract, dt.date(2024, 1, 1))
    assert next_renewal(contract, dt.date(2024, 1, 1)) == (dt.date(2024, 1, 31), "end")
    yearly = _contract(renewal="manual", term_months=12)
    assert next_renewal(yearly, dt.date(2023, 6, 1)) == (dt.date(2024, 1, 31), "renewal")
    assert next_renewal(_contract(), dt.date(2023, 6, 1)) is None  # open-ended, no renewal
    fixed_term = _contract(end_date=dt.date(2025, 1, 30))  # renewal none: end known at once
    assert next_renewal(fixed_term, dt.date(2023, 6, 1)) == (dt.date(2025, 1, 31), "end")
