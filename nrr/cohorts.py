"""Revenue retention of new-account cohorts (the report's heat map), from ``mrr_movements``.

A cohort is the accounts whose movement in a month was ``new`` (first month with MRR > 0 after
the ledger's opening month; reactivated accounts stay in their first cohort). Its cell k is
Σ MRR of those accounts k months later / Σ MRR in their first month, at each month's own rates.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
from psycopg.rows import TupleRow

from core.money import ZERO, ratio
from core.months import months_between

_COHORTS = """
WITH cohorts AS (
    SELECT account_id, month AS cohort FROM mrr_movements
    WHERE kind = 'new' AND month BETWEEN %(first)s AND %(last)s
)
SELECT c.cohort, m.month, count(*) FILTER (WHERE m.mrr > 0), sum(m.mrr)
FROM cohorts c
JOIN mrr_movements m ON m.account_id = c.account_id AND m.month BETWEEN c.cohort AND %(last)s
GROUP BY c.cohort, m.month
"""


@dataclass
class Cohort:
    """One cohort: its first month, size, starting MRR and Σ MRR / accounts k months later."""

    month: dt.date
    accounts: int = 0
    start_mrr: Decimal = ZERO
    mrr_by_age: dict[int, Decimal] = field(default_factory=dict)
    accounts_by_age: dict[int, int] = field(default_factory=dict)

    def retention(self, age: int) -> Decimal | None:
        """Σ MRR at ``age`` / Σ MRR at age 0; None beyond the data."""
        if age not in self.mrr_by_age and age not in self.accounts_by_age:
            return None
        return ratio(self.mrr_by_age.get(age, ZERO), self.start_mrr)


def cohorts(conn: psycopg.Connection[TupleRow], first: dt.date, last: dt.date) -> list[Cohort]:
    """Cohorts that started in ``first`` .. ``last``, with their months up to ``last``."""
    found: dict[dt.date, Cohort] = defaultdict(lambda: Cohort(dt.date.min))
    for cohort, month, accounts, mrr in conn.execute(_COHORTS, {"first": first, "last": last}):
        entry = found[cohort]
        entry.month = cohort
        age = months_between(cohort, month)
        entry.mrr_by_age[age] = Decimal(mrr)
        entry.accounts_by_age[age] = int(accounts)
        if age == 0:
            entry.accounts = int(accounts)
            entry.start_mrr = Decimal(mrr)
    # every age up to `last` exists for a cohort, even when all its accounts had left
    for entry in found.values():
        for age in range(months_between(entry.month, last) + 1):
            entry.mrr_by_age.setdefault(age, ZERO)
            entry.accounts_by_age.setdefault(age, 0)
    return sorted(found.values(), key=lambda c: c.month)
