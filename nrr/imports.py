"""Import contracts, invoice lines and exchange rates from CSV (layouts in ``nrr``'s docstring).

All or nothing: the file is validated completely (``nrr.layouts``), then its references are
checked against the database (accounts registered, contracts imported and of the same account,
a contract_id never moved to another account),
each problem reported as ``file:line: column: message``; only a clean file is written, in one
transaction. Idempotent: rows are upserted on their key and a row identical to the stored one is
left untouched, so importing a file twice changes nothing. A change marks the MRR ledger stale
from the earliest month it can affect (``mrr_ledger_state.stale_since``), which ``nrr rebuild``
picks up.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from core.errors import ImportRejected
from core.layouts import ParsedFile
from core.months import format_month
from nrr.layouts import LAYOUTS, read_file

log = logging.getLogger(__name__)

# The earliest month a changed row can move, from the new row (n) and the stored one (o).
_AFFECTS = {
    "contracts": "date_trunc('month', least(n.start_date, o.start_date))::date",
    "invoices": "least(n.period, o.period)",
    "fx": "n.month",
}


@dataclass(frozen=True)
class ImportResult:
    """What an import did; ``stale_since`` is the earliest month whose MRR may have changed."""

    kind: str
    path: Path
    rows: int
    inserted: int
    updated: int
    stale_since: dt.date | None

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated

    def document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": str(self.path),
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "ledger_stale_since": format_month(self.stale_since) if self.stale_since else None,
        }


def import_file(
    conn: psycopg.Connection[TupleRow], kind: str, path: Path, reporting_currency: str = "EUR"
) -> ImportResult:
    """Validate ``path`` as a ``kind`` file (contracts, invoices, fx) and upsert it."""
    parsed = read_file(kind, path, reporting_currency)
    problems = reference_problems(conn, parsed)
    if problems:
        raise ImportRejected(problems)
    with conn.transaction():
        result = _upsert(conn, parsed)
    log.info(
        "imported %s %s: %d rows, %d new, %d changed",
        kind,
        path,
        result.rows,
        result.inserted,
        result.updated,
    )
    return result


def reference_problems(conn: psycopg.Connection[TupleRow], parsed: ParsedFile) -> list[str]:
    """Rows naming an unregistered account, an unknown contract, or another account's one
    (an invoice line on it, or a contract imported again under another account)."""
    records = parsed.records
    if parsed.layout.kind == "fx" or not records:
        return []
    accounts = {str(r["account_id"]) for r in records}
    known_accounts = {
        str(a)
        for (a,) in conn.execute(
            "SELECT account_id FROM accounts WHERE account_id = ANY(%s)", (sorted(accounts),)
        )
    }
    stored: dict[str, str] = {}
    if parsed.layout.kind == "contracts":
        stored = {
            str(c): str(a)
            for c, a in conn.execute(
                "SELECT contract_id, account_id FROM contracts WHERE contract_id = ANY(%s)",
                (sorted({str(r["contract_id"]) for r in records}),),
            )
        }
    contracts: dict[str, tuple[str, str]] = {}
    if parsed.layout.kind == "invoices":
        wanted = sorted({str(r["contract_id"]) for r in records if r["contract_id"] is not None})
        contracts = {
            str(c): (str(a), str(k))
            for c, a, k in conn.execute(
                "SELECT contract_id, account_id, kind FROM contracts WHERE contract_id = ANY(%s)",
                (wanted,),
            )
        }
    problems: list[str] = []
    for index, record in enumerate(records):
        where = parsed.where(index)
        account = str(record["account_id"])
        if account not in known_accounts:
            problems.append(f"{where}: account_id: {account!r} is not registered")
        moved_from = stored.get(str(record["contract_id"]), account)
        if parsed.layout.kind == "contracts" and moved_from != account:
            problems.append(
                f"{where}: account_id: contract {record['contract_id']!r} is imported under "
                f"account {moved_from!r}; a contract cannot move to another account (its "
                "invoices stay there): end it and import the new account's contract under a "
                "new contract_id"
            )
        contract = record.get("contract_id")
        if parsed.layout.kind != "invoices" or contract is None:
            continue
        if contract not in contracts:
            problems.append(
                f"{where}: contract_id: {contract!r} is not imported (import contracts first)"
            )
            continue
        owner, contract_kind = contracts[str(contract)]
        if owner != account:
            problems.append(f"{where}: contract_id: {contract!r} belongs to account {owner!r}")
        if record["recurring"] and record["kind"] == "metered" and contract_kind != "metered":
            problems.append(
                f"{where}: kind: a recurring metered line on {contract_kind} contract {contract!r}"
            )
    return problems


def _upsert(conn: psycopg.Connection[TupleRow], parsed: ParsedFile) -> ImportResult:
    layout = parsed.layout
    table = sql.Identifier(layout.table)
    staging = sql.Identifier(f"nrr_import_{layout.kind}")
    names = layout.names
    columns = sql.SQL(", ").join(map(sql.Identifier, names))
    key = sql.SQL(", ").join(map(sql.Identifier, layout.key))
    values = [n for n in names if n not in layout.key]

    def row_of(alias: str) -> sql.Composable:
        return sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(alias, n) for n in values))

    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            staging, columns, table
        )
    )
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, columns)) as copy:
        for record in parsed.records:
            copy.write_row([record[n] for n in names])
    join = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("o", k), sql.Identifier("n", k))
        for k in layout.key
    )
    counts = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE o.{first} IS NULL),"
            " count(*) FILTER (WHERE o.{first} IS NOT NULL AND {old} IS DISTINCT FROM {new}),"
            " min({affects}) FILTER (WHERE o.{first} IS NULL OR {old} IS DISTINCT FROM {new})"
            " FROM {staging} n LEFT JOIN {table} o ON {join}"
        ).format(
            first=sql.Identifier(layout.key[0]),
            old=row_of("o"),
            new=row_of("n"),
            affects=sql.SQL(_AFFECTS[layout.kind]),  # a constant of this module
            staging=staging,
            table=table,
            join=join,
        )
    ).fetchone()
    assert counts is not None
    inserted, updated, stale_since = int(counts[0]), int(counts[1]), counts[2]
    conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging}"
            " ON CONFLICT ({key}) DO UPDATE SET {assignments}, imported_at = now()"
            " WHERE {current} IS DISTINCT FROM {excluded}"
        ).format(
            table=table,
            columns=columns,
            staging=staging,
            key=key,
            assignments=sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
                for n in values
            ),
            current=row_of(layout.table),
            excluded=row_of("excluded"),
        )
    )
    if stale_since is not None:
        conn.execute(
            "UPDATE mrr_ledger_state SET stale_since = least(stale_since, %s::date)",
            (stale_since,),
        )
    return ImportResult(
        layout.kind, parsed.path, len(parsed.records), inserted, updated, stale_since
    )


def kinds() -> tuple[str, ...]:
    return tuple(LAYOUTS)
