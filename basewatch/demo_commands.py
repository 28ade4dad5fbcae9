"""``basewatch simulate`` and ``basewatch demo``: a simulated compressed-air fleet, written to
files or published, and the end-to-end demo on one (``basewatch.demo``).

The fleet options' relations that one option's type cannot check (``--assets`` at least
``--accounts``, a valid ``--stories`` mix) are the commands' ``validate`` (wrong usage, exit 2,
naming the option).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from basewatch.argtypes import at_least, non_negative, positive
from basewatch.commands import Commands
from core.settings import Settings


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.demo import simulate_command

    return simulate_command(settings, args)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.demo import run_demo

    return run_demo(settings, args)


def register(commands: Commands) -> None:
    """Add ``simulate`` and ``demo``."""
    sim = commands.add(
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

    demo = commands.add(
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
        type=non_negative,
        default=2,
        help="replay the signals day by day over the last N months (2; 0 skips)",
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
        type=at_least(2),
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
    command.set_defaults(validate=_check_fleet_options)


def _check_fleet_options(args: argparse.Namespace) -> str | None:
    """Relations between the fleet options that one option's type cannot check: wrong usage,
    so argparse's error (exit 2, naming the option)."""
    from simulator.fleet import parse_mix

    if args.assets < args.accounts:
        return (
            f"argument --assets: must be at least --accounts ({args.accounts}), "
            f"one compressor per account; got {args.assets}"
        )
    if args.stories:
        try:
            parse_mix(args.stories)
        except ValueError as exc:
            return f"argument --stories: {exc}"
    return None
