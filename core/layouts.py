"""CSV layouts of reference data and their validation (pure): the one layout of contracts and
of exchange rates, and the column converters every revenue file uses (nrr's invoice layout is
built from them in ``nrr.layouts``).

:func:`read_csv` parses a whole file and validates every row; any bad row raises
:class:`core.errors.ImportRejected` listing each problem as ``file:line: column: message`` and
nothing is returned to write. The layouts are documented in ``nrr``'s docstring and the README;
:func:`layout_text` renders them from the specs, so the two cannot drift.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from core.contracts import BILLING_PERIODS, KINDS, RENEWALS
from core.errors import ImportRejected, InputError
from core.ids import is_identifier
from core.months import parse_month

_CURRENCY = re.compile(r"[A-Z]{3}")

# Ranges checked on import, so that every imported figure fits the ledger's arithmetic (local
# MRR in whole micro-units as bigint: below 9.2 × 10^12 a month per contract; reporting-currency
# MRR as numeric(18, 2): below 10^16 per account and month) instead of failing every later
# rebuild. A fee, minimum or invoice amount below 10^12 converted at a rate below 10^4 stays
# below 10^16.
MAX_AMOUNT = Decimal(10) ** 12  # fee, monthly_minimum, invoice amount (absolute value)
MAX_UNIT_PRICE = Decimal(10) ** 6  # per unit (m³): × a month's volume from telemetry
MAX_QUANTITY = Decimal(10) ** 15  # invoice quantity (not used in MRR, stored)
MAX_RATE = Decimal(10) ** 4  # units of the reporting currency per unit
MAX_PLACES = 12  # decimal places of any number
FIRST_YEAR, LAST_YEAR = 1900, 2999
MAX_TERM_MONTHS = 1200
MAX_NOTICE_DAYS = 3650
MAX_INTEGER = 2**31 - 1  # PostgreSQL integer
_PLACES = Decimal(1).scaleb(-MAX_PLACES)

Converter = Callable[[str], object]


# -- converters: raise ValueError with the message shown after "column: " ---------------------


def identifier(raw: str) -> str:
    if not is_identifier(raw):
        raise ValueError(f"{raw!r} is not an identifier ([A-Za-z0-9_.-], 1-64 characters)")
    return raw


def invoice_id(raw: str) -> str:
    if len(raw) > 100:
        raise ValueError("longer than 100 characters")
    return raw


def currency(raw: str) -> str:
    if not _CURRENCY.fullmatch(raw):
        raise ValueError(f"{raw!r} is not an ISO 4217 code (three capital letters)")
    return raw


def _in_years(raw: str, value: dt.date) -> dt.date:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"{raw!r} is out of range (years {FIRST_YEAR} to {LAST_YEAR})")
    return value


def day(raw: str) -> dt.date:
    try:
        value = dt.date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a date (YYYY-MM-DD)") from None
    return _in_years(raw, value)


def month(raw: str) -> dt.date:
    return _in_years(raw, parse_month(raw))


def _shown(limit: Decimal) -> str:
    return f"{limit:,.0f}"


def number(raw: str, limit: Decimal = MAX_AMOUNT) -> Decimal:
    """A decimal number below ``limit`` in absolute value with at most MAX_PLACES decimals
    (trailing zeros beyond them are dropped)."""
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{raw!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{raw!r} is not a finite number")
    if abs(value) >= limit:
        raise ValueError(f"{raw!r} is out of range (below {_shown(limit)} in absolute value)")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_PLACES:
        rounded = value.quantize(_PLACES)
        if rounded != value:
            raise ValueError(f"{raw!r} has more than {MAX_PLACES} decimal places")
        value = rounded
    return value


def non_negative(raw: str, limit: Decimal = MAX_AMOUNT) -> Decimal:
    value = number(raw, limit)
    if value < 0:
        raise ValueError(f"{raw!r} must be >= 0")
    return value


def unit_price(raw: str) -> Decimal:
    return non_negative(raw, MAX_UNIT_PRICE)


def quantity(raw: str) -> Decimal:
    return number(raw, MAX_QUANTITY)


def rate(raw: str) -> Decimal:
    value = number(raw, MAX_RATE)
    if value <= 0:
        raise ValueError(f"{raw!r} must be > 0")
    return value


def whole(minimum: int, maximum: int = MAX_INTEGER) -> Converter:
    def convert(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if value < minimum:
            raise ValueError(f"{raw!r} must be >= {minimum}")
        if value > maximum:
            raise ValueError(f"{raw!r} is out of range (at most {maximum:,})")
        return value

    return convert


def choice(*options: str) -> Converter:
    def convert(raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return convert


def boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def text(raw: str) -> str:
    return raw


def one_of(options: tuple[str, ...]) -> str:
    return ", ".join(f"`{o}`" for o in options)


@dataclass(frozen=True)
class Column:
    name: str
    convert: Converter
    required: bool = False
    meaning: str = ""


@dataclass(frozen=True)
class Layout:
    """One file kind: its table, key and columns (in the documented order)."""

    kind: str
    table: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    check: Callable[[dict[str, object]], list[str]] = field(default=lambda record: [])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _check_contract(record: dict[str, object]) -> list[str]:
    errors: list[str] = []
    kind = record["kind"]
    if kind == "metered":
        if record["unit_price"] is None:
            errors.append("unit_price: required for a metered contract")
        if record["fee"] is not None:
            errors.append("fee: a metered contract has no fee (its floor is monthly_minimum)")
        if record["billing_period"] not in (None, "month"):
            errors.append("billing_period: a metered contract bills monthly (month or empty)")
        record["billing_period"] = "month"
        record["unit"] = record["unit"] or "m3"
    else:
        if record["fee"] is None:
            errors.append(f"fee: required for a {kind} contract")
        if record["billing_period"] is None:
            errors.append(f"billing_period: required for a {kind} contract")
        for name in ("unit_price", "monthly_minimum"):
            if record[name] is not None:
                errors.append(f"{name}: only for metered contracts")
    if record["billing_period"] == "multi_year" and record["term_months"] is None:
        errors.append("term_months: required for a multi_year contract")
    start, end = record["start_date"], record["end_date"]
    if isinstance(start, dt.date) and isinstance(end, dt.date) and end < start:
        errors.append(f"end_date: {end} is before start_date {start}")
    record["renewal"] = record["renewal"] or "none"
    return errors


CONTRACTS = Layout(
    "contracts",
    "contracts",
    ("contract_id",),
    (
        Column("contract_id", identifier, True, "identifier, unique"),
        Column("account_id", identifier, True, "a registered account"),
        Column("product_line", identifier, True, "e.g. maintenance, air_as_a_service"),
        Column("kind", choice(*KINDS), True, one_of(KINDS)),
        Column("currency", currency, True, "ISO 4217"),
        Column("start_date", day, True, f"YYYY-MM-DD, years {FIRST_YEAR} to {LAST_YEAR}"),
        Column("end_date", day, False, "last day of service; empty = open-ended"),
        Column(
            "billing_period",
            choice(*BILLING_PERIODS),
            False,
            one_of(BILLING_PERIODS) + "; required for fixed and addon, metered: month or empty",
        ),
        Column(
            "fee",
            non_negative,
            False,
            "per billing period; required for fixed and addon; 0 to < 10^12",
        ),
        Column("unit_price", unit_price, False, "per unit; required for metered; 0 to < 10^6"),
        Column("unit", text, False, "metered; default m3"),
        Column("monthly_minimum", non_negative, False, "metered, in the currency; 0 to < 10^12"),
        Column("renewal", choice(*RENEWALS), False, one_of(RENEWALS) + "; default `none`"),
        Column(
            "notice_days",
            whole(0, MAX_NOTICE_DAYS),
            False,
            f"days of notice before renewal; 0 to {MAX_NOTICE_DAYS}",
        ),
        Column(
            "term_months",
            whole(1, MAX_TERM_MONTHS),
            False,
            f"required for multi_year; 1 to {MAX_TERM_MONTHS}",
        ),
    ),
    _check_contract,
)
FX = Layout(
    "fx",
    "fx_rates",
    ("month", "currency"),
    (
        Column("month", month, True, "YYYY-MM"),
        Column("currency", currency, True, "ISO 4217"),
        Column(
            "rate",
            rate,
            True,
            "0 < rate < 10^4: units of the reporting currency per 1 unit; the reporting "
            "currency's own is 1",
        ),
    ),
)


@dataclass
class ParsedFile:
    """The validated rows of one file, each with the line it came from."""

    layout: Layout
    path: Path
    records: list[dict[str, object]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def where(self, index: int) -> str:
        return f"{self.path}:{self.lines[index]}"


def read_csv(layout: Layout, path: Path, reporting_currency: str = "EUR") -> ParsedFile:
    """Parse and validate a whole CSV file of ``layout``."""
    kind = layout.kind
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    reader = csv.DictReader(io.StringIO(content))
    header = [h.strip() for h in reader.fieldnames or []]
    problems = _header_problems(layout, header)
    if problems:
        raise ImportRejected([f"{path}:1: {p}" for p in problems])
    reader.fieldnames = header
    parsed = ParsedFile(layout, path)
    errors: list[str] = []
    seen: dict[tuple[object, ...], int] = {}
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            errors.append(f"{where}: more fields than the header has")
            continue
        record, row_errors = _record(layout, row)
        if (
            kind == "fx"
            and not row_errors
            and record["currency"] == reporting_currency
            and record["rate"] != 1
        ):
            row_errors.append(f"rate: {reporting_currency} is the reporting currency: rate 1")
        if row_errors:
            errors.extend(f"{where}: {message}" for message in row_errors)
            continue
        key = tuple(record[k] for k in layout.key)
        if key in seen:
            errors.append(
                f"{where}: duplicate {', '.join(layout.key)} {_show(key)} "
                f"(first at line {seen[key]})"
            )
            continue
        seen[key] = reader.line_num
        parsed.records.append(record)
        parsed.lines.append(reader.line_num)
    if errors:
        raise ImportRejected(errors)
    return parsed


def _header_problems(layout: Layout, header: list[str]) -> list[str]:
    if not header:
        return ["empty file (no header)"]
    known = set(layout.names)
    problems = [
        f"unknown column {name!r} (columns of {layout.kind}: {', '.join(layout.names)})"
        for name in header
        if name not in known
    ]
    problems += [
        f"missing column {c.name!r}" for c in layout.columns if c.required and c.name not in header
    ]
    return problems


def _record(layout: Layout, row: dict[str, str]) -> tuple[dict[str, object], list[str]]:
    record: dict[str, object] = {}
    errors: list[str] = []
    for column in layout.columns:
        raw = (row.get(column.name) or "").strip()
        if not raw:
            if column.required:
                errors.append(f"{column.name}: required")
            record[column.name] = None
            continue
        try:
            record[column.name] = column.convert(raw)
        except ValueError as exc:
            errors.append(f"{column.name}: {exc}")
            record[column.name] = None
    if not errors:
        errors = layout.check(record)
    return record, errors


def _show(key: tuple[object, ...]) -> str:
    return ", ".join(repr(str(k)) for k in key)


def layout_text(layouts: Iterable[Layout]) -> str:
    """``layouts`` as README markdown: a table per file, required columns in bold."""
    parts: list[str] = []
    for layout in layouts:
        parts.append(f"`{layout.kind}.csv` (key: {', '.join(layout.key)})\n")
        parts.append("| column | meaning |\n| --- | --- |")
        for column in layout.columns:
            name = f"**{column.name}**" if column.required else column.name
            parts.append(f"| {name} | {column.meaning} |")
        parts.append("")
    return "\n".join(parts)
