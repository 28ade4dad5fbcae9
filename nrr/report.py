"""The monthly NRR report: figures gathered into tables, written as CSV files and as one
self-contained HTML page (inline SVG charts, no scripts, no network).

Every figure on the page comes from a :class:`Table` that is also written as ``<name>.csv``;
the page's tables carry the CSV's exact text in ``data-value`` beside the formatted number, so
the page and the files cannot disagree (the tests read both back). Money is in the reporting
currency with two decimals; ``*_pct`` columns are percentages with two decimals; an empty cell
is an absent figure (empty cohort).
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from nrr import charts
from nrr.attribution import DEFAULT_WINDOW_DAYS, DEFINITION, Attribution, PeriodAttribution
from nrr.cohorts import Cohort, cohorts
from nrr.figures import Mover, MrrTotals, mrr_totals, reconciliation, top_movers
from nrr.headline import BRIDGE_LINES, MRR_LABEL, Headline, headline
from nrr.ledger import read_settings
from nrr.metrics import MonthOverMonth, Trailing
from nrr.money import ZERO, money_text, percent_text
from nrr.months import add_months, format_month, months_between
from nrr.report_html import render_html
from nrr.retention import DIMENSIONS, breakdown, month_over_month, trailing_series

TREND_MONTHS = 24
TOP_MOVERS = 10


@dataclass
class Table:
    """One table of the report: the CSV file ``<name>.csv`` and a table on the page."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    note: str = ""

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"


@dataclass
class Report:
    month: dt.date
    reporting_currency: str
    headline: Headline
    tables: list[Table]
    charts: dict[str, str]

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)


@dataclass(frozen=True)
class WrittenReport:
    html: Path
    csv_files: list[Path]

    def document(self) -> dict[str, object]:
        return {"html": str(self.html), "csv": [str(p) for p in self.csv_files]}


def build_report(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    month: dt.date,
    *,
    attribution_window_days: int = DEFAULT_WINDOW_DAYS,
) -> Report:
    """Gather every figure of ``month``'s report (the ledger must cover the month)."""
    with read_settings(conn):
        return _build_report(conn, reporting_currency, month, attribution_window_days)


def _build_report(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    month: dt.date,
    attribution_window_days: int,
) -> Report:
    top = headline(conn, reporting_currency, month, attribution_window_days=attribution_window_days)
    first = max(add_months(month, -(TREND_MONTHS - 1)), top.state.first_month)
    totals = mrr_totals(conn, first, month)
    moms = month_over_month(conn, first, month)
    t12 = trailing_series(conn, reporting_currency, first, month, 12)
    found_cohorts = cohorts(conn, first, month)
    gains, losses = top_movers(conn, month, TOP_MOVERS)
    tables = [
        _headline_table(top),
        _bridge_table(top),
        _trend_table(totals, moms, t12, top.state.first_month),
        _cohort_table(found_cohorts, month),
        _movers_table(gains, losses),
        _breakdown_table(conn, reporting_currency, month),
        attribution_table(top.attribution),
        Table(
            "reconciliation",
            f"Invoices of {format_month(month)} against MRR",
            ("item", "lines", "amount", "treatment"),
            [
                (
                    r.item,
                    str(r.lines),
                    "" if r.amount is None else money_text(r.amount),
                    r.treatment,
                )
                for r in reconciliation(conn, month, reporting_currency)
            ],
            "invoice amounts at the month's rate; an empty amount lacks an exchange rate",
        ),
    ]
    labels = [format_month(t.month) for t in totals]
    figures = {
        "trend": charts.line_chart(
            "NRR and GRR (%): trailing 12 months, and month over month",
            labels,
            [
                ("T12M NRR", [_pct(t12.get(t.month), "nrr") for t in totals]),
                ("T12M GRR", [_pct(t12.get(t.month), "grr") for t in totals]),
                ("MoM NRR", [_times100(m.nrr) for m in moms]),
            ],
        ),
        "mrr": charts.line_chart(
            f"MRR ({reporting_currency}, usage-inclusive)",
            labels,
            [
                ("total", [t.total for t in totals]),
                ("fixed", [t.fixed for t in totals]),
                ("metered", [t.metered for t in totals]),
            ],
            unit=f" {reporting_currency}",
        ),
        "cohorts": charts.heat_map(
            "Revenue retention of new-account cohorts (% of first month's MRR)",
            [format_month(c.month) for c in found_cohorts],
            [f"+{age}" for age in range(_max_age(found_cohorts, month) + 1)],
            [
                [c.retention(age) for age in range(_max_age(found_cohorts, month) + 1)]
                for c in found_cohorts
            ],
        ),
        "movers": charts.bar_chart(
            f"Top movers {format_month(month)}",
            [(f"{m.name} ({m.kind})", m.amount) for m in gains + losses],
        ),
    }
    if top.bridge is not None:
        figures["bridge"] = charts.waterfall(
            f"MRR bridge {format_month(month)} ({reporting_currency})",
            top.bridge.lines(),
            reporting_currency,
        )
    window = top.attribution.trailing
    if window.influenced_expansion is not None and window.flagged_churn is not None:
        figures["attribution"] = charts.bar_chart(
            f"Signal attribution {window.label} ({reporting_currency}, association only)",
            [
                ("expansion after an alert", window.influenced_expansion),
                ("other expansion", window.expansion - window.influenced_expansion),
                ("churn flagged by an alert", -window.flagged_churn),
                ("churn not flagged", -(window.churn - window.flagged_churn)),
            ],
        )
    return Report(month, reporting_currency, top, tables, figures)


def write_report(report: Report, out_dir: Path) -> WrittenReport:
    """Write ``nrr-YYYY-MM.html`` and one CSV per table into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in report.tables:
        path = out_dir / table.file_name
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(table.columns)
            writer.writerows(table.rows)
        paths.append(path)
    html = out_dir / f"nrr-{format_month(report.month)}.html"
    html.write_text(
        render_html(
            month=format_month(report.month),
            reporting_currency=report.reporting_currency,
            mrr_label=MRR_LABEL,
            tables=[(t.file_name, t.title, t.columns, t.rows, t.note) for t in report.tables],
            charts=report.charts,
        ),
        encoding="utf-8",
    )
    return WrittenReport(html, paths)


def _pct(figures: Trailing | None, which: str) -> Decimal | None:
    if figures is None:
        return None
    return _times100(figures.nrr if which == "nrr" else figures.grr)


def _times100(value: Decimal | None) -> Decimal | None:
    return None if value is None else value * 100


def _headline_table(top: Headline) -> Table:
    def trailing_rows(label: str, figures: Trailing | None) -> list[tuple[str, ...]]:
        return [
            (f"{label}_nrr_pct", percent_text(figures.nrr) if figures else ""),
            (f"{label}_grr_pct", percent_text(figures.grr) if figures else ""),
            (
                f"{label}_logo_retention_pct",
                percent_text(figures.logo_retention) if figures else "",
            ),
            (f"{label}_cohort_size", str(figures.cohort_size if figures else 0)),
        ]

    mom = top.month_over_month or MonthOverMonth(top.month, ZERO, ZERO, ZERO, ZERO, 0, 0)
    opening = top.month_over_month is None
    rows: list[tuple[str, ...]] = [
        ("month", format_month(top.month)),
        ("reporting_currency", top.reporting_currency),
        ("mrr_fixed", money_text(top.mrr.fixed)),
        ("mrr_metered", money_text(top.mrr.metered)),
        ("mrr_total_usage_inclusive", money_text(top.mrr.total)),
        ("accounts_with_mrr", str(top.mrr.accounts)),
        ("mom_nrr_pct", percent_text(mom.nrr)),
        ("mom_grr_pct", percent_text(mom.grr)),
        ("mom_logo_retention_pct", percent_text(mom.logo_retention)),
        ("mom_cohort_size", "" if opening else str(mom.cohort_size)),
        *trailing_rows("t12m", top.trailing_12),
        *trailing_rows("t3m", top.trailing_3),
    ]
    return Table(
        "headline",
        "Headline figures",
        ("figure", "value"),
        rows,
        f"{MRR_LABEL}; MoM in constant currency; trailing windows in constant currency at the "
        "rates of the window's first month; an empty value is an absent figure (empty cohort)",
    )


def _bridge_table(top: Headline) -> Table:
    title = f"MRR bridge {format_month(top.month)}"
    if top.bridge is None:
        return Table(
            "bridge",
            title,
            ("line", "amount"),
            [(name, "") for name in BRIDGE_LINES],
            f"{format_month(top.month)} is the ledger's opening month: there is no month before "
            "it to move from, so the bridge is absent (empty), not zero",
        )
    return Table(
        "bridge",
        title,
        ("line", "amount"),
        [(name, money_text(amount)) for name, amount in top.bridge.lines()],
        "start + new + reactivation + expansion - contraction - churn + fx = end "
        "(movements in constant currency, fx the rate effect)",
    )


def _trend_table(
    totals: list[MrrTotals],
    moms: list[MonthOverMonth],
    t12: dict[dt.date, Trailing],
    opening_month: dt.date,
) -> Table:
    rows: list[tuple[str, ...]] = []
    for total, mom in zip(totals, moms, strict=True):
        year = t12.get(total.month)
        opening = total.month == opening_month
        rows.append(
            (
                format_month(total.month),
                money_text(total.fixed),
                money_text(total.metered),
                money_text(total.total),
                percent_text(mom.nrr),
                percent_text(mom.grr),
                "" if opening else str(mom.cohort_size),
                percent_text(year.nrr) if year else "",
                percent_text(year.grr) if year else "",
                percent_text(year.logo_retention) if year else "",
                str(year.cohort_size if year else 0),
            )
        )
    return Table(
        "trend",
        "MRR and retention by month",
        (
            "month",
            "mrr_fixed",
            "mrr_metered",
            "mrr_total",
            "mom_nrr_pct",
            "mom_grr_pct",
            "mom_cohort_size",
            "t12m_nrr_pct",
            "t12m_grr_pct",
            "t12m_logo_retention_pct",
            "t12m_cohort_size",
        ),
        rows,
    )


def _max_age(found: list[Cohort], month: dt.date) -> int:
    return max((months_between(c.month, month) for c in found), default=0)


def _cohort_table(found: list[Cohort], month: dt.date) -> Table:
    ages = range(_max_age(found, month) + 1)
    rows: list[tuple[str, ...]] = [
        (
            format_month(c.month),
            str(c.accounts),
            money_text(c.start_mrr),
            *(percent_text(c.retention(age)) for age in ages),
        )
        for c in found
    ]
    return Table(
        "cohorts",
        "New-account cohorts: MRR k months after the first month, % of the first month",
        ("cohort_month", "accounts", "start_mrr", *(f"m{age}_pct" for age in ages)),
        rows,
        "accounts by their first month with MRR; each month at its own rates",
    )


def _movers_table(gains: list[Mover], losses: list[Mover]) -> Table:
    rows: list[tuple[str, ...]] = [
        (
            direction,
            m.account_id,
            m.name,
            m.kind,
            money_text(m.amount),
            money_text(m.previous_mrr),
            money_text(m.mrr),
        )
        for direction, movers in (("gain", gains), ("loss", losses))
        for m in movers
    ]
    return Table(
        "top_movers",
        f"Top {TOP_MOVERS} gains and losses",
        ("direction", "account_id", "name", "kind", "amount", "previous_mrr", "mrr"),
        rows,
        "amount in constant currency (last month's rates)",
    )


def _breakdown_table(
    conn: psycopg.Connection[TupleRow], reporting_currency: str, month: dt.date
) -> Table:
    rows: list[tuple[str, ...]] = []
    for dimension in DIMENSIONS:
        for segment, figures in breakdown(conn, reporting_currency, month, dimension):
            rows.append(
                (
                    dimension,
                    segment,
                    str(figures.cohort_size),
                    money_text(figures.start_mrr),
                    money_text(figures.end_mrr),
                    percent_text(figures.nrr),
                    percent_text(figures.grr),
                    percent_text(figures.logo_retention),
                )
            )
    return Table(
        "breakdowns",
        "Trailing-12-month retention by segment",
        (
            "dimension",
            "segment",
            "cohort_size",
            "start_mrr",
            "end_mrr",
            "nrr_pct",
            "grr_pct",
            "logo_retention_pct",
        ),
        rows,
        "cohort: MRR > 0 twelve months before; size band by MRR then; product line cohorts are "
        "account × product line; industry, region and CSM are the registry's current values",
    )


ATTRIBUTION_COLUMNS = (
    "basis",
    "period",
    "alerts",
    "note",
    "expansion",
    "expansion_accounts",
    "influenced_expansion",
    "influenced_accounts",
    "churn",
    "churn_accounts",
    "flagged_churn",
    "flagged_accounts",
    "unflagged_churn",
    "unflagged_accounts",
    "cohort_size",
    "start_mrr",
    "nrr_pct",
    "removed_expansion",
    "nrr_without_influenced_pct",
)


def _attribution_row(basis: str, period: PeriodAttribution) -> tuple[str, ...]:
    def money(value: Decimal | None) -> str:
        return "" if value is None else money_text(value)

    def count(value: int | None) -> str:
        return "" if value is None else str(value)

    return (
        basis,
        period.label,
        period.status,
        period.note,
        money_text(period.expansion),
        str(period.expansion_accounts),
        money(period.influenced_expansion),
        count(period.influenced_accounts),
        money_text(period.churn),
        str(period.churn_accounts),
        money(period.flagged_churn),
        count(period.flagged_accounts),
        money(period.unflagged_churn),
        count(period.unflagged_accounts),
        str(period.cohort_size),
        money_text(period.start_mrr),
        percent_text(period.nrr),
        money(period.removed_expansion),
        percent_text(period.nrr_without_influenced),
    )


def attribution_table(found: Attribution) -> Table:
    """Attribution per month of the trailing window, then over the window."""
    if found.coverage.usable:
        coverage = (
            f"{found.coverage.alerts} alerts recorded since "
            f"{found.coverage.first_opened_at:%Y-%m-%d}."
        )
    else:
        coverage = f"Not measured: {found.coverage.reason}."
    rows = [_attribution_row("month", m) for m in found.months]
    rows.append(_attribution_row("trailing_12_months", found.trailing))
    return Table(
        "attribution",
        f"Signal attribution (window {found.window_days} days)",
        ATTRIBUTION_COLUMNS,
        rows,
        f"{DEFINITION.format(window=found.window_days)} {coverage} Month rows: month over "
        "month (cohort: MRR last month); the trailing_12_months row sums the months above and "
        "takes its NRR and cohort from the trailing 12 months. An empty cell is a figure not "
        "measured (no alerts then), never a zero.",
    )
