"""The ``basewatch nrr rebuild|show|report`` and ``basewatch import contracts|invoices|fx``
commands.

:func:`register` adds them (``basewatch.commands``; the revenue files go into the ``import``
group ``basewatch.ingest_commands`` declares); the handlers follow the CLI's conventions
(``--json`` prints one document, errors are ``BasewatchError`` -> exit 1). The reporting
currency, the report's folder and its emails are ``basewatch.jobs``', shared with the
scheduler's monthly report and the API.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from basewatch.commands import Commands
from basewatch.jobs import enqueue_report, report_dir, reporting_currency
from basewatch.output import emit
from core.errors import ConfigError
from core.settings import Settings


def _month(text: str) -> dt.date:
    from core.months import parse_month

    try:
        return parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- handlers ---------------------------------------------------------------------------------


def cmd_nrr_rebuild(settings: Settings, args: argparse.Namespace) -> int:
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

    def text() -> str:
        if result.since is None:
            return "the MRR ledger is up to date"
        earlier = ""
        if result.asked_since and result.since < result.asked_since:
            earlier = (
                f" (from {document['rebuilt_from']}, not {document['asked_from']} as asked:"
                " imports changed that month, or it was never built)"
            )
        return (
            f"rebuilt {'all months' if result.full else 'months'} "
            f"{document['rebuilt_from']} .. {document['rebuilt_through']}{earlier}: "
            f"{result.ledger_rows:,} ledger lines, {result.movement_rows:,} movements "
            f"(metered contract months from invoices {result.metered_from_invoices:,}, "
            f"from telemetry {result.metered_from_telemetry:,}) in {result.seconds:.1f} s"
        )

    emit(args, document, text)
    return 0


def cmd_nrr_show(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from nrr.headline import headline

    with open_database(settings) as conn:
        figures = headline(
            conn,
            reporting_currency(settings),
            args.month,
            attribution_window_days=settings.attribution_window_days,
        )
    emit(args, figures.document(), figures.text)
    return 0


def cmd_nrr_report(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from core.months import format_month
    from nrr.report import build_report, write_report

    recipients = settings.report_recipients()
    if args.email and not recipients:
        raise ConfigError(
            "BASEWATCH_NRR_REPORT_RECIPIENTS",
            "is empty: set it to the comma-separated addresses to email the report to",
        )
    out_dir = args.out or report_dir(settings, args.month)
    with open_database(settings) as conn:
        report = build_report(
            conn,
            reporting_currency(settings),
            args.month,
            attribution_window_days=settings.attribution_window_days,
        )
        conn.commit()
        written = write_report(report, out_dir)
        enqueued = (
            enqueue_report(conn, report, written, recipients, dt.datetime.now(dt.UTC))
            if args.email
            else 0
        )
    document: dict[str, Any] = {**written.document(), "headline": report.headline.document()}
    email_line = ""
    if args.email:
        document["email"] = {"recipients": recipients, "enqueued": enqueued}
        email_line = (
            f"\nemail: {enqueued} of {len(recipients)} queued in the outbox (sent by the "
            "scheduler's delivery job or basewatch alerts deliver; a recipient who already has "
            f"{format_month(args.month)}'s report queued or sent is skipped)"
        )
    emit(
        args,
        document,
        lambda: (
            f"{report.headline.text()}\nreport: {written.html}\n"
            f"csv: {', '.join(p.name for p in written.csv_files)}{email_line}"
        ),
    )
    return 0


def _import(kind: str) -> Any:
    def handler(settings: Settings, args: argparse.Namespace) -> int:
        from basewatch.wiring import open_database
        from core.errors import ImportRejected
        from nrr.imports import import_file, reference_problems
        from nrr.layouts import read_file

        path = Path(args.file)
        currency = reporting_currency(settings)
        with open_database(settings) as conn:
            if args.dry_run:
                parsed = read_file(kind, path, currency)
                problems = reference_problems(conn, parsed)
                if problems:
                    raise ImportRejected(problems)
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


def register(commands: Commands) -> None:
    """Add ``nrr rebuild|show|report``, and ``contracts``, ``invoices``, ``fx`` to the
    ``import`` group (registered after ``basewatch.ingest_commands``, which declares it)."""
    nrr = commands.group("nrr", "recurring revenue: MRR ledger, movements, NRR/GRR, monthly report")
    rebuild = nrr.add(
        "rebuild",
        cmd_nrr_rebuild,
        "recompute the MRR ledger and movements (from what imports changed, or --since)",
    )
    rebuild.add_argument(
        "--since",
        type=_month,
        help="recompute months from YYYY-MM on (or from an earlier month that imports changed)",
    )
    rebuild.add_argument(
        "--through", type=_month, help="last month (default: the last complete month)"
    )
    rebuild.add_argument(
        "--full", action="store_true", help="rebuild from scratch (from --since or the first data)"
    )
    show = nrr.add("show", cmd_nrr_show, "headline figures of a month (default: the latest)")
    show.add_argument("--month", type=_month, help="YYYY-MM")
    report = nrr.add(
        "report",
        cmd_nrr_report,
        "write the monthly report: a self-contained HTML page and the same figures as CSV",
    )
    report.add_argument("--month", type=_month, required=True, help="YYYY-MM")
    report.add_argument(
        "--out",
        type=Path,
        help="folder for the files (default BASEWATCH_NRR_REPORT_DIR/YYYY-MM, reports/YYYY-MM)",
    )
    report.add_argument(
        "--email",
        action="store_true",
        help="also queue the report by email to BASEWATCH_NRR_REPORT_RECIPIENTS (the outbox)",
    )

    imports = commands.group("import")
    for kind, what in (
        ("contracts", "contracts (fixed, metered, add-on)"),
        ("invoices", "invoice lines"),
        ("fx", "monthly exchange rates to the reporting currency"),
    ):
        command = imports.add(
            kind,
            _import(kind),
            f"import {what} from CSV: every row validated first, nothing written if any is bad, "
            "importing again changes nothing (layout in the README)",
        )
        command.add_argument("file", metavar="FILE.csv")
        command.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
