"""Money is ``Decimal``: amounts round half away from zero, like PostgreSQL's ``round``.

Local-currency MRR keeps six decimals (a fee / 12 is not a whole cent); reporting-currency
figures are rounded to the cent, line by line, so every sum of them is exact.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
LOCAL_QUANTUM = Decimal("0.000001")
ZERO = Decimal(0)


def to_cents(amount: Decimal) -> Decimal:
    """``amount`` rounded to the cent, half away from zero."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def to_local(amount: Decimal) -> Decimal:
    """A local-currency MRR figure at its stored precision (six decimals)."""
    return amount.quantize(LOCAL_QUANTUM, rounding=ROUND_HALF_UP)


def convert(amount_local: Decimal, rate: Decimal) -> Decimal:
    """``amount_local`` in the reporting currency at ``rate``, to the cent."""
    return to_cents(amount_local * rate)


def ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    """``numerator / denominator``; None when the denominator is 0 (an empty cohort)."""
    if denominator == 0:
        return None
    return numerator / denominator


def percent_text(value: Decimal | None, places: int = 2) -> str:
    """A ratio as a percentage with ``places`` decimals (``1.075`` -> ``107.50``), or ``""``."""
    if value is None:
        return ""
    return str((value * 100).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def money_text(value: Decimal) -> str:
    """A reporting-currency amount to the cent, plain (``1234567.80``)."""
    return str(to_cents(value))
