"""The monthly NRR report: figures gathered into tables, written as CSV files and as one
self-contained HTML page (inline SVG charts, no scripts, no network).

Every figure on the page comes from a :class:`Table` that is also written as ``<name>.csv``;
the page's tables carry the CSV's exact text in ``data-value`` beside the formatted number, so
the page and the files cannot disagree (the tests read both back). Money is in the reporting
currency with two decimals; ``*_pct`` columns are percentages with two decimals; an empty cell
is an absent figure (empty cohort, or the ledger's opening month).

For a reader: the page opens with the headline as sentences (:func:`summary`, the figures of
headline.csv), labels every figure and column (the CSVs keep their machine keys beside the
labels, the page never shows them), shows only the columns of a wide CSV that fit the page
(the file has them all), draws the bridge's waterfall from 0, draws the cohort heat map only
for cohorts of at least ``MIN_HEAT_MAP_ACCOUNTS`` new accounts (and says so when it leaves
any out), and calls tax lines tax.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from core.money import ZERO, money_text, percent_text
from core.months import add_months, format_month, months_between
from nrr import charts
from nrr.attribution import DEFAULT_WINDOW_DAYS, DEFINITION, Attribution, PeriodAttribution
from nrr.cohorts import Cohort, cohorts
from nrr.figures import Mover, MrrTotals, mrr_totals, reconciliation, top_movers
from nrr.headline import BRIDGE_LINES, MRR_LABEL, Headline, headline
from nrr.ledger import read_settings
from nrr.metrics import MonthOverMonth, Trailing
from nrr.report_html import PageTable, display, render_html
from nrr.retention import DIMENSIONS, breakdown, month_over_month, trailing_series

TREND_MONTHS = 24
TOP_MOVERS = 10
# A cohort heat map of fewer new accounts than this shows single accounts' ups and downs as
# retention: only cohorts at least this big are drawn (the table lists them all with sizes).
MIN_HEAT_MAP_ACCOUNTS = 5
# Ages (months after the cohort's first) the page's cohort table shows; cohorts.csv has all.
COHORT_PAGE_AGES = (0, 1, 2, 3, 6, 9, 12, 18, 24)


@dataclass
class Table:
    """One table of the report: the CSV file ``<name>.csv`` and a table on the page.

    ``labels`` are the page's column headings (default: the CSV column names), ``shown`` the
    CSV columns the page shows (default: all; a wide CSV keeps the rest in the file)."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    note: str = ""
    labels: tuple[str, ...] = ()
    shown: tuple[str, ...] = ()
    css: str = ""

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"

    def page(self) -> PageTable:
        return PageTable(
            self.file_name,
            self.title,
            self.columns,
            self.labels or self.columns,
            self.rows,
            self.note,
            self.shown,
            self.css,
        )


@dataclass
class Report:
    month: dt.date
    reporting_currency: str
    headline: Headline
    tables: list[Table]
    charts: dict[str, str]
    summary: list[str] = field(default_factory=list)  # the headline as sentences
    chart_notes: dict[str, str] = field(default_factory=dict)  # why a chart is not drawn

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
    cur = reporting_currency
    tables = [
        _headline_table(top),
        _bridge_table(top),
        _trend_table(totals, moms, t12, top.state.first_month, cur),
        _cohort_table(found_cohorts, month, cur),
        _movers_table(gains, losses, cur),
        _breakdown_table(conn, reporting_currency, month),
        attribution_table(top.attribution),
        _reconciliation_table(conn, month, cur),
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
        "movers": charts.bar_chart(
            f"Top movers {format_month(month)}",
            [(f"{m.name} ({m.kind})", m.amount) for m in gains + losses],
        ),
    }
    notes: dict[str, str] = {}
    big = [c for c in found_cohorts if c.accounts >= MIN_HEAT_MAP_ACCOUNTS]
    if big:
        ages = range(_max_age(big, month) + 1)
        figures["cohorts"] = charts.heat_map(
            "Revenue retention of new-account cohorts of at least "
            f"{MIN_HEAT_MAP_ACCOUNTS} accounts (% of first month's MRR)",
            [f"{format_month(c.month)} ({c.accounts})" for c in big],
            [f"+{age}" for age in ages],
            [[c.retention(age) for age in ages] for c in big],
        )
    small = len(found_cohorts) - len(big)
    if not found_cohorts:
        notes["cohorts"] = f"No new accounts in the last {TREND_MONTHS} months: no cohorts."
    elif not big:
        notes["cohorts"] = (
            f"No heat map: none of the {len(found_cohorts)} new-account cohorts of the last "
            f"{TREND_MONTHS} months has {MIN_HEAT_MAP_ACCOUNTS} accounts or more, and the "
            "retention of so few accounts is one customer's story, not a cohort's. The table "
            "below lists every cohort with its size."
        )
    elif small:
        notes["cohorts"] = (
            f"{small} of the {len(found_cohorts)} new-account cohorts have fewer than "
            f"{MIN_HEAT_MAP_ACCOUNTS} accounts and are left out of the heat map (the retention "
            "of so few accounts is one customer's story); the table below lists every cohort "
            "with its size."
        )
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
    return Report(month, reporting_currency, top, tables, figures, summary(top), notes)


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
    html.write_text(report_page(report), encoding="utf-8")
    return WrittenReport(html, paths)


def report_page(report: Report) -> str:
    """The report as one self-contained HTML page (what ``nrr-YYYY-MM.html`` holds, and what
    the API's ``/reports/nrr`` shows)."""
    return render_html(
        month=format_month(report.month),
        reporting_currency=report.reporting_currency,
        mrr_label=MRR_LABEL,
        summary=report.summary,
        tables=[t.page() for t in report.tables],
        charts=report.charts,
        chart_notes=report.chart_notes,
    )


def _sentence(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}."


def _month_name(month: dt.date) -> str:
    return f"{month:%B %Y}"


def _money(value: Decimal, currency: str) -> str:
    return f"{currency} {display(money_text(value))}"


def _percent(value: Decimal | None) -> str:
    return f"{percent_text(value)} %"


def summary(top: Headline) -> list[str]:
    """The headline as sentences for a reader (the same figures as headline.csv)."""
    cur, month = top.reporting_currency, top.month
    before = add_months(month, -1)
    accounts = f"{top.mrr.accounts} account{'s' if top.mrr.accounts != 1 else ''}"
    sentences = [
        f"In {_month_name(month)}, usage-inclusive MRR was {_money(top.mrr.total, cur)} across "
        f"{accounts}: {_money(top.mrr.fixed, cur)} of fixed fees and "
        f"{_money(top.mrr.metered, cur)} of metered usage (a run rate of an average month)."
    ]
    mom, bridge = top.month_over_month, top.bridge
    if mom is None or bridge is None:
        sentences.append(
            f"{_month_name(month)} is the ledger's first month: there is no month before it, "
            "so no bridge and no month-over-month retention."
        )
    elif mom.nrr is None or mom.grr is None:
        sentences.append(
            f"No account had MRR in {_month_name(before)}, so there is no month-over-month "
            f"retention; MRR grew by {_money(bridge.new, cur)} from new accounts and "
            f"{_money(bridge.reactivation, cur)} from returning ones."
        )
    else:
        moves = [
            (bridge.expansion, "expansion added"),
            (bridge.contraction, "contraction took"),
            (bridge.churn, "churn took"),
            (bridge.new, "new accounts added"),
            (bridge.reactivation, "returning accounts added"),
        ]
        said = [f"{what} {_money(amount, cur)}" for amount, what in moves if amount]
        if bridge.fx:
            said.append(f"exchange rates moved MRR by {_money(bridge.fx, cur)}")
        sentences.append(
            f"Month over month, the {mom.cohort_size} accounts with MRR in {_month_name(before)} "
            f"({_money(mom.start, cur)}) kept {_percent(mom.nrr)} of it with expansion (net "
            f"revenue retention) and {_percent(mom.grr)} without (gross revenue retention); "
            f"{_percent(mom.logo_retention)} of them still have MRR. "
            + (_sentence("; ".join(said)) if said else "Nothing moved.")
        )
    base = add_months(month, -12)
    t12 = top.trailing_12
    if t12 is None or t12.nrr is None or t12.grr is None:
        sentences.append(
            f"No account had MRR in {_month_name(base)}, so there is no trailing-12-month "
            "retention yet."
        )
    else:
        sentences.append(
            f"Over the trailing 12 months, the {t12.cohort_size} accounts with MRR in "
            f"{_month_name(base)} ({_money(t12.start_mrr, cur)}) are at {_percent(t12.nrr)} net "
            f"and {_percent(t12.grr)} gross revenue retention (at {_month_name(base)}'s exchange "
            f"rates); {_percent(t12.logo_retention)} of them are still customers."
        )
    return sentences


def _pct(figures: Trailing | None, which: str) -> Decimal | None:
    if figures is None:
        return None
    return _times100(figures.nrr if which == "nrr" else figures.grr)


def _times100(value: Decimal | None) -> Decimal | None:
    return None if value is None else value * 100


def _headline_table(top: Headline) -> Table:
    cur = top.reporting_currency

    def trailing_rows(
        key: str, window: str, figures: Trailing | None
    ) -> list[tuple[str, str, str]]:
        return [
            (
                f"{key}_nrr_pct",
                f"Net revenue retention, {window} (%)",
                percent_text(figures.nrr) if figures else "",
            ),
            (
                f"{key}_grr_pct",
                f"Gross revenue retention, {window} (%)",
                percent_text(figures.grr) if figures else "",
            ),
            (
                f"{key}_logo_retention_pct",
                f"Logo retention, {window} (%)",
                percent_text(figures.logo_retention) if figures else "",
            ),
            (
                f"{key}_cohort_size",
                f"Cohort, {window}: accounts with MRR at the window's start",
                str(figures.cohort_size if figures else 0),
            ),
        ]

    mom = top.month_over_month or MonthOverMonth(top.month, ZERO, ZERO, ZERO, ZERO, 0, 0)
    opening = top.month_over_month is None
    rows: list[tuple[str, ...]] = [
        ("month", "Month", format_month(top.month)),
        ("reporting_currency", "Reporting currency", top.reporting_currency),
        ("mrr_fixed", f"Fixed MRR ({cur})", money_text(top.mrr.fixed)),
        ("mrr_metered", f"Metered MRR, run rate ({cur})", money_text(top.mrr.metered)),
        (
            "mrr_total_usage_inclusive",
            f"Total MRR, usage-inclusive ({cur})",
            money_text(top.mrr.total),
        ),
        ("accounts_with_mrr", "Accounts with MRR", str(top.mrr.accounts)),
        ("mom_nrr_pct", "Net revenue retention, month over month (%)", percent_text(mom.nrr)),
        ("mom_grr_pct", "Gross revenue retention, month over month (%)", percent_text(mom.grr)),
        (
            "mom_logo_retention_pct",
            "Logo retention, month over month (%)",
            percent_text(mom.logo_retention),
        ),
        (
            "mom_cohort_size",
            "Cohort, month over month: accounts with MRR last month",
            "" if opening else str(mom.cohort_size),
        ),
        *trailing_rows("t12m", "trailing 12 months", top.trailing_12),
        *trailing_rows("t3m", "trailing 3 months", top.trailing_3),
    ]
    return Table(
        "headline",
        "Headline figures",
        ("figure", "label", "value"),
        rows,
        "Month over month in constant currency (both months at last month's rates); trailing "
        "windows at the rates of the window's first month; an empty value (–) is an absent "
        "figure: an empty cohort, or the ledger's opening month.",
        labels=("Key", "Figure", "Value"),
        shown=("label", "value"),
        css="headline",
    )


_BRIDGE_LABELS = {
    "start": "MRR at the start (last month)",
    "new": "+ New accounts",
    "reactivation": "+ Returning accounts (reactivation)",
    "expansion": "+ Expansion",
    "contraction": "− Contraction",
    "churn": "− Churn",
    "fx": "± Exchange rates (fx)",
    "end": "MRR at the end (this month)",
}


def _bridge_table(top: Headline) -> Table:
    title = f"MRR bridge {format_month(top.month)}"
    columns = ("line", "label", "amount")
    labels = ("Line", "Line", f"Amount ({top.reporting_currency})")
    if top.bridge is None:
        return Table(
            "bridge",
            title,
            columns,
            [(name, _BRIDGE_LABELS[name], "") for name in BRIDGE_LINES],
            f"{format_month(top.month)} is the ledger's opening month: there is no month before "
            "it to move from, so the bridge is absent (empty), not zero.",
            labels=labels,
            shown=("label", "amount"),
        )
    return Table(
        "bridge",
        title,
        columns,
        [(name, _BRIDGE_LABELS[name], money_text(amount)) for name, amount in top.bridge.lines()],
        "start + new + reactivation + expansion − contraction − churn + fx = end; movements in "
        "constant currency (both months at last month's rates), fx the rate effect.",
        labels=labels,
        shown=("label", "amount"),
    )


def _trend_table(
    totals: list[MrrTotals],
    moms: list[MonthOverMonth],
    t12: dict[dt.date, Trailing],
    opening_month: dt.date,
    cur: str,
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
        "MoM: month over month, cohort = accounts with MRR the month before; T12M: trailing "
        "12 months, cohort = accounts with MRR twelve months before.",
        labels=(
            "Month",
            f"Fixed MRR ({cur})",
            f"Metered MRR ({cur})",
            f"Total MRR ({cur})",
            "MoM NRR %",
            "MoM GRR %",
            "MoM cohort",
            "T12M NRR %",
            "T12M GRR %",
            "T12M logo retention %",
            "T12M cohort",
        ),
    )


def _max_age(found: list[Cohort], month: dt.date) -> int:
    return max((months_between(c.month, month) for c in found), default=0)


def _cohort_table(found: list[Cohort], month: dt.date, cur: str) -> Table:
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
    page_ages = [age for age in COHORT_PAGE_AGES if age in ages]
    return Table(
        "cohorts",
        "New-account cohorts: MRR k months after the first month, % of the first month",
        ("cohort_month", "accounts", "start_mrr", *(f"m{age}_pct" for age in ages)),
        rows,
        "Accounts by their first month with MRR; each month at its own rates. The page shows "
        "months " + ", ".join(f"+{age}" for age in page_ages) + "; cohorts.csv has every month.",
        labels=(
            "First month",
            "Accounts",
            f"First month's MRR ({cur})",
            *(f"+{age}" for age in ages),
        ),
        shown=("cohort_month", "accounts", "start_mrr", *(f"m{age}_pct" for age in page_ages)),
    )


def _movers_table(gains: list[Mover], losses: list[Mover], cur: str) -> Table:
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
        "Amount in constant currency (last month's rates).",
        labels=(
            "Gain or loss",
            "Account",
            "Name",
            "Movement",
            f"Amount ({cur})",
            f"MRR last month ({cur})",
            f"MRR this month ({cur})",
        ),
    )


_DIMENSION_LABELS = {
    "industry": "Industry",
    "region": "Region",
    "csm": "Customer success manager",
    "size": "Size (MRR a year ago)",
    "product_line": "Product line",
}


# The breakdown table's columns as a reader sees them; the CSV has the dimension's key first.
_BREAKDOWN_SHOWN = (
    "breakdown",
    "segment",
    "cohort_size",
    "start_mrr",
    "end_mrr",
    "nrr_pct",
    "grr_pct",
    "logo_retention_pct",
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
                    _DIMENSION_LABELS[dimension],
                    segment,
                    str(figures.cohort_size),
                    money_text(figures.start_mrr),
                    money_text(figures.end_mrr),
                    percent_text(figures.nrr),
                    percent_text(figures.grr),
                    percent_text(figures.logo_retention),
                )
            )
    cur = reporting_currency
    empty = "" if rows else " No account had MRR twelve months before: no breakdown yet."
    return Table(
        "breakdowns",
        "Trailing-12-month retention by segment",
        ("dimension", *_BREAKDOWN_SHOWN),
        rows,
        "Cohort: MRR > 0 twelve months before; size band by MRR then; product line cohorts are "
        "account × product line; industry, region and CSM are the registry's current values."
        + empty,
        labels=(
            "Dimension",
            "Breakdown",
            "Segment",
            "Cohort (accounts)",
            f"MRR a year ago ({cur})",
            f"MRR now ({cur})",
            "NRR %",
            "GRR %",
            "Logo retention %",
        ),
        shown=_BREAKDOWN_SHOWN,  # the dimension's key stays in the CSV only
    )


def _reconciliation_table(conn: psycopg.Connection[TupleRow], month: dt.date, cur: str) -> Table:
    return Table(
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
            for r in reconciliation(conn, month, cur)
        ],
        "What was invoiced for the month (at the month's rate; an empty amount lacks an "
        "exchange rate), then the ledger's MRR lines: metered MRR is a run rate of an average "
        "month, so it differs from what a short or long month billed.",
        labels=("Item", "Lines", f"Amount ({cur})", "Treatment in MRR"),
    )


ATTRIBUTION_COLUMNS = (
    "basis",
    "label",
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

    row_label = (
        f"Month {period.label}" if basis == "month" else f"Trailing 12 months {period.label}"
    )
    return (
        basis,
        row_label,
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
        "month (cohort: MRR last month); the trailing-12-months row sums the months above and "
        "takes its NRR and cohort from the trailing 12 months. An empty cell (–) is a figure "
        "not measured (no alerts then), never a zero. attribution.csv also has the account "
        "counts, the cohort's MRR and the expansion taken out.",
        labels=tuple(_ATTRIBUTION_LABELS.get(c, c) for c in ATTRIBUTION_COLUMNS),
        shown=(
            "label",
            "alerts",
            "expansion",
            "influenced_expansion",
            "churn",
            "flagged_churn",
            "unflagged_churn",
            "cohort_size",
            "nrr_pct",
            "nrr_without_influenced_pct",
        ),
    )


_ATTRIBUTION_LABELS = {
    "basis": "Basis",
    "label": "Period",
    "period": "Months",
    "alerts": "Alerts",
    "note": "Note",
    "expansion": "Expansion",
    "expansion_accounts": "Accounts expanding",
    "influenced_expansion": "Expansion after an alert acted on",
    "influenced_accounts": "Accounts expanding after an alert",
    "churn": "Churn",
    "churn_accounts": "Accounts churned",
    "flagged_churn": "Churn flagged by a risk alert",
    "flagged_accounts": "Accounts churned with a flag",
    "unflagged_churn": "Churn not flagged",
    "unflagged_accounts": "Accounts churned without a flag",
    "cohort_size": "NRR cohort (accounts)",
    "start_mrr": "Cohort MRR at the start",
    "nrr_pct": "NRR %",
    "removed_expansion": "Expansion taken out",
    "nrr_without_influenced_pct": "NRR without expansion after alerts %",
}
