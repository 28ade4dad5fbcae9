"""``basewatch ingest``, ``deadletters list|replay`` and ``import telemetry|events``: getting
device data in, live over MQTT or from CSV history.

Text output never prints device-supplied text raw: ``deadletters list`` shows topics, payload
previews and reasons through :func:`core.text.escape_controls` (a device could otherwise send
``ESC[2J`` or a bidi override to the operator's terminal); ``--json`` keeps the exact strings,
which ``basewatch.output.emit`` writes with every control and non-ASCII character as
``\\uXXXX``.

:func:`register` declares the ``import`` group (``nrr_commands`` adds its revenue files to it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from basewatch.argtypes import non_negative, positive
from basewatch.commands import Commands
from basewatch.output import emit
from core.settings import Settings


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.processes import run_ingesters

    settings.refuse_placeholder_secrets()
    processes = args.processes or settings.ingest_processes
    return run_ingesters(
        settings, processes=processes, index=args.index, ready_file=args.ready_file
    )


def cmd_deadletters_list(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from core.text import escape_controls
    from ingest.deadletters import list_dead_letters

    with open_database(settings) as conn:
        rows = list_dead_letters(
            conn, limit=args.limit, include_resolved=args.all, reason_contains=args.reason or ""
        )
    # the text form escapes control and bidi characters in everything a device or file sent
    # (core.text); --json prints the exact strings, which json.dumps escapes (ensure_ascii)
    shown = [
        {
            k: escape_controls(v[:200] if k == "payload" else v) if isinstance(v, str) else v
            for k, v in r.items()
        }
        for r in rows
    ]
    emit(
        args,
        rows,
        lambda: (
            "\n".join(
                f"#{r['id']} {r['received_at']} {r['topic']}"
                + (f" line {r['line']}" if r["line"] else "")
                + f"\n    reason: {r['reason']}"
                + (
                    f"\n    suppressed: {r['suppressed']:,} messages over the rate limit, "
                    "counted here (the payload is the latest one's)"
                    if r["suppressed"]
                    else ""
                )
                + f"\n    payload ({_payload_size(r)}): {r['payload']}"
                + (
                    f"\n    resolved: {r['resolved_at']} ({r['resolution']})"
                    if r["resolved_at"]
                    else ""
                )
                for r in shown
            )
            or "no dead letters"
        ),
    )
    return 0


def _payload_size(row: dict[str, Any]) -> str:
    size = f"{row['payload_bytes']:,} bytes"
    if row["truncated"]:
        size += f", first {row['stored_bytes']:,} stored"
    if row["payload_sha256"]:
        size += f", sha256 {row['payload_sha256'][:16]}…"
    return size


def cmd_deadletters_replay(settings: Settings, args: argparse.Namespace) -> int:
    import datetime as dt
    import functools

    from basewatch.wiring import dead_letter_policy, decode_limits, open_database
    from ingest.deadletters import replay
    from ingest.messages import decode_message
    from ingest.store import BatchWriter

    writer = BatchWriter(
        settings.database_url,
        auto_register=settings.auto_register,
        dead_letters=dead_letter_policy(settings),
    )
    decode = functools.partial(
        decode_message,
        prefix=settings.topic_prefix,
        limits=decode_limits(settings),
        received_at=dt.datetime.now(dt.UTC),
    )
    try:
        with open_database(settings) as conn:
            result = replay(conn, writer, decode, None if args.all else args.ids)
    finally:
        writer.close()
    document = {
        "replayed": result.replayed,
        "resolved": result.resolved,
        "still_failing": result.still_failing,
        "skipped": result.skipped,
    }
    emit(
        args,
        document,
        lambda: (
            f"replayed {result.replayed}: {result.resolved} stored, {result.still_failing} still "
            f"failing"
            + (
                f", {result.skipped} not replayable (not from MQTT, truncated, or a rate-limit "
                "summary)"
                if result.skipped
                else ""
            )
        ),
    )
    return 0


def _check_replay(args: argparse.Namespace) -> str | None:
    if not args.ids and not args.all:
        return "argument ID: name the dead letter ids to replay, or pass --all"
    if args.ids and args.all:
        return "argument --all: replays every unresolved dead letter; do not name ids as well"
    return None


def _iso_time(text: str) -> Any:
    import datetime as dt

    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time like 2020-01-01T00:00:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _rename(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW, got {text!r}")
    return old, new


def _layout(args: argparse.Namespace) -> Any:
    from ingest.importer import CsvLayout

    origin = args.time_origin
    renames = list(args.rename or [])
    return CsvLayout(
        format=getattr(args, "format", "wide"),
        delimiter=args.delimiter or "",
        header=not args.no_header,
        columns=tuple(c.strip() for c in args.columns.split(",")) if args.columns else (),
        time_column=args.time_column or "",
        time_format=args.time_format,
        time_origin=origin,
        timezone=args.timezone,
        asset=args.asset or "",
        asset_column=args.asset_column or "",
        asset_prefix=args.asset_prefix or "",
        metric_column=getattr(args, "metric_column", "metric"),
        value_column=getattr(args, "value_column", "value"),
        ignore=frozenset(c.strip() for c in (args.ignore or "").split(",") if c.strip()),
        rename=tuple(renames),
        account=args.register_account or "",
        max_past_days=args.max_past_days,
        series_end_event=getattr(args, "series_end_event", "") or "",
        kind=getattr(args, "kind", "") or "",
        kind_column=getattr(args, "kind_column", "kind"),
        component_column=getattr(args, "component_column", "component"),
        code_column=getattr(args, "code_column", "code"),
    )


def _import_report(args: argparse.Namespace, result: Any, what: str) -> int:
    document = result.document()
    emit(
        args,
        document,
        lambda: (
            f"imported {args.file}: {document['rows']:,} rows -> {document[what]:,} {what}"
            + (f" ({document['values']:,} values)" if what == "readings" else "")
            + f" of {document['assets']} assets, {document['dead_letters']:,} dead letters, "
            f"{document['seconds']} s ({document['rows_per_second'] or 0:,} rows/s)"
        ),
    )
    return 0


def cmd_import_telemetry(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import decode_limits
    from ingest.importer import import_telemetry

    result = import_telemetry(
        settings.database_url,
        Path(args.file),
        _layout(args),
        decode_limits(settings),
        progress=None if args.json else _stderr,
    )
    return _import_report(args, result, "readings")


def cmd_import_events(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import decode_limits
    from ingest.importer import import_events

    result = import_events(
        settings.database_url,
        Path(args.file),
        _layout(args),
        decode_limits(settings),
        progress=None if args.json else _stderr,
    )
    return _import_report(args, result, "events")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def register(commands: Commands) -> None:
    """Add ``ingest``, ``deadletters list|replay`` and the ``import`` group with
    ``telemetry`` and ``events``."""
    ingest = commands.add(
        "ingest",
        cmd_ingest,
        "consume device messages from MQTT into the database",
        json_flag=False,
    )
    ingest.add_argument(
        "--processes",
        type=positive,
        default=0,
        help="consumer processes on the shared subscription (default BASEWATCH_INGEST_PROCESSES)",
    )
    ingest.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write PATH (one JSON object) once the broker confirmed the subscription (SUBACK), "
        "again after each re-subscription; removed at start and exit (for scripts and "
        "readiness checks: publish only after it exists)",
    )
    ingest.add_argument("--index", type=non_negative, default=None, help=argparse.SUPPRESS)

    _add_deadletter_commands(commands)
    _add_import_commands(commands)


def _add_deadletter_commands(commands: Commands) -> None:
    dead = commands.group("deadletters", "messages that could not be stored", dest="dead_command")
    lst = dead.add("list", cmd_deadletters_list, "list dead letters, newest first")
    lst.add_argument("--limit", type=positive, default=50)
    lst.add_argument("--all", action="store_true", help="include resolved ones")
    lst.add_argument("--reason", help="only those whose reason contains this text")
    rep = dead.add(
        "replay", cmd_deadletters_replay, "run dead letters through the decoder and registry again"
    )
    rep.add_argument("ids", nargs="*", type=positive, metavar="ID", help="dead letter ids")
    rep.add_argument(
        "--all", action="store_true", help="replay every unresolved dead letter (instead of ids)"
    )
    rep.set_defaults(validate=_check_replay)


def _add_import_commands(commands: Commands) -> None:
    imports = commands.group("import", "load history from CSV files")
    tel = imports.add(
        "telemetry",
        cmd_import_telemetry,
        "stream a telemetry CSV (wide or long, optionally .gz) into the database",
    )
    _csv_options(tel)
    tel.add_argument(
        "--format",
        choices=("wide", "long"),
        default="wide",
        help="wide: a column per metric (default); long: time, asset, metric, value",
    )
    tel.add_argument("--metric-column", default="metric", help="long format: metric name column")
    tel.add_argument("--value-column", default="value", help="long format: value column")
    tel.add_argument(
        "--series-end-event",
        metavar="KIND",
        help="record an event of this kind at each asset's last reading (run-to-failure data)",
    )
    ev = imports.add(
        "events",
        cmd_import_events,
        "stream an events CSV (alarms, service, replacements, failures) into the database",
    )
    _csv_options(ev)
    ev.add_argument("--kind", help="event kind of every row (else the --kind-column column)")
    ev.add_argument("--kind-column", default="kind")
    ev.add_argument("--component-column", default="component")
    ev.add_argument("--code-column", default="code")


def _csv_options(command: argparse.ArgumentParser) -> None:
    from ingest.importer import TIME_FORMATS

    command.add_argument("file", help="CSV file (.gz accepted)")
    where = command.add_mutually_exclusive_group()
    where.add_argument("--asset", help="the asset every row belongs to")
    where.add_argument("--asset-column", help="column holding the asset id")
    command.add_argument(
        "--asset-prefix",
        help="prefix added to the asset column's values (e.g. 'engine-' for numeric ids)",
    )
    command.add_argument(
        "--register-account",
        metavar="ACCOUNT",
        help="register unknown assets under this account (else they are dead-lettered)",
    )
    command.add_argument(
        "--time-column", help="time column (default: time, timestamp, datetime, ts or date)"
    )
    command.add_argument(
        "--time-format",
        choices=TIME_FORMATS,
        default="auto",
        help="auto: ISO 8601 or epoch s/ms; hours/minutes/seconds/days/cycles: "
        "a count after --time-origin (a cycle counts as one hour)",
    )
    command.add_argument(
        "--time-origin", type=_iso_time, help="origin for counted time formats (ISO 8601)"
    )
    command.add_argument("--timezone", default="UTC", help="zone of times without an offset")
    command.add_argument(
        "--delimiter",
        help="field separator (default: detected); 'whitespace' for space-separated files",
    )
    command.add_argument("--no-header", action="store_true", help="the file has no header row")
    command.add_argument("--columns", help="column names, comma-separated (with --no-header)")
    command.add_argument("--ignore", help="columns to skip, comma-separated")
    command.add_argument(
        "--rename",
        action="append",
        type=_rename,
        metavar="OLD=NEW",
        help="rename a column (repeatable)",
    )
    command.add_argument(
        "--max-past-days",
        type=non_negative,
        default=0,
        help="reject rows older than this many days (default 0: no limit)",
    )
