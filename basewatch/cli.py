"""The ``basewatch`` command line: the entry point, above every command module.

Conventions (DESIGN.md): ``--json`` prints exactly one JSON document on stdout
(``basewatch.output``); exit code 0 on success, 1 on a failure the user can fix (one clear
line on stderr), 2 on wrong usage.

Wrong usage is argparse's error (the command's usage and a line naming the option, exit 2):
a value an option's type refuses, and relations between options, which a command declares with
``set_defaults(validate=fn)``; ``fn(args)`` returns the message (``argument --to: ...``) or None
and runs before the settings are read or anything is done. Everything a command only finds out
while working (a file's bad line, a database that does not answer) is exit 1.

The commands come from the ``*_commands`` modules, each registered the same way
(``register(commands)``, ``basewatch.commands``), in the order ``--help`` lists them. Imports
go one way: this module imports the command modules, and nothing but ``basewatch.__main__``
imports this module (``tests/basewatch/test_import_direction.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import psycopg

from basewatch import (
    account_commands,
    admin_commands,
    alerts_commands,
    demo_commands,
    health_commands,
    ingest_commands,
    nrr_commands,
    service_commands,
    signals_commands,
    users_commands,
)
from basewatch.commands import Commands, Handler, Register
from core.db import NetworkTimeouts
from core.db import configure as configure_network_timeouts
from core.errors import BasewatchError
from core.logsetup import configure_logging
from core.settings import Settings

log = logging.getLogger("basewatch")

# the order of ``basewatch --help``; a module that adds to another's group comes after it
REGISTER: tuple[Register, ...] = (
    admin_commands.register,
    users_commands.register,
    ingest_commands.register,
    nrr_commands.register,
    alerts_commands.register,
    signals_commands.register,
    health_commands.register,
    account_commands.register,
    service_commands.register,
    demo_commands.register,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("basewatch")
    except PackageNotFoundError:
        return "unknown (not installed)"


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
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for register in REGISTER:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
