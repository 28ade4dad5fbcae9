"""The headline figures of a month (``basewatch nrr show``): MRR fixed / metered / total
(usage-inclusive), the bridge, month-over-month and trailing NRR / GRR, logo retention and the
cohort sizes. In JSON, money is a string with two decimals (exact), a percentage a number with
two decimals, and an absent figure ``null`` under its key (never a missing key, never 0): an
empty cohort's ratios, and the bridge and month-over-month figures of the ledger's opening
month, which has no month before it to move from.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from core.errors import ConfigError, NotFound
from core.money import money_text, percent_text
from core.months import add_months, format_month
from nrr.attribution import (
    DEFAULT_WINDOW_DAYS,
    MEASURED,
    Attribution,
    PeriodAttribution,
    attribution,
)
from nrr.bridge import Bridge, bridge
from nrr.figures import MrrTotals, mrr_totals
from nrr.ledger import LedgerState, ledger_state, read_settings
from nrr.metrics import MonthOverMonth, Trailing
from nrr.retention import trailing_series

MRR_LABEL = (
    "usage-inclusive MRR (fixed fees per month + metered usage as a run rate of an average month)"
)


def percent(value: Decimal | None) -> float | None:
    """A ratio as a JSON percentage with two decimals, or None (absent)."""
    text = percent_text(value)
    return float(text) if text else None


def checked_state(
    conn: psycopg.Connection[TupleRow], reporting_currency: str, month: dt.date | None = None
) -> tuple[LedgerState, dt.date]:
    """The ledger's state and the month asked for (default its last), or a clear error."""
    state = ledger_state(conn)
    if state is None:
        raise NotFound("the MRR ledger is empty: run basewatch nrr rebuild")
    if state.reporting_currency != reporting_currency:
        raise ConfigError(
            "BASEWATCH_REPORTING_CURRENCY",
            f"is {reporting_currency} but the ledger was built in {state.reporting_currency}:"
            " run basewatch nrr rebuild --full",
        )
    month = month or state.last_month
    if not state.first_month <= month <= state.last_month:
        raise ConfigError(
            "--month",
            f"{format_month(month)} is outside the ledger "
            f"({format_month(state.first_month)} .. {format_month(state.last_month)})",
        )
    return state, month


@dataclass(frozen=True)
class Headline:
    month: dt.date
    reporting_currency: str
    state: LedgerState
    mrr: MrrTotals
    bridge: Bridge | None  # None in the ledger's opening month: no month before it to move from
    month_over_month: MonthOverMonth | None  # None with the bridge
    trailing_12: Trailing | None
    trailing_3: Trailing | None
    attribution: Attribution

    def document(self) -> dict[str, Any]:
        return {
            "month": format_month(self.month),
            "reporting_currency": self.reporting_currency,
            "mrr": {
                "label": MRR_LABEL,
                "fixed": money_text(self.mrr.fixed),
                "metered": money_text(self.mrr.metered),
                "total": money_text(self.mrr.total),
                "accounts": self.mrr.accounts,
            },
            "bridge": bridge_document(self.bridge),
            "month_over_month": mom_document(self.month_over_month),
            "trailing_12_months": trailing_document(self.trailing_12),
            "trailing_3_months": trailing_document(self.trailing_3),
            "attribution": self.attribution.document(),
            "ledger": {
                "first_month": format_month(self.state.first_month),
                "last_month": format_month(self.state.last_month),
                "stale_since": (
                    format_month(self.state.stale_since) if self.state.stale_since else None
                ),
            },
        }

    def text(self) -> str:
        cur = self.reporting_currency
        mom, t12 = self.month_over_month, self.trailing_12
        lines = [
            f"NRR {format_month(self.month)} ({cur}, {MRR_LABEL})",
            f"  MRR       fixed {_money(self.mrr.fixed)}  metered {_money(self.mrr.metered)}"
            f"  total {_money(self.mrr.total)}  ({self.mrr.accounts} accounts)",
        ]
        if self.bridge is None or mom is None:
            lines += [
                f"  bridge    none: {format_month(self.month)} is the ledger's opening month"
                " (no month before it to move from)",
                "  month over month   n/a (the ledger's opening month)",
            ]
        else:
            lines += [
                "  bridge    "
                + "  ".join(
                    f"{name} {_money(amount, signed=name not in ('start', 'end'))}"
                    for name, amount in self.bridge.lines()
                ),
                f"  month over month   NRR {_pct(mom.nrr)}  GRR {_pct(mom.grr)}"
                f"  logos {_pct(mom.logo_retention)}  (cohort {mom.cohort_size} accounts)",
            ]
        for label, figures in (("trailing 12 months", t12), ("trailing 3 months", self.trailing_3)):
            if figures is None:
                lines.append(f"  {label:<18} no cohort (no account had MRR then)")
            else:
                lines.append(
                    f"  {label:<18} NRR {_pct(figures.nrr)}  GRR {_pct(figures.grr)}"
                    f"  logos {_pct(figures.logo_retention)}"
                    f"  (cohort {figures.cohort_size} accounts)"
                )
        lines += attribution_lines(self.attribution)
        if self.state.stale_since:
            lines.append(
                f"  note: imports changed months from {format_month(self.state.stale_since)};"
                " run basewatch nrr rebuild"
            )
        return "\n".join(lines)


BRIDGE_LINES = tuple(name for name, _ in Bridge(dt.date.min).lines())


def bridge_document(found: Bridge | None) -> dict[str, Any]:
    """The bridge's lines as money text; in the ledger's opening month every line is null
    (absent: no month before it), never 0.00."""
    if found is None:
        return {**dict.fromkeys(BRIDGE_LINES), "reconciles": None}
    return {
        **{name: money_text(amount) for name, amount in found.lines()},
        "reconciles": found.reconciles(),
    }


def mom_document(mom: MonthOverMonth | None) -> dict[str, Any]:
    if mom is None:
        return {
            "basis": "constant currency",
            "nrr_pct": None,
            "grr_pct": None,
            "logo_retention_pct": None,
            "cohort_size": None,
            "start_mrr": None,
        }
    return {
        "basis": "constant currency",
        "nrr_pct": percent(mom.nrr),
        "grr_pct": percent(mom.grr),
        "logo_retention_pct": percent(mom.logo_retention),
        "cohort_size": mom.cohort_size,
        "start_mrr": money_text(mom.start),
    }


TRAILING_BASIS = "constant currency at the rates of the window's first month"


def trailing_document(figures: Trailing | None) -> dict[str, Any]:
    """A trailing window's figures; an empty cohort has every figure null (the keys stay)."""
    if figures is None:
        return {
            "basis": TRAILING_BASIS,
            "nrr_pct": None,
            "grr_pct": None,
            "logo_retention_pct": None,
            "cohort_size": 0,
            "start_mrr": None,
            "end_mrr": None,
        }
    return {
        "basis": TRAILING_BASIS,
        "nrr_pct": percent(figures.nrr),
        "grr_pct": percent(figures.grr),
        "logo_retention_pct": percent(figures.logo_retention),
        "cohort_size": figures.cohort_size,
        "start_mrr": money_text(figures.start_mrr),
        "end_mrr": money_text(figures.end_mrr),
    }


def attribution_lines(found: Attribution) -> list[str]:
    """The attribution of the month and of the trailing 12 months, for the terminal."""
    if not found.coverage.usable:
        return [f"  signal attribution: not measured ({found.coverage.reason})"]
    lines = [
        f"  signal attribution (expansion alerts acted on within {found.window_days} days;"
        " association, not a causal claim)"
    ]
    for label, period in (
        (format_month(found.month.last_month), found.month),
        (f"T12M {found.trailing.label}", found.trailing),
    ):
        lines.append(f"    {label:<22} {_attribution_text(period)}")
    return lines


def _attribution_text(period: PeriodAttribution) -> str:
    if period.influenced_expansion is None or period.flagged_churn is None:
        return f"not measured ({period.note})"
    partly = "" if period.status == MEASURED else f"  [{period.status}: {period.note}]"
    return (
        f"expansion {_money(period.expansion)} ({period.expansion_accounts}),"
        f" signal-influenced {_money(period.influenced_expansion)}"
        f" ({period.influenced_accounts})"
        f"  churn {_money(period.churn)} ({period.churn_accounts}):"
        f" flagged {_money(period.flagged_churn)} ({period.flagged_accounts}),"
        f" unflagged {_money(period.unflagged_churn or Decimal(0))}"
        f" ({period.unflagged_accounts})"
        f"  NRR {_pct(period.nrr)}, without influenced expansion"
        f" {_pct(period.nrr_without_influenced)}{partly}"
    )


def headline(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    month: dt.date | None = None,
    *,
    attribution_window_days: int = DEFAULT_WINDOW_DAYS,
) -> Headline:
    with read_settings(conn):
        return _headline(conn, reporting_currency, month, attribution_window_days)


def _headline(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    month: dt.date | None,
    attribution_window_days: int,
) -> Headline:
    state, month = checked_state(conn, reporting_currency, month)
    t12 = trailing_series(conn, reporting_currency, month, month, 12).get(month)
    t3 = trailing_series(conn, reporting_currency, month, month, 3).get(month)
    # the opening month has no movements: its bridge is absent, not all zeros
    month_bridge = bridge(conn, month) if month > state.first_month else None
    signals = attribution(
        conn,
        reporting_currency,
        month,
        attribution_window_days,
        first_movement_month=add_months(state.first_month, 1),
        trailing_12=t12,
        trailing_known=True,
    )
    return Headline(
        month,
        reporting_currency,
        state,
        mrr_totals(conn, month, month)[0],
        month_bridge,
        MonthOverMonth.from_bridge(month_bridge) if month_bridge else None,
        t12,
        t3,
        signals,
    )


def _money(amount: Decimal, signed: bool = False) -> str:
    return f"{amount:+,.2f}" if signed else f"{amount:,.2f}"


def _pct(value: Decimal | None) -> str:
    text = percent_text(value, 1)
    return f"{text}%" if text else "n/a"
