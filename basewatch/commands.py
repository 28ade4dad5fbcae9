"""How a command module adds its commands to the CLI: one way for every group.

Every ``basewatch/*_commands.py`` module exposes ``register(commands: Commands) -> None``;
``basewatch.cli.build_parser`` calls them in a list (the order is the order of ``--help``).
:class:`Commands` is one level of subcommands: :meth:`Commands.add` adds a command with its
handler (and ``--json``), :meth:`Commands.group` a nested level (``db``, ``import``,
``signals``...). A group is declared once, with its help, by the module that owns it; another
module adds to it by name (``nrr_commands`` adds ``import contracts|invoices|fx`` to the
``import`` group that ``ingest_commands`` declares), so it must be registered after the owner.

A handler takes ``(settings, args)`` and returns the exit code. Relations between options
that one option's type cannot check are declared with ``set_defaults(validate=fn)``:
``fn(args)`` returns the message (``argument --to: ...``) or None, and ``basewatch.cli.main``
turns a message into argparse's usage error (exit 2) before the settings are read.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from core.settings import Settings

Handler = Callable[[Settings, argparse.Namespace], int]


class Commands:
    """One level of subcommands (wraps argparse's subparsers action)."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers
        self._groups: dict[str, Commands] = {}

    def add(
        self, name: str, handler: Handler, help_text: str, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        """Add a subcommand with its handler (and ``--json`` unless it prints no document)."""
        command: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=help_text, description=help_text
        )
        command.set_defaults(handler=handler, usage_parser=command)
        if json_flag:
            command.add_argument(
                "--json", action="store_true", help="print one JSON document on stdout"
            )
        return command

    def group(self, name: str, help_text: str | None = None, *, dest: str = "") -> Commands:
        """The nested level ``name``: declared (created) when ``help_text`` is given, else the
        one another module declared before (KeyError when there is none)."""
        if help_text is None:
            return self._groups[name]
        if name in self._groups:
            raise ValueError(f"command group {name!r} is declared twice")
        subparsers = self._subparsers.add_parser(name, help=help_text).add_subparsers(
            dest=dest or f"{name}_command", required=True, metavar="SUBCOMMAND"
        )
        self._groups[name] = Commands(subparsers)
        return self._groups[name]


Register = Callable[[Commands], None]
