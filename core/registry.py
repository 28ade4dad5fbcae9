"""The installed-base registry: CSMs, accounts, assets and their components.

:func:`read_registry_csv` parses and validates CSV files completely before anything is written;
:func:`import_registry` then upserts everything in one transaction, parents first. A CSV file is
either one kind of record, recognised by its header (see ``COLUMNS``), or a mixed file with a
``record`` column whose value is ``csm``, ``account``, ``asset`` or ``component``.

Every value stored (each column of ``COLUMNS``, after stripping surrounding whitespace) is refused
when it contains a control character (NUL, CR, LF, TAB, ESC, DEL, C1) or a bidi control
(:data:`core.text.UNSAFE_CHARACTERS`): NUL cannot be stored in PostgreSQL text, a line break or
an escape sequence in a name breaks or forges lines wherever the name is printed (the CLI, CSV
reports, emails), and a bidi override makes a name read differently from what it is. The error
names ``file:line: column:`` and the character, never the raw value. Columns the importer does
not store are not checked. The line is the CSV reader's, the last line of a record that spans
several (a quoted line break).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from core.errors import ImportRejected, InputError
from core.ids import is_identifier
from core.text import unsafe_character

KINDS = ("csm", "account", "asset", "component")
COLUMNS: dict[str, tuple[str, ...]] = {
    "csm": ("csm_id", "name", "email", "webhook_url"),
    "account": ("account_id", "name", "industry", "region", "csm_id"),
    "asset": (
        "asset_id",
        "account_id",
        "serial",
        "model",
        "rated_power_kw",
        "rated_flow_m3_min",
        "installed_on",
        "site",
    ),
    "component": (
        "asset_id",
        "kind",
        "rated_life_hours",
        "installed_at_running_hours",
        "installed_on",
    ),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "csm": ("csm_id", "name"),
    "account": ("account_id", "name"),
    "asset": ("asset_id", "account_id"),
    "component": ("asset_id", "kind", "rated_life_hours"),
}
_KEY = {
    "csm": ("csm_id",),
    "account": ("account_id",),
    "asset": ("asset_id",),
    "component": ("asset_id", "kind"),
}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_POSITIVE = {"rated_power_kw", "rated_flow_m3_min", "rated_life_hours"}
_NON_NEGATIVE = {"installed_at_running_hours"}
_DATES = {"installed_on"}
_IDS = {"csm_id", "account_id", "asset_id", "kind"}


@dataclass
class RegistryBatch:
    """Validated records by kind, each a dict of column → value (None when empty)."""

    records: dict[str, list[dict[str, object]]] = field(
        default_factory=lambda: {kind: [] for kind in KINDS}
    )

    def count(self) -> dict[str, int]:
        return {kind: len(rows) for kind, rows in self.records.items()}


def detect_kind(header: Sequence[str]) -> str | None:
    """The record kind a header describes, or ``None`` for a mixed file with ``record``."""
    names = set(header)
    if "record" in names:
        return None
    if {"asset_id", "kind", "rated_life_hours"} <= names:
        return "component"
    if {"asset_id", "account_id"} <= names:
        return "asset"
    if "account_id" in names and "asset_id" not in names:
        return "account"
    if "csm_id" in names and not names & {"account_id", "asset_id"}:
        return "csm"
    raise InputError(
        f"header {','.join(header)!r} matches no registry file layout; expected the "
        "columns of one of: "
        + "; ".join(f"{k}s ({', '.join(COLUMNS[k])})" for k in KINDS)
        + ", or a 'record' column"
    )


def read_registry_csv(paths: Iterable[Path], kind: str | None = None) -> RegistryBatch:
    """Parse and validate registry CSV files; raise :class:`core.errors.ImportRejected` listing
    every bad row (with file and line) when any row is wrong."""
    batch = RegistryBatch()
    errors: list[str] = []
    seen: dict[tuple[str, tuple[object, ...]], str] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read: {exc}") from exc
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in reader.fieldnames or []]
        if not header:
            errors.append(f"{path}:1: empty file (no header)")
            continue
        reader.fieldnames = header
        file_kind = kind or detect_kind(header)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            record_kind = file_kind or (row.get("record") or "").strip().lower()
            if record_kind not in KINDS:
                errors.append(
                    f"{where}: record must be one of {', '.join(KINDS)}, got {row.get('record')!r}"
                )
                continue
            if None in row:
                errors.append(f"{where}: more fields than the header has")
                continue
            record, row_errors = _validate_row(record_kind, row)
            if row_errors:
                errors.extend(f"{where}: {message}" for message in row_errors)
                continue
            key = (record_kind, tuple(record[k] for k in _KEY[record_kind]))
            if key in seen:
                errors.append(f"{where}: duplicate {record_kind} {key[1]} (first at {seen[key]})")
                continue
            seen[key] = where
            batch.records[record_kind].append(record)
    if errors:
        raise ImportRejected(errors, "bad row(s)")
    return batch


def _validate_row(kind: str, row: dict[str, str]) -> tuple[dict[str, object], list[str]]:
    record: dict[str, object] = {}
    errors: list[str] = []
    for column in COLUMNS[kind]:
        raw = (row.get(column) or "").strip()
        if not raw:
            if column in REQUIRED[kind]:
                errors.append(f"{column}: required")
            record[column] = None
            continue
        unsafe = unsafe_character(raw)
        if unsafe:  # NUL would fail in the database; the rest would mislead whoever reads it
            errors.append(f"{column}: {unsafe}: control and bidi characters are not allowed")
            record[column] = None
            continue
        value, message = _convert(column, raw)
        if message:
            errors.append(f"{column}: {message}")
        record[column] = value
    return record, errors


def _convert(column: str, raw: str) -> tuple[object, str]:
    if column in _IDS:
        if not is_identifier(raw):
            return None, f"{raw!r} is not an identifier ([A-Za-z0-9_.-], 1-64 characters)"
        return raw, ""
    if column in _POSITIVE or column in _NON_NEGATIVE:
        try:
            number = Decimal(raw)
        except InvalidOperation:
            return None, f"{raw!r} is not a number"
        if not number.is_finite() or number < 0 or (column in _POSITIVE and number == 0):
            return None, f"{raw!r} must be {'> 0' if column in _POSITIVE else '>= 0'}"
        return number, ""
    if column in _DATES:
        try:
            return dt.date.fromisoformat(raw), ""
        except ValueError:
            return None, f"{raw!r} is not a date (YYYY-MM-DD)"
    if column == "email" and not _EMAIL.fullmatch(raw):
        return None, f"{raw!r} is not an email address"
    if column == "webhook_url" and not raw.startswith(("http://", "https://")):
        return None, f"{raw!r} is not an http(s) URL"
    return raw, ""


_UPSERT = {
    "csm": (
        "INSERT INTO csms (csm_id, name, email, webhook_url)"
        " VALUES (%(csm_id)s, %(name)s, %(email)s, %(webhook_url)s)"
        " ON CONFLICT (csm_id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,"
        " webhook_url = EXCLUDED.webhook_url"
    ),
    "account": (
        "INSERT INTO accounts (account_id, name, industry, region, csm_id)"
        " VALUES (%(account_id)s, %(name)s, %(industry)s, %(region)s, %(csm_id)s)"
        " ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name,"
        " industry = EXCLUDED.industry, region = EXCLUDED.region, csm_id = EXCLUDED.csm_id,"
        " auto_registered = false"
    ),
    "asset": (
        "INSERT INTO assets (asset_id, account_id, serial, model, rated_power_kw,"
        " rated_flow_m3_min, installed_on, site) VALUES (%(asset_id)s, %(account_id)s,"
        " %(serial)s, %(model)s, %(rated_power_kw)s, %(rated_flow_m3_min)s, %(installed_on)s,"
        " %(site)s) ON CONFLICT (asset_id) DO UPDATE SET account_id = EXCLUDED.account_id,"
        " serial = EXCLUDED.serial, model = EXCLUDED.model,"
        " rated_power_kw = EXCLUDED.rated_power_kw,"
        " rated_flow_m3_min = EXCLUDED.rated_flow_m3_min, installed_on = EXCLUDED.installed_on,"
        " site = EXCLUDED.site, auto_registered = false"
    ),
    "component": (
        "INSERT INTO components (asset_id, kind, rated_life_hours, installed_at_running_hours,"
        " installed_on) VALUES (%(asset_id)s, %(kind)s, %(rated_life_hours)s,"
        " coalesce(%(installed_at_running_hours)s, 0), %(installed_on)s)"
        " ON CONFLICT (asset_id, kind) DO UPDATE SET"
        " rated_life_hours = EXCLUDED.rated_life_hours,"
        " installed_at_running_hours = EXCLUDED.installed_at_running_hours,"
        " installed_on = EXCLUDED.installed_on"
    ),
}


def import_registry(conn: psycopg.Connection[TupleRow], batch: RegistryBatch) -> None:
    """Upsert a validated batch in one transaction; a reference to a CSM, account or asset that
    is neither in the batch nor in the database fails the whole batch."""
    missing = _missing_references(conn, batch)
    if missing:
        raise ImportRejected(missing, "bad row(s)")
    with conn.transaction(), conn.cursor() as cur:
        for kind in KINDS:
            rows = batch.records[kind]
            if rows:
                cur.executemany(_UPSERT[kind], rows)


def _missing_references(conn: psycopg.Connection[TupleRow], batch: RegistryBatch) -> list[str]:
    checks = (
        ("account", "csm_id", "csms", "csm"),
        ("asset", "account_id", "accounts", "account"),
        ("component", "asset_id", "assets", "asset"),
    )
    errors: list[str] = []
    for kind, column, table, parent in checks:
        wanted = {str(r[column]) for r in batch.records[kind] if r[column] is not None}
        wanted -= {str(r[column]) for r in batch.records[parent]}
        if not wanted:
            continue
        query = {
            "csms": "SELECT csm_id FROM csms WHERE csm_id = ANY(%s)",
            "accounts": "SELECT account_id FROM accounts WHERE account_id = ANY(%s)",
            "assets": "SELECT asset_id FROM assets WHERE asset_id = ANY(%s)",
        }[table]
        known = {str(r[0]) for r in conn.execute(query, (sorted(wanted),))}
        errors.extend(
            f"{kind}: {column} {value!r} is not registered and not in the file"
            for value in sorted(wanted - known)
        )
    return errors


def csm_names(conn: psycopg.Connection[TupleRow]) -> dict[str, str]:
    """Every CSM's name by csm_id."""
    return {str(c): str(n) for c, n in conn.execute("SELECT csm_id, name FROM csms")}


def csm_name(conn: psycopg.Connection[TupleRow], csm_id: str) -> str | None:
    """The name of CSM ``csm_id``; None when there is no such CSM."""
    row = conn.execute("SELECT name FROM csms WHERE csm_id = %s", (csm_id,)).fetchone()
    return None if row is None else str(row[0])


def account_owners(conn: psycopg.Connection[TupleRow]) -> dict[str, str | None]:
    """Every account's CSM (None when it has none) by account_id."""
    return {
        str(a): None if c is None else str(c)
        for a, c in conn.execute("SELECT account_id, csm_id FROM accounts")
    }


def asset_owners(conn: psycopg.Connection[TupleRow], asset_ids: Sequence[str]) -> dict[str, str]:
    """``asset_id → account_id`` for the registered ones among ``asset_ids``."""
    rows = conn.execute(
        "SELECT asset_id, account_id FROM assets WHERE asset_id = ANY(%s)", (list(asset_ids),)
    )
    return {str(a): str(b) for a, b in rows}


def auto_register(conn: psycopg.Connection[TupleRow], account_id: str, asset_id: str) -> str:
    """Register an unknown account and asset named by a topic; return the asset's owner
    (which is another account when the asset was already registered elsewhere)."""
    conn.execute(
        "INSERT INTO accounts (account_id, name, auto_registered) VALUES (%s, %s, true)"
        " ON CONFLICT (account_id) DO NOTHING",
        (account_id, account_id),
    )
    conn.execute(
        "INSERT INTO assets (asset_id, account_id, auto_registered) VALUES (%s, %s, true)"
        " ON CONFLICT (asset_id) DO NOTHING",
        (asset_id, account_id),
    )
    row = conn.execute("SELECT account_id FROM assets WHERE asset_id = %s", (asset_id,)).fetchone()
    assert row is not None
    return str(row[0])


@dataclass(frozen=True)
class AccountRow:
    """An account as the pages list it."""

    account_id: str
    name: str
    csm_id: str | None
    csm_name: str | None
    region: str | None
    industry: str | None


def accounts_of(
    conn: psycopg.Connection[TupleRow],
    csm_id: str | None = None,
    account_id: str | None = None,
) -> list[AccountRow]:
    """The accounts of CSM ``csm_id`` (every account when None), or the one ``account_id``,
    by name."""
    rows = conn.execute(
        "SELECT a.account_id, a.name, a.csm_id, c.name, a.region, a.industry FROM accounts a"
        " LEFT JOIN csms c ON c.csm_id = a.csm_id"
        " WHERE (%(csm)s::text IS NULL OR a.csm_id = %(csm)s)"
        " AND (%(account)s::text IS NULL OR a.account_id = %(account)s)"
        " ORDER BY a.name, a.account_id",
        {"csm": csm_id, "account": account_id},
    ).fetchall()
    return [AccountRow(*row) for row in rows]


@dataclass(frozen=True)
class AssetRow:
    """A registered machine."""

    asset_id: str
    serial: str | None
    model: str | None
    site: str | None
    installed_on: dt.date | None


@dataclass(frozen=True)
class ComponentRow:
    """A component of a machine, with its rated life and the running hours it went in at."""

    asset_id: str
    kind: str
    rated_life_hours: Decimal
    installed_at_running_hours: Decimal
    installed_on: dt.date | None


def assets_of(conn: psycopg.Connection[TupleRow], account_id: str) -> list[AssetRow]:
    """The account's machines by id."""
    rows = conn.execute(
        "SELECT asset_id, serial, model, site, installed_on FROM assets WHERE account_id = %s"
        " ORDER BY asset_id",
        (account_id,),
    ).fetchall()
    return [AssetRow(*row) for row in rows]


def components_of(conn: psycopg.Connection[TupleRow], account_id: str) -> list[ComponentRow]:
    """The components of the account's machines, by machine and kind."""
    rows = conn.execute(
        "SELECT c.asset_id, c.kind, c.rated_life_hours, c.installed_at_running_hours,"
        " c.installed_on FROM components c JOIN assets a ON a.asset_id = c.asset_id"
        " WHERE a.account_id = %s ORDER BY c.asset_id, c.kind",
        (account_id,),
    ).fetchall()
    return [ComponentRow(*row) for row in rows]
