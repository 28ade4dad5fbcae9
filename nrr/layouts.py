"""The CSV layouts of the revenue files: invoice lines (nrr's own) beside core's contracts and
exchange rates (``core.layouts``), by the kind the import command names.

Validation is ``core.layouts.read_csv``'s: any bad row raises
:class:`core.errors.ImportRejected` and nothing is returned to write.
"""

from __future__ import annotations

from pathlib import Path

from core.layouts import (
    CONTRACTS,
    FX,
    Column,
    Layout,
    ParsedFile,
    boolean,
    choice,
    currency,
    day,
    identifier,
    invoice_id,
    month,
    number,
    one_of,
    quantity,
    read_csv,
    text,
    whole,
)
from core.layouts import layout_text as render_layouts

INVOICE_KINDS = ("fixed", "metered", "addon", "one_off", "tax")


def _check_invoice_line(record: dict[str, object]) -> list[str]:
    errors: list[str] = []
    if record["recurring"] and record["kind"] in ("one_off", "tax"):
        errors.append(f"recurring: a {record['kind']} line cannot be recurring")
    if record["recurring"] and record["kind"] == "metered" and record["contract_id"] is None:
        errors.append("contract_id: required on a recurring metered line (usage is per contract)")
    return errors


INVOICES = Layout(
    "invoices",
    "invoice_lines",
    ("invoice_id", "line_no"),
    (
        Column("invoice_id", invoice_id, True, "up to 100 characters"),
        Column("line_no", whole(1), True, "1, 2, ..."),
        Column("account_id", identifier, True, "a registered account"),
        Column(
            "contract_id",
            identifier,
            False,
            "an imported contract of the same account; required on recurring metered lines",
        ),
        Column("period", month, True, "YYYY-MM, the service month"),
        Column("issue_date", day, False, "YYYY-MM-DD"),
        Column("amount", number, True, "net; negative for a credit; |amount| < 10^12"),
        Column("currency", currency, True, "ISO 4217"),
        Column("recurring", boolean, True, "`true` or `false`"),
        Column(
            "kind",
            choice(*INVOICE_KINDS),
            True,
            one_of(INVOICE_KINDS) + "; one_off and tax lines cannot be recurring",
        ),
        Column("quantity", quantity, False, "e.g. m³ billed; |quantity| < 10^15"),
        Column("unit", text, False, "e.g. m3"),
        Column("description", text, False, "free text"),
    ),
    _check_invoice_line,
)
LAYOUTS = {layout.kind: layout for layout in (CONTRACTS, INVOICES, FX)}


def read_file(kind: str, path: Path, reporting_currency: str = "EUR") -> ParsedFile:
    """Parse and validate a whole ``contracts``, ``invoices`` or ``fx`` CSV file."""
    return read_csv(LAYOUTS[kind], path, reporting_currency)


def layout_text() -> str:
    """The three layouts as README markdown: a table per file, required columns in bold."""
    return render_layouts(LAYOUTS.values())
