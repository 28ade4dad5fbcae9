"""``basewatch signals health``: each account's latest churn probability, how it was computed
(``model`` or ``weighted``) and its top factors, from the ``account_health`` table that every
scoring pass writes (``signals.health``).

A ``model`` figure is a calibrated probability and is printed as "% within 90 days"; a
``weighted`` one is the fallback's weighted risk score in [0, 1], printed as "risk score 0.42",
never as a percentage within a horizon (it is not a probability of anything).

:func:`register` adds ``health`` to the ``signals`` group (declared by
``basewatch.signals_commands``, registered before). ``--refresh`` first scores every account
as of now (or as of the end of the data when the whole fleet has been silent for 48 hours,
and says so: ``signals.health.refresh_time``) with the latest stored model trained by then (or
the weighted fallback) and records it, without touching alerts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from basewatch.commands import Commands
from basewatch.output import emit
from core.errors import InputError
from core.settings import Settings


def _text(rows: list[dict[str, Any]], note: str | None = None) -> str:
    lines = [note] if note else []
    if not rows:
        return "\n".join([*lines, "no account health recorded"])
    if any(row["method"] != "model" for row in rows):
        lines.append(
            "risk score: the weighted fallback (too little churn history for a model), "
            "0 to 1, not a probability"
        )
    for row in rows:
        if row["method"] == "model":
            longer = row["probability_180d"]
            figure = f"{row['probability'] * 100:5.1f} % within {row['horizon_days']} days" + (
                f" ({longer * 100:.1f} % within 180)" if longer is not None else ""
            )
        else:
            figure = f"risk score {row['probability']:.2f}"
        lines.append(
            f"{row['account_id']:<20} {figure}  [{row['method']}]  as of {row['as_of'][:16]}"
        )
        lines += [f"    {factor}" for factor in row["top_factors"]]
    return "\n".join(lines)


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database, signal_prices
    from signals import health
    from signals.model_store import load_model

    note = None
    with open_database(settings) as conn:
        if args.refresh:
            prices = signal_prices(settings)
            as_of, note = health.refresh_time(conn, dt.datetime.now(dt.UTC))
            stored = load_model(conn, health.NAME, as_of)
            health.findings(conn, as_of, prices, stored.model if stored is not None else None)
            health.record_latest(conn, as_of)
            conn.commit()
        rows = health.latest_health(conn, args.account)
    if args.account and not rows:
        raise InputError(
            f"no health recorded for account {args.account!r} (unknown account, no active "
            "contract, or not scored yet: try --refresh)"
        )
    if note and args.json:
        print(f"basewatch: {note}", file=sys.stderr)
    emit(args, rows, lambda: _text(rows, note))
    return 0


def register(commands: Commands) -> None:
    """Add ``health`` to the ``signals`` group."""
    command = commands.group("signals").add(
        "health",
        cmd_health,
        "each account's latest churn probability, the method behind it and its top factors",
    )
    command.add_argument("--account", help="only this account")
    command.add_argument(
        "--refresh",
        action="store_true",
        help="score every account as of now first (as of the end of the data when no machine "
        "has reported for 48 h; latest stored model, else the weighted score) and record it",
    )
