"""Movements in SQL and the monthly bridge read back.

Per account, month t against month t-1 (DESIGN.md):

========================  ==========================================  =====================
kind                      when                                        amount (>= 0)
========================  ==========================================  =====================
new                       MRR_{t-1} = 0, MRR_t > 0, never > 0 before  MRR_t (constant cur.)
reactivation              MRR_{t-1} = 0, MRR_t > 0, > 0 before        MRR_t (constant cur.)
expansion                 both > 0, MRR_t (constant cur.) higher      the increase
contraction               both > 0, MRR_t (constant cur.) lower       the decrease
churn                     MRR_{t-1} > 0, MRR_t = 0                    MRR_{t-1}
none                      otherwise                                   0
========================  ==========================================  =====================

"Constant currency" is MRR_t converted at the rates of t-1; ``fx`` = MRR_t - that, so
previous + new + reactivation + expansion - contraction - churn + fx = MRR_t exactly.

``mrr_movements`` holds one row per account and month where MRR_{t-1} > 0 or MRR_t > 0 (this
month's MRR split fixed / metered beside it, so monthly totals need not re-read the ledger), with
the kind, its amount in constant currency (MRR_t at t-1's rates, line by line to the cent) and the
``fx`` effect. The bridge of a month (:class:`Bridge`) is the sum of its rows, so start + new +
reactivation + expansion - contraction - churn + fx = end holds exactly. The tests hold the query
to a line-by-line oracle of the same definitions (tests/nrr/oracle.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from psycopg.rows import TupleRow

from core.money import ZERO
from core.months import month_range

# One pass over the ledger: account-month totals (MRR_t, and MRR_t at t-1's rates), then per
# account in month order the previous month's MRR (0 after a gap) and a churn row after the last
# month of each run; "positive before t-1" from the first positive month of the series so far
# and, before the series, from the ledger's earlier months.
_MOVEMENTS = """
WITH monthly AS (
    -- summed in whole cents (bigint: exact, and cheaper than numeric over millions of lines)
    SELECT l.account_id, l.month, sum((l.mrr * 100)::bigint) * 0.01 AS mrr,
           sum((l.fixed_mrr * 100)::bigint) * 0.01 AS fixed_mrr,
           sum((l.metered_mrr * 100)::bigint) * 0.01 AS metered_mrr,
           -- at last month's rates: the same, corrected on foreign-currency lines only
           (sum((l.mrr * 100)::bigint)
            + coalesce(sum(((round(l.fixed_mrr_local * f.rate, 2)
                             + round(l.metered_mrr_local * f.rate, 2) - l.mrr) * 100)::bigint)
                       FILTER (WHERE l.currency <> %(reporting)s), 0)) * 0.01
               AS constant_currency
    FROM mrr_ledger l
    LEFT JOIN fx_rates f ON f.month = (l.month - interval '1 month')::date
                        AND f.currency = l.currency
    WHERE l.month BETWEEN (%(since)s::date - interval '1 month')::date AND %(through)s
    GROUP BY l.account_id, l.month
), earlier AS (
    SELECT DISTINCT account_id FROM mrr_ledger
    WHERE month < (%(since)s::date - interval '1 month')::date AND mrr > 0
), series AS (
    SELECT account_id, month, mrr, fixed_mrr, metered_mrr, constant_currency,
           lag(month) OVER w AS lag_month, lag(mrr) OVER w AS lag_mrr,
           lead(month) OVER w AS lead_month,
           -- the first month with MRR up to this one (the window's frame ends at this row)
           min(month) FILTER (WHERE mrr > 0) OVER w AS first_positive
    FROM monthly
    WINDOW w AS (PARTITION BY account_id ORDER BY month)
), pairs AS (
    SELECT account_id, month,
           CASE WHEN lag_month = (month - interval '1 month')::date THEN lag_mrr ELSE 0 END
               AS previous,
           mrr AS current, fixed_mrr, metered_mrr, constant_currency, first_positive
    FROM series
    WHERE month >= %(since)s
    UNION ALL  -- after the last month of a run, the next month with nothing
    SELECT account_id, (month + interval '1 month')::date, mrr, 0, 0, 0, 0, first_positive
    FROM series
    WHERE (lead_month IS NULL OR lead_month > (month + interval '1 month')::date)
      AND month BETWEEN (%(since)s::date - interval '1 month')::date
                    AND (%(through)s::date - interval '1 month')::date
), classified AS (
    SELECT p.*,
           CASE WHEN previous <= 0 THEN
                    CASE WHEN e.account_id IS NOT NULL
                              OR p.first_positive < (p.month - interval '1 month')::date
                         THEN 'reactivation' ELSE 'new' END
                WHEN current <= 0 THEN 'churn'
                WHEN constant_currency > previous THEN 'expansion'
                WHEN constant_currency < previous THEN 'contraction'
                ELSE 'none' END AS kind
    FROM pairs p LEFT JOIN earlier e ON e.account_id = p.account_id
    WHERE previous > 0 OR current > 0
)
INSERT INTO mrr_movements (month, account_id, previous_mrr, mrr, fixed_mrr, metered_mrr,
                           constant_currency_mrr, kind, amount, fx)
SELECT month, account_id, previous, current, fixed_mrr, metered_mrr,
       CASE WHEN kind = 'churn' THEN 0 ELSE constant_currency END,
       kind,
       CASE WHEN kind IN ('new', 'reactivation') THEN constant_currency
            WHEN kind = 'churn' THEN previous
            ELSE abs(constant_currency - previous) END,
       CASE WHEN kind = 'churn' THEN 0 ELSE current - constant_currency END
FROM classified
ORDER BY month
"""

_BRIDGES = """
SELECT month,
       sum(previous_mrr),
       coalesce(sum(amount) FILTER (WHERE kind = 'new'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'reactivation'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'expansion'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'contraction'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'churn'), 0),
       sum(fx),
       sum(mrr),
       count(*) FILTER (WHERE previous_mrr > 0),
       count(*) FILTER (WHERE previous_mrr > 0 AND mrr > 0),
       count(*) FILTER (WHERE kind = 'new'),
       count(*) FILTER (WHERE kind = 'reactivation'),
       count(*) FILTER (WHERE kind = 'churn')
FROM mrr_movements
WHERE month BETWEEN %s AND %s
GROUP BY month
"""


@dataclass(frozen=True)
class Bridge:
    """The month's MRR bridge over all accounts, in the reporting currency.

    ``start`` is last month's MRR, ``end`` this month's; ``cohort_size`` counts accounts with
    MRR > 0 last month and ``retained_logos`` those of them still > 0.
    """

    month: dt.date
    start: Decimal = ZERO
    new: Decimal = ZERO
    reactivation: Decimal = ZERO
    expansion: Decimal = ZERO
    contraction: Decimal = ZERO
    churn: Decimal = ZERO
    fx: Decimal = ZERO
    end: Decimal = ZERO
    cohort_size: int = 0
    retained_logos: int = 0
    new_logos: int = 0
    reactivated_logos: int = 0
    churned_logos: int = 0

    def computed_end(self) -> Decimal:
        return (
            self.start
            + self.new
            + self.reactivation
            + self.expansion
            - self.contraction
            - self.churn
            + self.fx
        )

    def reconciles(self) -> bool:
        """start + new + reactivation + expansion - contraction - churn + fx == end, exactly."""
        return self.computed_end() == self.end

    def lines(self) -> list[tuple[str, Decimal]]:
        """The bridge as signed lines, start to end."""
        return [
            ("start", self.start),
            ("new", self.new),
            ("reactivation", self.reactivation),
            ("expansion", self.expansion),
            ("contraction", -self.contraction),
            ("churn", -self.churn),
            ("fx", self.fx),
            ("end", self.end),
        ]


def rebuild_movements(
    conn: psycopg.Connection[TupleRow], reporting_currency: str, since: dt.date, through: dt.date
) -> int:
    """Insert the movements of months ``since`` .. ``through`` (their rows must be absent) from
    the ledger; returns the number of rows."""
    if since > through:
        return 0
    cursor = conn.execute(
        _MOVEMENTS, {"since": since, "through": through, "reporting": reporting_currency}
    )
    return cursor.rowcount


def bridges(conn: psycopg.Connection[TupleRow], first: dt.date, last: dt.date) -> list[Bridge]:
    """The bridge of every month ``first`` .. ``last`` (a month without MRR is all zeros)."""
    found: dict[dt.date, Bridge] = {}
    for row in conn.execute(_BRIDGES, (first, last)):
        month: dt.date = row[0]
        start, new, reactivation, expansion, contraction, churn, fx, end = map(Decimal, row[1:9])
        cohort, retained, new_logos, reactivated, churned = map(int, row[9:])
        found[month] = Bridge(
            month,
            start=start,
            new=new,
            reactivation=reactivation,
            expansion=expansion,
            contraction=contraction,
            churn=churn,
            fx=fx,
            end=end,
            cohort_size=cohort,
            retained_logos=retained,
            new_logos=new_logos,
            reactivated_logos=reactivated,
            churned_logos=churned,
        )
    return [found.get(month, Bridge(month)) for month in month_range(first, last)]


def bridge(conn: psycopg.Connection[TupleRow], month: dt.date) -> Bridge:
    return bridges(conn, month, month)[0]
