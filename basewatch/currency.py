"""The reporting currency, read once from the settings and passed on as an argument.

``BASEWATCH_REPORTING_CURRENCY`` (default EUR) is the currency of the NRR ledger and report and of
every amount the signals write (prices, values, reasons). It is checked here, in a module that
imports nothing heavy, so that command modules, jobs and the wiring can all ask for it without an
import cycle; nothing keeps it in module state.
"""

from __future__ import annotations

import re

from core.errors import ConfigError
from core.settings import Settings

_CURRENCY = re.compile(r"[A-Z]{3}")


def reporting_currency(settings: Settings) -> str:
    """``BASEWATCH_REPORTING_CURRENCY`` (default EUR), checked; raises ConfigError."""
    value = (settings.reporting_currency or "EUR").strip().upper()
    if not _CURRENCY.fullmatch(value):
        raise ConfigError(
            "BASEWATCH_REPORTING_CURRENCY", f"expected an ISO 4217 code like EUR, got {value!r}"
        )
    return value
