"""``basewatch signals health``: each account's latest churn probability, how it was computed
(``model`` or ``weighted``) and its top factors, from the ``account_health`` table that every
scoring pass writes (``signals.health``).

:func:`add_commands` is called by ``basewatch.cli.build_parser`` with the ``signals`` group's
subparsers and the CLI's ``add`` helper. ``--refresh`` first scores every account as of now
with the latest stored model (or the weighted fallback) and records it, without touching alerts.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from core.errors import InputError
from core.settings import Settings

AddCommand = Callable[..., argparse.ArgumentParser]


def _text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no account health recorded"
    lines = []
    for row in rows:
        longer = row["probability_180d"]
        lines.append(
            f"{row['account_id']:<20} {row['probability'] * 100:5.1f} % within "
            f"{row['horizon_days']} days"
            + (f" ({longer * 100:.1f} % within 180)" if longer is not None else "")
            + f"  [{row['method']}]  as of {row['as_of'][:16]}"
        )
        lines += [f"    {factor}" for factor in row["top_factors"]]
    return "\n".join(lines)


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.cli import emit
    from basewatch.wiring import open_database, signal_prices
    from signals import health
    from signals.models import load_model

    with open_database(settings) as conn:
        if args.refresh:
            prices = signal_prices(settings)
            stored = load_model(conn, health.NAME)
            now = dt.datetime.now(dt.UTC)
            health.findings(conn, now, prices, stored.model if stored is not None else None)
            health.record_latest(conn, now)
            conn.commit()
        rows = health.latest_health(conn, args.account)
    if args.account and not rows:
        raise InputError(
            f"no health recorded for account {args.account!r} (unknown account, no active "
            "contract, or not scored yet: try --refresh)"
        )
    emit(args, rows, lambda: _text(rows))
    return 0


def add_commands(signals: Any, add: AddCommand) -> argparse.ArgumentParser:
    """Add ``health`` to the ``signals`` group (its subparsers)."""
    command = add(
        signals,
        "health",
        cmd_health,
        "each account's latest churn probability, the method behind it and its top factors",
    )
    command.add_argument("--account", help="only this account")
    command.add_argument(
        "--refresh",
        action="store_true",
        help="score every account as of now first (latest stored model, else the weighted "
        "score) and record it",
    )
    return command
