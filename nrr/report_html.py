"""The report's HTML page: one self-contained file (inline CSS and SVG, no scripts, no links
out), written for a reader: the headline as sentences and labelled figures, tables with
labelled columns that fit the page, and the definitions at the end.

Each figure table is marked ``data-csv="<file>"`` and ``data-columns="<csv columns shown>"``
(a wide CSV may show only some of its columns on the page; the file has them all), each header
cell names its CSV column in ``data-column``, and each cell carries the CSV's exact text in
``data-value``; what is shown is that text with thousands separators, or ``–`` for an empty
cell (an absent figure).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

_NUMBER = re.compile(r"-?\d+(\.\d+)?")
ABSENT = "–"  # shown for an empty CSV cell: an absent figure
_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin-bottom: 0.2em; }
p.summary { font-size: 1.05em; max-width: 52em; }
table.figures { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; max-width: 100%; }
table.figures th { background: #f3f3f3; font-weight: 600; text-align: left;
                   vertical-align: bottom; }
table.figures th, table.figures td { border: 1px solid #ddd; padding: 2px 5px; }
table.figures td { overflow-wrap: break-word; }
table.figures td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.headline td:first-child { min-width: 22em; }
p.note, .definitions { font-size: 0.85em; color: #555; max-width: 60em; }
figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
@media (max-width: 40em) { table.figures { display: block; overflow-x: auto; }
                           table.headline td:first-child { min-width: 0; } }
@media print { body { margin: 0; max-width: none; font-size: 10pt; }
               table.figures { font-size: 7.5pt; } h2 { break-after: avoid; } }
"""
# (CSV file, section heading, charts above the table)
_SECTIONS = (
    ("headline.csv", "Headline figures", ()),
    ("bridge.csv", "MRR bridge", ("bridge",)),
    ("trend.csv", "Trend over 24 months", ("trend", "mrr")),
    ("cohorts.csv", "New-account cohorts", ("cohorts",)),
    ("top_movers.csv", "Top movers", ("movers",)),
    ("breakdowns.csv", "Breakdowns", ()),
    ("attribution.csv", "Signal attribution", ("attribution",)),
    ("reconciliation.csv", "Reconciliation to invoices", ()),
)
DEFINITIONS = (
    "MRR (usage-inclusive) = fixed recurring fees normalised to a month (annual / 12, quarterly "
    "/ 3, multi-year / term) + metered usage as a run rate of an average month: the month's "
    "billed usage ÷ the month's days × 30.4375 (365.25 / 12), so the same daily usage is the "
    "same MRR in February as in March; the monthly minimum is a floor on that run rate. Billed "
    "usage comes from the invoices when they exist, else from telemetry (m³ × price). One-offs "
    "and taxes are excluded; what was invoiced is reconciled separately (Reconciliation to "
    "invoices). A contract counts in a month when it is in force on the month's last day. Each "
    "month is converted at its own exchange rate.",
    "Movements: new (first MRR ever), reactivation (back after an earlier month with MRR), "
    "expansion, contraction, churn (to 0), measured in constant currency (both months at the "
    "earlier month's rates); fx is the rate effect.",
    "Month-over-month NRR = (start + expansion − contraction − churn) / start over the accounts "
    "with MRR last month; GRR the same without expansion; logo retention = share of them still "
    "with MRR.",
    "Trailing-12-month NRR = Σ MRR now / Σ MRR twelve months ago over the accounts with MRR then "
    "(an account that churned and returned counts at its MRR now); GRR = Σ min(now, then) / "
    "Σ then; logo retention = share of that cohort with MRR now. Both months are converted at "
    "the rates of the window's first month (twelve months ago; three for T3M), so a rate move "
    "is never retention. An empty cohort has no figure.",
)
_ATTRIBUTION = (
    "Signal attribution is association, not causation: it books expansion that followed an "
    "alert the CSM acted on, and churn that an open risk alert had flagged. 'NRR without "
    "signal-influenced expansion' is a bookkeeping figure (the NRR with that expansion "
    "taken out), not an estimate of what would have happened without the signals."
)


@dataclass(frozen=True)
class PageTable:
    """One table of the page: the CSV's columns and rows, the label of each column, and which
    columns the page shows (all when empty)."""

    file_name: str
    title: str
    columns: Sequence[str]
    labels: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""
    shown: Sequence[str] = ()
    css: str = ""


def display(value: str) -> str:
    """A CSV number with thousands separators (``1234567.50`` -> ``1,234,567.50``)."""
    if not _NUMBER.fullmatch(value):
        return value
    whole, dot, fraction = value.partition(".")
    sign = "-" if whole.startswith("-") else ""
    digits = whole.lstrip("-")
    grouped = f"{int(digits):,}"
    return f"{sign}{grouped}{dot}{fraction}"


def _table(table: PageTable, heading: str) -> str:
    shown = list(table.shown) or list(table.columns)
    index = [list(table.columns).index(name) for name in shown]
    label = dict(zip(table.columns, table.labels, strict=True))
    head = "".join(
        f'<th data-column="{escape(name, quote=True)}">{escape(label[name])}</th>' for name in shown
    )
    body = []
    for row in table.rows:
        cells = []
        for value in (row[i] for i in index):
            css = ' class="num"' if _NUMBER.fullmatch(value) or not value else ""
            shown_text = display(value) if value else ABSENT
            cells.append(
                f'<td{css} data-value="{escape(value, quote=True)}">{escape(shown_text)}</td>'
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    note_html = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    css = f"figures {table.css}".strip()
    title = f"<h3>{escape(table.title)}</h3>" if table.title != heading else ""
    return (
        f"{title}{note_html}"
        f'<table class="{css}" data-csv="{escape(table.file_name, quote=True)}" '
        f'data-columns="{escape(",".join(shown), quote=True)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_html(
    *,
    month: str,
    reporting_currency: str,
    mrr_label: str,
    summary: Sequence[str],
    tables: Sequence[PageTable],
    charts: Mapping[str, str],
    chart_notes: Mapping[str, str],
) -> str:
    """The whole page: ``summary`` paragraphs first, then each section's charts (or the note
    saying why a chart is not drawn) and table."""
    by_file = {table.file_name: table for table in tables}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>NRR report {escape(month)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Net revenue retention, {escape(month)}</h1>",
        *(f'<p class="summary">{escape(text)}</p>' for text in summary),
        f'<p class="note">All money in {escape(reporting_currency)}; MRR is '
        f"{escape(mrr_label)}. Every table below is also a CSV file of the same name next to "
        "this page; the definitions are at the end.</p>",
    ]
    for file_name, heading, chart_names in _SECTIONS:
        parts.append(f"<h2>{escape(heading)}</h2>")
        for name in chart_names:
            if name in charts:
                parts.append(f"<figure>{charts[name]}</figure>")
            if name in chart_notes:  # why the chart is not drawn, or what it leaves out
                parts.append(f'<p class="note">{escape(chart_notes[name])}</p>')
        if file_name in by_file:
            parts.append(_table(by_file[file_name], heading))
    parts += [
        "<h2>Definitions</h2>",
        '<ul class="definitions">',
        *(f"<li>{escape(text)}</li>" for text in DEFINITIONS),
        "</ul>",
        f'<p class="definitions">{escape(_ATTRIBUTION)}</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
