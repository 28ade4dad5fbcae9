"""Reading contracts from their table (core owns it, migration 002) into
:class:`core.contracts.Contract` values; the rules on them stay pure in ``core.contracts``."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import TupleRow

from core.contracts import Contract


def contracts_of(
    conn: psycopg.Connection[TupleRow], account_ids: Sequence[str] | None = None
) -> dict[str, list[Contract]]:
    """The contracts of ``account_ids`` (every account when None) by account, oldest first."""
    found: dict[str, list[Contract]] = {}
    for row in conn.execute(
        "SELECT contract_id, account_id, product_line, kind, currency, start_date, end_date,"
        " billing_period, fee, unit_price, unit, monthly_minimum, renewal, notice_days,"
        " term_months FROM contracts WHERE %(all)s OR account_id = ANY(%(ids)s)"
        " ORDER BY account_id, start_date, contract_id",
        {"all": account_ids is None, "ids": list(account_ids or ())},
    ):
        found.setdefault(row[1], []).append(Contract(*row))
    return found
