"""``basewatch scheduler`` and ``basewatch api``: the long-running services.

Both refuse to start with the example files' placeholder secrets
(``Settings.refuse_placeholder_secrets``) and print no JSON document (no ``--json``).
"""

from __future__ import annotations

import argparse

from basewatch.argtypes import port
from basewatch.commands import Commands
from core.settings import Settings


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.scheduler import run_scheduler

    settings.refuse_placeholder_secrets()
    return run_scheduler(settings)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.api import run_api

    settings.refuse_placeholder_secrets()
    port = settings.api_port if args.port is None else args.port
    return run_api(settings, host=args.host or settings.api_host, port=port)


def register(commands: Commands) -> None:
    """Add ``scheduler`` and ``api``."""
    commands.add(
        "scheduler",
        cmd_scheduler,
        "run the periodic jobs (rollups, scoring, alert delivery); one replica is active",
        json_flag=False,
    )
    api = commands.add(
        "api", cmd_api, "serve the HTTP API and the CSM pages until SIGTERM", json_flag=False
    )
    api.add_argument("--host", help="address to listen on (default BASEWATCH_API_HOST)")
    api.add_argument(
        "--port",
        type=port,
        default=None,
        help="port to listen on (default BASEWATCH_API_PORT; 0: any free port)",
    )
