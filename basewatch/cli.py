"""The ``basewatch`` command line.

Conventions (DESIGN.md): ``--json`` prints exactly one JSON document on stdout; exit code 0 on
success, 1 on a failure the user can fix (one clear line on stderr), 2 on wrong usage.

Text output never prints device-supplied text raw: ``deadletters list`` shows topics, payload
previews and reasons through :func:`core.text.escape_controls` (a device could otherwise send
``ESC[2J`` or a bidi override to the operator's terminal); ``--json`` keeps the exact strings and
``json.dump`` with ``ensure_ascii`` writes every control and non-ASCII character as ``\\uXXXX``.

Wrong usage is argparse's error (the command's usage and a line naming the option, exit 2):
a value an option's type refuses, and relations between options, which a command declares with
``set_defaults(validate=fn)``; ``fn(args)`` returns the message (``argument --to: ...``) or None
and runs before the settings are read or anything is done. Everything a command only finds out
while working (a file's bad line, a database that does not answer) is exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from basewatch.argtypes import positive
from core.db import NetworkTimeouts
from core.db import configure as configure_network_timeouts
from core.errors import BasewatchError
from core.logsetup import configure_logging
from core.settings import Settings

log = logging.getLogger("basewatch")

Handler = Callable[[Settings, argparse.Namespace], int]


def emit(args: argparse.Namespace, document: Any, text: Callable[[], str]) -> None:
    """Print ``document`` as JSON with ``--json``, else the human-readable ``text()``."""
    if getattr(args, "json", False):
        # ensure_ascii (the default, kept on purpose): control, C1 and bidi characters from
        # devices come out as \uXXXX escapes, never raw (core.text)
        json.dump(document, sys.stdout, indent=2, default=str, ensure_ascii=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text().rstrip("\n") + "\n")
    sys.stdout.flush()


# -- handlers ---------------------------------------------------------------------------------


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    values = settings.public()
    emit(args, values, lambda: "\n".join(f"{k}={v}" for k, v in values.items()))
    return 0


def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import migrate_database

    settings.refuse_placeholder_secrets()
    report = migrate_database(settings)
    role = report.app_role
    document: dict[str, Any] = {"applied": report.applied, "timescale": report.timescale}
    if role is not None:
        document["app_role"] = {
            "name": role.role,
            "created": role.created,
            "password_set": role.password_set,
        }
    emit(
        args,
        document,
        lambda: (
            f"storage: {'TimescaleDB' if report.timescale else 'plain PostgreSQL'}\n"
            + (
                "applied:\n" + "\n".join(f"  {m}" for m in report.applied)
                if report.applied
                else "schema is up to date"
            )
            + (
                f"\nservices' role: {role.role} ({'created' if role.created else 'exists'}"
                f"{', password set' if role.password_set else ''}; row access only)"
                if role is not None
                else ""
            )
        ),
    )
    return 0


def cmd_db_stats(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from ingest.stats import storage_stats

    with open_database(settings) as conn:
        stats = storage_stats(conn)
    t = stats["telemetry"]
    dead = stats["dead_letters"]
    emit(
        args,
        stats,
        lambda: (
            f"telemetry:    {t['rows']:,} rows ({t['values']:,} values) from {t['assets']} assets\n"
            f"              {t['first_time'] or '-'} .. {t['last_time'] or '-'}\n"
            f"events:       {stats['events']['rows']:,} rows\n"
            f"dead letters: {dead['rows']:,} rows ({dead['unresolved']:,} unresolved, "
            f"{dead['truncated']:,} truncated), {dead['suppressed']:,} more counted over the "
            f"rate limit"
        ),
    )
    return 0


def cmd_registry_import(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from core.registry import import_registry, read_registry_csv

    batch = read_registry_csv([Path(p) for p in args.files], kind=args.kind)
    counts = batch.count()
    if not args.dry_run:
        with open_database(settings) as conn:
            import_registry(conn, batch)
    document = {"imported": not args.dry_run, "records": counts}
    emit(
        args,
        document,
        lambda: (
            ("validated" if args.dry_run else "imported")
            + ": "
            + ", ".join(f"{n} {kind}s" for kind, n in counts.items())
        ),
    )
    return 0


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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be between 0 and 65535 (0: any free port), got {value}"
        )
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("basewatch")
    except PackageNotFoundError:
        return "unknown (not installed)"


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


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.demo import simulate_command

    return simulate_command(settings, args)


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.scheduler import run_scheduler

    settings.refuse_placeholder_secrets()
    return run_scheduler(settings)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.api import run_api

    settings.refuse_placeholder_secrets()
    port = settings.api_port if args.port is None else args.port
    return run_api(settings, host=args.host or settings.api_host, port=port)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.demo import run_demo

    return run_demo(settings, args)


# -- parser -----------------------------------------------------------------------------------


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add(
    sub: Any, name: str, handler: Handler, help_text: str, json_flag: bool = True
) -> argparse.ArgumentParser:
    """Add a subcommand with its handler (and ``--json`` unless it prints no document)."""
    command: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    command.set_defaults(handler=handler, usage_parser=command)
    if json_flag:
        command.add_argument(
            "--json", action="store_true", help="print one JSON document on stdout"
        )
    return command


def _add_deadletter_commands(commands: Any) -> None:
    dead = commands.add_parser(
        "deadletters", help="messages that could not be stored"
    ).add_subparsers(dest="dead_command", required=True, metavar="SUBCOMMAND")
    lst = add(dead, "list", cmd_deadletters_list, "list dead letters, newest first")
    lst.add_argument("--limit", type=positive, default=50)
    lst.add_argument("--all", action="store_true", help="include resolved ones")
    lst.add_argument("--reason", help="only those whose reason contains this text")
    rep = add(
        dead,
        "replay",
        cmd_deadletters_replay,
        "run dead letters through the decoder and registry again",
    )
    rep.add_argument("ids", nargs="*", type=positive, metavar="ID", help="dead letter ids")
    rep.add_argument(
        "--all", action="store_true", help="replay every unresolved dead letter (instead of ids)"
    )
    rep.set_defaults(validate=_check_replay)


def _add_import_commands(commands: Any) -> Any:
    imports = commands.add_parser("import", help="load history from CSV files").add_subparsers(
        dest="import_command", required=True, metavar="SUBCOMMAND"
    )
    tel = add(
        imports,
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
    ev = add(
        imports,
        "events",
        cmd_import_events,
        "stream an events CSV (alarms, service, replacements, failures) into the database",
    )
    _csv_options(ev)
    ev.add_argument("--kind", help="event kind of every row (else the --kind-column column)")
    ev.add_argument("--kind-column", default="kind")
    ev.add_argument("--component-column", default="component")
    ev.add_argument("--code-column", default="code")
    return imports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="basewatch",
        description="Installed-base telemetry to revenue signals. "
        "Settings come from BASEWATCH_* environment variables (see the README).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--version", action="version", version=f"basewatch {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add(commands, "config", cmd_config, "show the effective settings (secrets masked)")

    db = commands.add_parser("db", help="database schema and figures").add_subparsers(
        dest="db_command", required=True, metavar="SUBCOMMAND"
    )
    add(db, "migrate", cmd_db_migrate, "create the database if needed and apply migrations")
    add(db, "stats", cmd_db_stats, "row counts and time span of what is stored")

    registry = commands.add_parser("registry", help="the installed-base registry").add_subparsers(
        dest="registry_command", required=True, metavar="SUBCOMMAND"
    )
    imp = add(
        registry,
        "import",
        cmd_registry_import,
        "import CSMs, accounts, assets and components from CSV (all rows or none)",
    )
    imp.add_argument("files", nargs="+", metavar="FILE.csv")
    imp.add_argument(
        "--kind",
        choices=("csm", "account", "asset", "component"),
        help="record kind of every file (default: detected from the header)",
    )
    imp.add_argument("--dry-run", action="store_true", help="validate only, write nothing")

    ingest = add(
        commands,
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
    ingest.add_argument("--index", type=_non_negative, default=None, help=argparse.SUPPRESS)

    _add_deadletter_commands(commands)

    imports = _add_import_commands(commands)
    from basewatch.nrr_commands import add_commands as add_nrr_commands

    add_nrr_commands(commands, imports)
    from basewatch.alerts_commands import add_commands as add_alert_commands

    add_alert_commands(commands, add)
    from basewatch.signals_commands import add_commands as add_signal_commands

    signal_commands = add_signal_commands(commands, add)
    from basewatch.health_commands import add_commands as add_health_commands

    add_health_commands(signal_commands, add)
    add(
        commands,
        "scheduler",
        cmd_scheduler,
        "run the periodic jobs (rollups, scoring, alert delivery); one replica is active",
        json_flag=False,
    )
    api = add(
        commands,
        "api",
        cmd_api,
        "serve the HTTP API and the CSM pages until SIGTERM",
        json_flag=False,
    )
    api.add_argument("--host", help="address to listen on (default BASEWATCH_API_HOST)")
    api.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port to listen on (default BASEWATCH_API_PORT; 0: any free port)",
    )

    sim = add(
        commands,
        "simulate",
        cmd_simulate,
        "simulate a compressed-air fleet: write it as CSV files (--out) or publish it "
        "over MQTT to the configured broker (registering the fleet first)",
    )
    _fleet_options(sim)
    sim.add_argument(
        "--out",
        type=Path,
        help="write CSV files into this folder instead of "
        "publishing (telemetry.csv.gz, events, contracts, invoices, fx, "
        "ground_truth, registry)",
    )
    sim.add_argument(
        "--truth-out", type=Path, help="when publishing: write the ground truth to this CSV file"
    )
    sim.add_argument(
        "--no-register",
        action="store_true",
        help="when publishing: do not write the fleet into the registry",
    )

    demo = add(
        commands,
        "demo",
        cmd_demo,
        "run the pipeline end to end on a simulated fleet and tell its story",
    )
    _fleet_options(demo)
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo database's previous contents (default: start fresh)",
    )
    demo.add_argument(
        "--database",
        default="basewatch_demo",
        help="database the demo uses (on BASEWATCH_DATABASE_URL's server)",
    )
    demo.add_argument(
        "--broker",
        choices=("private", "configured"),
        default="private",
        help="private: start a Mosquitto on a free port with the project's "
        "config (default); configured: use BASEWATCH_MQTT_HOST/PORT",
    )
    demo.add_argument(
        "--out", type=Path, default=None, help="folder for the demo's files (default out/demo)"
    )
    demo.add_argument(
        "--signal-months",
        type=_non_negative,
        default=2,
        help="replay the signals day by day over the last N months (2; 0 skips)",
    )
    return parser


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
        type=_non_negative,
        default=0,
        help="reject rows older than this many days (default 0: no limit)",
    )


def _fleet_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--accounts", type=positive, default=40)
    command.add_argument(
        "--assets",
        type=positive,
        default=150,
        help="compressors in the fleet (at least one per account)",
    )
    command.add_argument(
        "--months",
        type=_at_least(2),
        default=24,
        help="months of hourly history ending at the start of this month (at least 2)",
    )
    command.add_argument("--seed", type=int, default=1)
    command.add_argument(
        "--stories",
        default="",
        help="story mix, e.g. steady=0.4,growing=0.2,declining=0.2,leaky=0.1,"
        "third_party=0.05,heat_recovery=0.05 (default: the built-in mix)",
    )
    command.set_defaults(fleet_parser=command)


def _check_fleet_options(args: argparse.Namespace) -> None:
    """Relations between the fleet options that one option's type cannot check: wrong usage,
    so argparse's error (exit 2, naming the option)."""
    from simulator.fleet import parse_mix

    parser: argparse.ArgumentParser = args.fleet_parser
    if args.assets < args.accounts:
        parser.error(
            f"argument --assets: must be at least --accounts ({args.accounts}), "
            f"one compressor per account; got {args.assets}"
        )
    if args.stories:
        try:
            parse_mix(args.stories)
        except ValueError as exc:
            parser.error(f"argument --stories: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fleet_parser", None) is not None:
        _check_fleet_options(args)
    validate = getattr(args, "validate", None)
    if validate is not None:
        problem = validate(args)
        if problem:
            args.usage_parser.error(problem)
    try:
        settings = Settings.from_env()
        configure_logging("DEBUG" if args.verbose else settings.log_level)
        configure_network_timeouts(NetworkTimeouts.from_settings(settings))
        for name in Settings.unknown_variables():
            log.warning("%s names no setting (typo?); it is ignored", name)
        handler: Handler = args.handler
        return handler(settings, args)
    except BasewatchError as exc:
        print(f"basewatch: error: {exc}", file=sys.stderr)
        return 1
    except psycopg.errors.UndefinedTable as exc:
        print(
            f"basewatch: error: the database is not migrated ({str(exc).splitlines()[0]}); "
            "run: basewatch db migrate",
            file=sys.stderr,
        )
        return 1
    except psycopg.Error as exc:
        print(f"basewatch: error: database: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"basewatch: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("basewatch: interrupted", file=sys.stderr)
        return 130
