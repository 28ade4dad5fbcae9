"""Each account's MRR month by month as the ledger holds it (``mrr_ledger``, summed over
product lines and currencies, in the reporting currency the ledger was built in): what the
account pages show, read through this function rather than the ledger's table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from psycopg.rows import TupleRow


@dataclass(frozen=True)
class MonthMrr:
    """One account's MRR of one month, reporting currency, to the cent."""

    month: dt.date
    fixed: Decimal
    metered: Decimal

    @property
    def total(self) -> Decimal:
        return self.fixed + self.metered


def mrr_history(
    conn: psycopg.Connection[TupleRow],
    account_ids: Sequence[str] | None,
    first: dt.date,
    last: dt.date,
) -> dict[str, list[MonthMrr]]:
    """The ledger's months ``first`` through ``last`` (first days of months) of ``account_ids``
    (every account when None), oldest first; a month the ledger has no line for is absent
    (no MRR that month, or not built)."""
    found: dict[str, list[MonthMrr]] = {}
    for account_id, month, fixed, metered in conn.execute(
        "SELECT account_id, month, sum(fixed_mrr), sum(metered_mrr) FROM mrr_ledger"
        " WHERE month BETWEEN %(first)s AND %(last)s"
        " AND (%(all)s OR account_id = ANY(%(ids)s))"
        " GROUP BY account_id, month ORDER BY account_id, month",
        {"first": first, "last": last, "all": account_ids is None, "ids": list(account_ids or ())},
    ):
        found.setdefault(str(account_id), []).append(MonthMrr(month, fixed, metered))
    return found
