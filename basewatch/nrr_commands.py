"""The ``basewatch nrr …`` and ``basewatch import contracts|invoices|fx`` commands, and the
monthly report job.

:func:`add_commands` adds them to the parser built by ``basewatch.cli``; the handlers follow
its conventions (``--json`` prints one document, errors are ``BasewatchError`` -> exit 1).

:func:`monthly_report` is the scheduler's ``nrr_report`` job (1st of each month): incremental
ledger rebuild, the previous month's report under ``BASEWATCH_NRR_REPORT_DIR``, and one email
per ``BASEWATCH_NRR_REPORT_RECIPIENTS`` address through the alerts' outbox (signals.delivery),
the HTML page and the CSVs attached. The composition root may use both nrr and signals; nrr
itself never sees the outbox.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.settings import Settings

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

    from nrr.report import Report, WrittenReport
    from signals.delivery import OutboxMessage

log = logging.getLogger(__name__)
_CURRENCY = re.compile(r"[A-Z]{3}")


def reporting_currency(settings: Settings) -> str:
    """``BASEWATCH_REPORTING_CURRENCY`` (default EUR), checked."""
    value = (settings.reporting_currency or "EUR").strip().upper()
    if not _CURRENCY.fullmatch(value):
        raise ConfigError(
            "BASEWATCH_REPORTING_CURRENCY", f"expected an ISO 4217 code like EUR, got {value!r}"
        )
    return value


def report_dir(settings: Settings, month: dt.date) -> Path:
    """Where a month's report goes by default: ``BASEWATCH_NRR_REPORT_DIR/YYYY-MM``."""
    from core.months import format_month

    return Path(settings.nrr_report_dir) / format_month(month)


# -- the monthly report by email ----------------------------------------------------------------


def report_emails(
    report: Report, written: WrittenReport, recipients: list[str]
) -> list[OutboxMessage]:
    """One outbox email per recipient: the headline as text, the HTML page and every CSV
    attached; ``dedup_key`` ``nrr-report:<YYYY-MM>:<recipient>``, so a month is sent once."""
    from core.months import format_month
    from signals.delivery import OutboxMessage, attachment

    month = format_month(report.month)
    files = [attachment(written.html.name, "text/html", written.html.read_bytes())]
    files += [attachment(p.name, "text/csv", p.read_bytes()) for p in written.csv_files]
    body = (
        f"{report.headline.text()}\n\n"
        f"Attached: the report {written.html.name} (a self-contained page: open it in a browser)"
        f" and its figures as CSV ({', '.join(p.name for p in written.csv_files)}).\n"
    )
    return [
        OutboxMessage(
            "email",
            recipient,
            f"[basewatch] NRR report {month}",
            body,
            f"nrr-report:{month}:{recipient}",
            payload={"attachments": files},
        )
        for recipient in recipients
    ]


def enqueue_report(
    conn: psycopg.Connection[TupleRow],
    report: Report,
    written: WrittenReport,
    recipients: list[str],
    now: dt.datetime,
) -> int:
    """Put the report's emails in the alerts' outbox (one transaction); returns the rows added
    (0 for a recipient who already has this month's report queued or sent)."""
    from signals.delivery import enqueue

    with conn.transaction():
        return enqueue(conn, report_emails(report, written, recipients), now=now)


@dataclass(frozen=True)
class MonthlyRun:
    """What one run of the scheduled monthly report did."""

    month: dt.date
    written: WrittenReport
    recipients: list[str]
    enqueued: int

    def document(self) -> dict[str, Any]:
        from core.months import format_month

        return {
            "month": format_month(self.month),
            **self.written.document(),
            "recipients": self.recipients,
            "emails_enqueued": self.enqueued,
        }


def monthly_report(
    conn: psycopg.Connection[TupleRow], settings: Settings, now: dt.datetime
) -> MonthlyRun:
    """The ``nrr_report`` job: bring the ledger up to date (incremental rebuild), write the
    previous month's report under ``BASEWATCH_NRR_REPORT_DIR/YYYY-MM`` and, when
    ``BASEWATCH_NRR_REPORT_RECIPIENTS`` is set, enqueue it by email (once per month and
    recipient; the delivery job sends it)."""
    from core.months import format_month, previous_complete_month
    from nrr.ledger import rebuild
    from nrr.report import build_report, write_report

    currency = reporting_currency(settings)
    month = previous_complete_month(now.astimezone(dt.UTC).date())
    rebuild(conn, currency, through=month)
    report = build_report(
        conn, currency, month, attribution_window_days=settings.attribution_window_days
    )
    if not conn.autocommit:
        conn.commit()  # end the read transaction before the outbox's own
    written = write_report(report, report_dir(settings, month))
    recipients = settings.report_recipients()
    enqueued = enqueue_report(conn, report, written, recipients, now) if recipients else 0
    log.info(
        "nrr report %s written to %s; %d of %d emails enqueued",
        format_month(month),
        written.html,
        enqueued,
        len(recipients),
    )
    return MonthlyRun(month, written, recipients, enqueued)


def _month(text: str) -> dt.date:
    from core.months import parse_month

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
    from basewatch.cli import emit
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
    from basewatch.cli import emit
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
        from basewatch.cli import emit
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
        "--out",
        type=Path,
        help="folder for the files (default BASEWATCH_NRR_REPORT_DIR/YYYY-MM, reports/YYYY-MM)",
    )
    report.add_argument(
        "--email",
        action="store_true",
        help="also queue the report by email to BASEWATCH_NRR_REPORT_RECIPIENTS (the outbox)",
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
