"""The ``basewatch nrr …`` and ``basewatch import contracts|invoices|fx`` commands.

:func:`add_commands` adds them to the parser built by ``basewatch.cli``; the handlers follow
its conventions (``--json`` prints one document, errors are ``BasewatchError`` -> exit 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.settings import Settings

DEFAULT_REPORT_DIR = Path("out") / "nrr"
_CURRENCY = re.compile(r"[A-Z]{3}")


def reporting_currency(settings: Settings) -> str:
    """``BASEWATCH_REPORTING_CURRENCY`` (default EUR), checked."""
    value = (settings.reporting_currency or "EUR").strip().upper()
    if not _CURRENCY.fullmatch(value):
        raise ConfigError(
            "BASEWATCH_REPORTING_CURRENCY", f"expected an ISO 4217 code like EUR, got {value!r}"
        )
    return value


def _month(text: str) -> dt.date:
    from nrr.months import parse_month

    try:
        return parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- handlers ---------------------------------------------------------------------------------


def cmd_nrr_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.cli import emit
    from basewatch.wiring import open_database
    from nrr.ledger import rebuild

    with open_database(settings) as conn:
        result = rebuild(
            conn,
            reporting_currency(settings),
            since=args.since,
            through=args.through,
            full=args.full,
        )
    document = result.document()
    emit(
        args,
        document,
        lambda: (
            "the MRR ledger is up to date"
            if result.since is None
            else f"rebuilt {'all months' if result.full else 'months'} "
            f"{document['rebuilt_from']} .. {document['rebuilt_through']}: "
            f"{result.ledger_rows:,} ledger lines, {result.movement_rows:,} movements "
            f"(metered contract months from invoices {result.metered_from_invoices:,}, "
            f"from telemetry {result.metered_from_telemetry:,}) in {result.seconds:.1f} s"
        ),
    )
    return 0


def cmd_nrr_show(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.cli import emit
    from basewatch.wiring import open_database
    from nrr.headline import headline

    with open_database(settings) as conn:
        figures = headline(conn, reporting_currency(settings), args.month)
    emit(args, figures.document(), figures.text)
    return 0


def cmd_nrr_report(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.cli import emit
    from basewatch.wiring import open_database
    from nrr.months import format_month
    from nrr.report import build_report, write_report

    out_dir = args.out or DEFAULT_REPORT_DIR / format_month(args.month)
    with open_database(settings) as conn:
        report = build_report(conn, reporting_currency(settings), args.month)
    written = write_report(report, out_dir)
    document = {**written.document(), "headline": report.headline.document()}
    emit(
        args,
        document,
        lambda: (
            f"{report.headline.text()}\nreport: {written.html}\n"
            f"csv: {', '.join(p.name for p in written.csv_files)}"
        ),
    )
    return 0


def _import(kind: str) -> Any:
    def handler(settings: Settings, args: argparse.Namespace) -> int:
        from basewatch.cli import emit
        from basewatch.wiring import open_database
        from nrr.imports import import_file, reference_problems
        from nrr.layouts import RevenueImportError, read_file

        path = Path(args.file)
        currency = reporting_currency(settings)
        with open_database(settings) as conn:
            if args.dry_run:
                parsed = read_file(kind, path, currency)
                problems = reference_problems(conn, parsed)
                if problems:
                    raise RevenueImportError(problems)
                document: dict[str, Any] = {
                    "kind": kind,
                    "file": str(path),
                    "rows": len(parsed.records),
                    "imported": False,
                }
                emit(args, document, lambda: f"validated {path}: {len(parsed.records):,} rows")
                return 0
            result = import_file(conn, kind, path, currency)
        document = {**result.document(), "imported": True}
        hint = (
            f"; run basewatch nrr rebuild (changes from {document['ledger_stale_since']})"
            if result.stale_since
            else ""
        )
        emit(
            args,
            document,
            lambda: (
                f"imported {path}: {result.rows:,} rows ({result.inserted:,} new, "
                f"{result.updated:,} changed, {result.unchanged:,} unchanged){hint}"
            ),
        )
        return 0

    return handler


# -- parser -----------------------------------------------------------------------------------


def add_commands(subparsers: Any, imports: Any | None = None) -> None:
    """Add ``nrr rebuild|show|report`` to the top-level ``subparsers`` and ``contracts``,
    ``invoices``, ``fx`` to ``imports`` (the ``import`` command's subparsers; created when
    None and the parser has no ``import`` command)."""
    from basewatch.cli import add

    nrr = subparsers.add_parser(
        "nrr", help="recurring revenue: MRR ledger, movements, NRR/GRR, monthly report"
    ).add_subparsers(dest="nrr_command", required=True, metavar="SUBCOMMAND")
    rebuild = add(
        nrr,
        "rebuild",
        cmd_nrr_rebuild,
        "recompute the MRR ledger and movements (from what imports changed, or --since)",
    )
    rebuild.add_argument("--since", type=_month, help="recompute months from YYYY-MM on")
    rebuild.add_argument(
        "--through", type=_month, help="last month (default: the last complete month)"
    )
    rebuild.add_argument(
        "--full", action="store_true", help="rebuild from scratch (from --since or the first data)"
    )
    show = add(nrr, "show", cmd_nrr_show, "headline figures of a month (default: the latest)")
    show.add_argument("--month", type=_month, help="YYYY-MM")
    report = add(
        nrr,
        "report",
        cmd_nrr_report,
        "write the monthly report: a self-contained HTML page and the same figures as CSV",
    )
    report.add_argument("--month", type=_month, required=True, help="YYYY-MM")
    report.add_argument(
        "--out", type=Path, help=f"folder for the files (default {DEFAULT_REPORT_DIR}/YYYY-MM)"
    )

    if imports is None:
        imports = subparsers.add_parser(
            "import", help="load history from CSV files"
        ).add_subparsers(dest="import_command", required=True, metavar="SUBCOMMAND")
    for kind, what in (
        ("contracts", "contracts (fixed, metered, add-on)"),
        ("invoices", "invoice lines"),
        ("fx", "monthly exchange rates to the reporting currency"),
    ):
        command = add(
            imports,
            kind,
            _import(kind),
            f"import {what} from CSV: every row validated first, nothing written if any is bad, "
            "importing again changes nothing (layout in the README)",
        )
        command.add_argument("file", metavar="FILE.csv")
        command.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
