"""Retention figures read from the database: month over month (from the bridge) and trailing
windows, overall and broken down, each with its cohort size.

The formulas are ``nrr.metrics``'; here SQL sums the cohort, Python divides. Trailing windows
take MRR_t in constant currency at the rates of t-W (``nrr`` docstring), and count an account
whose MRR_t is 0 (to the cent) as gone, as the movements do. Account-level windows read the
movements (one row per account and month with MRR) and correct MRR_t's foreign-currency ledger
lines to the rates of t-W; per product line they read the ledger.

Breakdowns place each cohort account where it stood at the start of the window:
``size`` by its MRR_{t-W} (bands in the reporting currency, ``SIZE_BANDS``) and
``product_line`` by the product lines it had MRR in at t-W (the cohort is then account ×
product line). ``industry``, ``region`` and ``csm`` come from the registry's *current*
attributes: ``accounts`` keeps no history, so an account moved to another CSM inside the window
is shown under its new CSM.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from core.months import add_months
from nrr.bridge import bridges
from nrr.metrics import MonthOverMonth, Trailing

DIMENSIONS = ("industry", "region", "csm", "size", "product_line")
ACCOUNT = "account"  # per account (not a breakdown of the report: attribution's caps)
# (lower bound, label) of MRR at the start of the window, reporting currency, ascending.
SIZE_BANDS = ((0, "< 1k"), (1_000, "1k-5k"), (5_000, "5k-20k"), (20_000, ">= 20k"))
NO_VALUE = "(none)"


def month_over_month(
    conn: psycopg.Connection[TupleRow], first: dt.date, last: dt.date
) -> list[MonthOverMonth]:
    return [MonthOverMonth.from_bridge(b) for b in bridges(conn, first, last)]


def _size_band() -> sql.Composable:
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN b.mrr >= {} THEN {}").format(sql.Literal(bound), sql.Literal(label))
        for bound, label in reversed(SIZE_BANDS)
    )
    return sql.SQL("CASE {} END").format(cases)


def _segment(dimension: str | None) -> sql.Composable:
    """The segment of a cohort row ``b`` (its account joined as ``a``)."""
    if dimension is None:
        return sql.Literal("")
    if dimension == "product_line":
        return sql.SQL("b.line")
    if dimension == "size":
        return _size_band()
    if dimension == ACCOUNT:
        return sql.SQL("b.account_id")
    column = {"industry": "industry", "region": "region", "csm": "csm_id"}[dimension]
    return sql.SQL("coalesce(a.{}, {})").format(sql.Identifier(column), sql.Literal(NO_VALUE))


# Per account: MRR_{t-W} from the movements (one row per account and month with MRR; the
# ledger's opening month is the next month's previous_mrr), MRR_t from the movements too, put
# at the rates of t-W by correcting its foreign-currency ledger lines only.
_TRAILING = """
WITH base AS (
    SELECT m.account_id, m.month, m.mrr
    FROM mrr_movements m
    WHERE m.month BETWEEN %(base_first)s AND %(base_last)s AND m.mrr > 0
    UNION ALL
    SELECT m.account_id, (m.month - interval '1 month')::date, m.previous_mrr
    FROM mrr_movements m JOIN mrr_ledger_state s
      ON m.month = (s.first_month + interval '1 month')::date
    WHERE s.first_month BETWEEN %(base_first)s AND %(base_last)s AND m.previous_mrr > 0
), correction AS (
    SELECT l.account_id, l.month,
           sum(((round(l.fixed_mrr_local * f.rate, 2) + round(l.metered_mrr_local * f.rate, 2)
                 - l.mrr) * 100)::bigint) * 0.01 AS amount
    FROM mrr_ledger l
    JOIN fx_rates f ON f.month = (l.month - %(window)s * interval '1 month')::date
                   AND f.currency = l.currency
    WHERE l.currency <> %(reporting)s AND l.month BETWEEN %(first)s AND %(last)s
    GROUP BY l.account_id, l.month
), later AS (
    SELECT m.account_id, m.month, m.mrr, m.mrr + coalesce(c.amount, 0) AS constant_currency
    FROM mrr_movements m
    LEFT JOIN correction c ON c.account_id = m.account_id AND c.month = m.month
    WHERE m.month BETWEEN %(first)s AND %(last)s AND m.mrr > 0
)
SELECT (b.month + %(window)s * interval '1 month')::date AS month, {segment} AS segment,
       count(*), sum(b.mrr), coalesce(sum(n.constant_currency), 0),
       sum(least(coalesce(n.constant_currency, 0), b.mrr)),
       count(*) FILTER (WHERE n.mrr > 0)
FROM base b
LEFT JOIN accounts a ON a.account_id = b.account_id
LEFT JOIN later n ON n.account_id = b.account_id
                 AND n.month = (b.month + %(window)s * interval '1 month')::date
GROUP BY 1, 2
"""

# Per account × product line, from the ledger: one pass over months t-W and t, the later ones
# also at the rates of t-W.
_TRAILING_BY_LINE = """
WITH monthly AS MATERIALIZED (
    -- summed in whole cents (bigint: exact, and cheaper than numeric over millions of lines)
    SELECT l.account_id, l.month, {line} AS line, sum((l.mrr * 100)::bigint) * 0.01 AS mrr,
           sum((CASE WHEN l.month < %(first)s THEN 0
                     WHEN l.currency = %(reporting)s THEN l.mrr
                     ELSE round(l.fixed_mrr_local * coalesce(f.rate, l.rate), 2)
                          + round(l.metered_mrr_local * coalesce(f.rate, l.rate), 2) END
                * 100)::bigint) * 0.01 AS constant_currency
    FROM mrr_ledger l
    LEFT JOIN fx_rates f ON f.month = (l.month - %(window)s * interval '1 month')::date
                        AND f.currency = l.currency
    WHERE l.month BETWEEN %(base_first)s AND %(base_last)s
       OR l.month BETWEEN %(first)s AND %(last)s
    GROUP BY l.account_id, l.month {line_group}
), base AS (
    SELECT b.*, {segment} AS segment
    FROM monthly b LEFT JOIN accounts a ON a.account_id = b.account_id
    WHERE b.month BETWEEN %(base_first)s AND %(base_last)s AND b.mrr > 0
)
SELECT (b.month + %(window)s * interval '1 month')::date AS month, b.segment,
       count(*), sum(b.mrr), coalesce(sum(n.constant_currency), 0),
       sum(least(coalesce(n.constant_currency, 0), b.mrr)),
       count(*) FILTER (WHERE n.mrr > 0)
FROM base b
LEFT JOIN monthly n ON n.account_id = b.account_id AND n.line = b.line
                   AND n.month = (b.month + %(window)s * interval '1 month')::date
GROUP BY 1, 2
"""


def trailing(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    first: dt.date,
    last: dt.date,
    window_months: int = 12,
    dimension: str | None = None,
) -> dict[tuple[dt.date, str], Trailing]:
    """Trailing-window retention for months ``first`` .. ``last``, keyed by (month, segment);
    the segment is ``""`` without a dimension. A month whose cohort is empty has no entry."""
    if dimension is not None and dimension not in (*DIMENSIONS, ACCOUNT):
        raise ValueError(f"unknown dimension {dimension!r}")
    if dimension == "product_line":
        query = sql.SQL(_TRAILING_BY_LINE).format(
            segment=sql.SQL("b.line"),
            line=sql.SQL("l.product_line"),
            line_group=sql.SQL(", l.product_line"),
        )
    else:
        query = sql.SQL(_TRAILING).format(segment=_segment(dimension))
    params = {
        "first": first,
        "last": last,
        "base_first": add_months(first, -window_months),
        "base_last": add_months(last, -window_months),
        "window": window_months,
        "reporting": reporting_currency,
    }
    result: dict[tuple[dt.date, str], Trailing] = {}
    for month, name, size, start, end, retained, logos in conn.execute(query, params):
        result[(month, str(name))] = Trailing(
            month,
            window_months,
            int(size),
            Decimal(start),
            Decimal(end),
            Decimal(retained),
            int(logos),
        )
    return result


def trailing_series(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    first: dt.date,
    last: dt.date,
    window_months: int = 12,
) -> dict[dt.date, Trailing]:
    """Overall trailing retention per month; a month with an empty cohort is absent."""
    found = trailing(conn, reporting_currency, first, last, window_months)
    return {month: figures for (month, _), figures in found.items()}


def breakdown(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    month: dt.date,
    dimension: str,
    window_months: int = 12,
) -> list[tuple[str, Trailing]]:
    """Trailing retention of ``month`` per value of ``dimension``, largest cohort MRR first."""
    found = trailing(conn, reporting_currency, month, month, window_months, dimension)
    rows = [(name, figures) for (_, name), figures in found.items()]
    return sorted(rows, key=lambda item: (-item[1].start_mrr, item[0]))
