"""The report's HTML page: one self-contained file (inline CSS and SVG, no scripts, no links
out). Each figure table is marked ``data-csv="<file>"`` and each cell carries the CSV's exact
text in ``data-value``; what is shown is that text with thousands separators.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import escape

TableSpec = tuple[str, str, Sequence[str], Sequence[Sequence[str]], str]

_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table.figures { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
table.figures th, table.figures td { border: 1px solid #ddd; padding: 2px 6px; }
table.figures td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note, p.definitions { font-size: 0.85em; color: #555; }
.scroll { overflow-x: auto; }
"""
_SECTIONS = (
    ("headline.csv", "Headline", ()),
    ("bridge.csv", "MRR bridge", ("bridge",)),
    ("trend.csv", "Trend over 24 months", ("trend", "mrr")),
    ("cohorts.csv", "Cohorts", ("cohorts",)),
    ("top_movers.csv", "Top movers", ("movers",)),
    ("breakdowns.csv", "Breakdowns", ()),
    ("attribution.csv", "Signal attribution", ("attribution",)),
    ("reconciliation.csv", "Reconciliation to invoices", ()),
)
_DEFINITIONS = (
    "MRR = fixed recurring fees normalised to a month (annual / 12, quarterly / 3, multi-year / "
    "term) + metered usage as a run rate of an average month: the month's billed usage ÷ the "
    "month's days × 30.4375 (365.25 / 12), so the same daily usage is the same MRR in February "
    "as in March; the monthly minimum is a floor on that run rate. Billed usage comes from the "
    "invoices when they exist, else from telemetry (m³ × price). One-offs and taxes are "
    "excluded; what was invoiced is reconciled separately (Reconciliation to invoices). A "
    "contract counts in a month when it is in force on the month's last day. Each month at its "
    "own exchange rate. Movements: new (first MRR ever), reactivation (back after an earlier "
    "month with MRR), expansion, contraction, churn (to 0), measured in constant currency (both "
    "months at the earlier month's rate); fx is the rate effect. MoM NRR = (start + expansion - "
    "contraction - churn) / start over accounts with MRR last month, GRR without expansion. "
    "T12M NRR = Σ MRR now / Σ MRR twelve months ago over accounts with MRR then (an account that "
    "churned and returned counts at its MRR now), GRR = Σ min(now, then) / Σ then, logo retention "
    "= share of that cohort with MRR now; both months at the rates of the window's first month "
    "(twelve months ago; three for T3M), so a rate move is never retention. An empty cohort has "
    "no figure."
)
_ATTRIBUTION = (
    "Signal attribution is association, not causation: it books expansion that followed an "
    "alert the CSM acted on, and churn that an open risk alert had flagged. 'NRR without "
    "signal-influenced expansion' is a bookkeeping figure (the NRR with that expansion "
    "taken out), not an estimate of what would have happened without the signals."
)


def display(value: str) -> str:
    """A CSV number with thousands separators (``1234567.50`` -> ``1,234,567.50``)."""
    if not _NUMBER.fullmatch(value):
        return value
    whole, dot, fraction = value.partition(".")
    sign = "-" if whole.startswith("-") else ""
    digits = whole.lstrip("-")
    grouped = f"{int(digits):,}"
    return f"{sign}{grouped}{dot}{fraction}"


def _table(
    file_name: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], note: str
) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = bool(_NUMBER.fullmatch(value))
            css = ' class="num"' if numeric else ""
            cells.append(
                f'<td{css} data-value="{escape(value, quote=True)}">{escape(display(value))}</td>'
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    return (
        f"<h3>{escape(title)}</h3>{note_html}"
        f'<div class="scroll"><table class="figures" data-csv="{escape(file_name, quote=True)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def render_html(
    *,
    month: str,
    reporting_currency: str,
    mrr_label: str,
    tables: Sequence[TableSpec],
    charts: Mapping[str, str],
) -> str:
    """The whole page."""
    by_file = {spec[0]: spec for spec in tables}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>NRR report {escape(month)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Net revenue retention, {escape(month)}</h1>",
        f"<p>All money in {escape(reporting_currency)}; MRR is {escape(mrr_label)}. Every table "
        "below is also a CSV file of the same name next to this page.</p>",
    ]
    for file_name, heading, chart_names in _SECTIONS:
        parts.append(f"<h2>{escape(heading)}</h2>")
        parts.extend(f"<figure>{charts[name]}</figure>" for name in chart_names if name in charts)
        if file_name in by_file:
            parts.append(_table(*by_file[file_name]))
    parts += [
        "<h2>Definitions</h2>",
        f'<p class="definitions">{escape(_DEFINITIONS)}</p>',
        f'<p class="definitions">{escape(_ATTRIBUTION)}</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
