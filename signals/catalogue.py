"""Reference knowledge the signals use: component indicators with their limits, and the price
book that turns findings into money.

Indicator limits are the physical alarm levels of an oil-injected screw compressor's service
manual (differential pressures of the inlet filter, the oil filter and the separator element;
ISO 10816-3 zone C/D vibration for a medium machine on a rigid foundation). A component whose
kind has no indicator here is judged on its rated life alone. The price book values are monthly
recurring revenue in the reporting currency, overridable by settings.

Money in text (reasons, alert messages, listings) always carries its currency: :func:`money`
formats an amount with the currency code it is given. The reporting currency travels as an
argument (``PriceBook.currency`` for the detectors, a ``currency`` parameter for the renderers),
never as module state: the composition root reads ``BASEWATCH_REPORTING_CURRENCY`` once and
passes it on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from core.errors import ConfigError


@dataclass(frozen=True)
class Indicator:
    """The metric that shows a component's wear, its value when new and its limit."""

    metric: str
    new: float
    limit: float


INDICATORS: dict[str, Indicator] = {
    "air_filter": Indicator("air_filter_dp_mbar", 18.0, 68.0),
    "oil_filter": Indicator("oil_filter_dp_bar", 0.25, 1.25),
    "separator": Indicator("separator_dp_bar", 0.15, 0.9),
}


def money(amount: Decimal | float | int | str, currency: str, places: int = 2) -> str:
    """``1,234.50 EUR``: an amount with its currency's ISO 4217 code."""
    value = Decimal(amount) if isinstance(amount, str) else amount
    return f"{value:,.{places}f} {currency}"


@dataclass(frozen=True)
class PriceBook:
    """Monthly values (reporting currency) of what a finding is worth, and the commercial
    window a renewal counts in (``renewal_window_days``: a renewal or contract end within it
    can raise ``renewal_risk``; ``BASEWATCH_RENEWAL_WINDOW_DAYS``, which the composition root
    sets; not one of ``BASEWATCH_PRICE_BOOK``'s names), and the reporting currency all these
    values are in (``currency``, ``BASEWATCH_REPORTING_CURRENCY``, also set by the composition
    root and not one of the price book's names)."""

    price_per_m3: Decimal = Decimal("0.02")
    maintenance_per_machine: Decimal = Decimal(180)
    heat_recovery_module: Decimal = Decimal(650)
    vsd_upgrade: Decimal = Decimal(400)
    leak_service: Decimal = Decimal(150)
    extra_machine: Decimal = Decimal(900)
    component_service: Decimal = Decimal(120)
    heat_price_per_kwh: Decimal = Decimal("0.05")
    renewal_window_days: int = 90
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if self.renewal_window_days < 1:
            raise ValueError("the renewal window must be at least one day")
        if len(self.currency) != 3 or not self.currency.isalpha() or not self.currency.isupper():
            raise ValueError(f"expected a currency code like EUR, got {self.currency!r}")

    def money(self, amount: Decimal | float | int | str, places: int = 2) -> str:
        """An amount in this price book's currency, with its code (:func:`money`)."""
        return money(amount, self.currency, places)

    @classmethod
    def parse(cls, text: str) -> PriceBook:
        """The defaults with the overrides of ``BASEWATCH_PRICE_BOOK`` (``name=value,...``, e.g.
        ``heat_recovery_module=700,price_per_m3=0.025``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"renewal_window_days", "currency"}
        values: dict[str, Any] = {}  # Decimal prices (the window and currency are not parsed)
        for item in (i.strip() for i in text.split(",")):
            if not item:
                continue
            name, sep, raw = (part.strip() for part in item.partition("="))
            if not sep or name not in names:
                raise ConfigError(
                    "BASEWATCH_PRICE_BOOK",
                    f"expected name=value with a name among {', '.join(sorted(names))}; "
                    f"got {item!r}",
                )
            try:
                value = Decimal(raw)
            except InvalidOperation:
                value = Decimal(-1)
            if not value.is_finite() or value < 0:
                raise ConfigError(
                    "BASEWATCH_PRICE_BOOK", f"{name} must be a number of 0 or more, got {raw!r}"
                )
            values[name] = value
        return cls(**values)
