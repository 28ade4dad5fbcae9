"""The rules that turn a contract into monthly recurring revenue (pure, no I/O).

The contract itself and its terms (in force, fee per month) live in ``core.contracts``.

The ledger's SQL (``nrr/ledger.py``) applies the same rules set-based; the tests hold the two
to each other (:func:`ledger_lines` is the whole ledger on plain data). Amounts are in the
contract's currency (metered ones in the invoice's when invoices bill them).

Metered MRR is a run rate normalised to an average month (DESIGN.md): the month's billed usage
÷ the month's days × 30.4375 (= 365.25 / 12), at least the monthly minimum. The billed usage is
the net of the contract's recurring metered invoice lines for the month (credits included, a
net below 0 counting 0) when there are any, else telemetry's volume × unit price to the cent.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from core.contracts import Contract, in_force_in_month, monthly_fee
from core.money import ZERO, to_cents, to_local
from core.months import last_day, month_range

AVERAGE_MONTH_DAYS = Decimal("30.4375")  # 365.25 / 12


def usage_charge(volume: Decimal, unit_price: Decimal) -> Decimal:
    """What telemetry's ``volume`` bills: volume × unit_price, to the cent (no minimum yet)."""
    return to_cents(volume * unit_price)


def days_in(month: dt.date) -> int:
    return last_day(month).day


def run_rate(billed: Decimal, month: dt.date) -> Decimal:
    """``billed`` usage of ``month`` as a run rate of an average month: billed ÷ the month's
    days × 30.4375 (six decimals); a net credit (billed below 0) counts 0."""
    return to_local(max(billed, ZERO) * AVERAGE_MONTH_DAYS / days_in(month))


def metered_mrr(billed: Decimal, month: dt.date, minimum: Decimal | None) -> Decimal:
    """Metered MRR of a contract month: the run rate of its billed usage, at least the
    monthly minimum (a floor on the run rate, not on the bill)."""
    return to_local(max(run_rate(billed, month), minimum or ZERO))


@dataclass(frozen=True)
class InvoiceLine:
    """A recurring metered invoice line as the ledger reads it (other lines are not MRR)."""

    contract_id: str
    period: dt.date
    currency: str
    amount: Decimal


LineKey = tuple[str, dt.date, str, str]  # account, month, product line, currency


def ledger_lines(
    contracts: Iterable[Contract],
    invoices: Iterable[InvoiceLine],
    volumes: Mapping[tuple[str, dt.date], Decimal],
    first: dt.date,
    last: dt.date,
) -> dict[LineKey, tuple[Decimal, Decimal]]:
    """The ledger of months ``first`` .. ``last`` in local currency: (fixed, metered) MRR per
    account, month, product line and currency. ``volumes``: telemetry's m³ per (account,
    month). A contract counts in the months it is in force on the last day; a metered one is
    billed by its invoice lines of the month (per invoice currency) when there are any, else by
    telemetry (per m³ only; other units: nothing, so the minimum)."""
    invoiced: dict[tuple[str, dt.date], dict[str, Decimal]] = defaultdict(dict)
    for line in invoices:
        per_currency = invoiced[(line.contract_id, line.period)]
        per_currency[line.currency] = per_currency.get(line.currency, ZERO) + line.amount
    micro: dict[LineKey, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for contract in contracts:
        for month in month_range(first, last):
            if not in_force_in_month(contract, month):
                continue
            if contract.kind != "metered":
                key = (contract.account_id, month, contract.product_line, contract.currency)
                micro[key][0] += monthly_fee(contract)
                continue
            billed = invoiced.get((contract.contract_id, month))
            if not billed:
                volume = ZERO
                if (contract.unit or "m3") == "m3":
                    volume = volumes.get((contract.account_id, month), ZERO)
                assert contract.unit_price is not None
                billed = {contract.currency: usage_charge(volume, contract.unit_price)}
            for currency, amount in billed.items():
                key = (contract.account_id, month, contract.product_line, currency)
                micro[key][1] += metered_mrr(amount, month, contract.monthly_minimum)
    return {key: (parts[0], parts[1]) for key, parts in micro.items()}
