"""``basewatch config``, ``db migrate|stats`` and ``registry import``: setting the installation
up and looking at what it stores.

Registered by ``basewatch.cli`` through :func:`register` (``basewatch.commands``); handlers
take ``(settings, args)`` and print through ``basewatch.output.emit``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from basewatch.commands import Commands
from basewatch.output import emit
from core.settings import Settings


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


def register(commands: Commands) -> None:
    """Add ``config``, ``db migrate|stats`` and ``registry import``."""
    commands.add("config", cmd_config, "show the effective settings (secrets masked)")

    db = commands.group("db", "database schema and figures")
    db.add("migrate", cmd_db_migrate, "create the database if needed and apply migrations")
    db.add("stats", cmd_db_stats, "row counts and time span of what is stored")

    registry = commands.group("registry", "the installed-base registry")
    imp = registry.add(
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
