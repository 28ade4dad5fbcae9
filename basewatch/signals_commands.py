"""``basewatch signals …``: the backtest, and the scoring steps an operator runs by hand
(the scheduler runs them on its own; see ``basewatch.scheduler``).

:func:`register` declares the ``signals`` group (``basewatch.health_commands`` adds
``health`` to it) with ``backtest``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import re
import sys
import time
from pathlib import Path
from typing import Any

from basewatch.commands import Commands
from basewatch.output import emit
from core.db import connect
from core.settings import Settings

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> dt.timedelta:
    """``30m``, ``1h``, ``6h``, ``1d``, ``2w`` (argparse type)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 1h, 30m, 1d or 2w, got {text!r}"
        )
    value = dt.timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if value <= dt.timedelta(0):
        raise argparse.ArgumentTypeError("the duration must be positive")
    return value


def moment(text: str) -> dt.datetime:
    """``YYYY-MM-DD`` (00:00 UTC) or an ISO 8601 time (naive = UTC) (argparse type)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected YYYY-MM-DD or an ISO 8601 time, got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def cmd_backtest(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import signal_prices
    from signals.backtest import delivery_load_of, format_table, run_backtest
    from signals.rollups import refresh_rollups
    from signals.routing import record_precision
    from simulator.truth import load_truth

    prices = signal_prices(settings)
    last = [0.0]

    def progress(t: dt.datetime, done: int, total: int, alerts: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0 or done == total:
            last[0] = now
            print(
                f"backtest: {t:%Y-%m-%d %H:%M} pass {done:,}/{total:,} ({done / total:.0%}), "
                f"{alerts:,} alerts raised",
                file=sys.stderr,
                flush=True,
            )

    with connect(settings.database_url, autocommit=True) as conn:
        if not args.no_refresh:
            refreshed = refresh_rollups(conn)
            if refreshed.buckets:
                print(f"rollups: {refreshed.summary()}", file=sys.stderr)
        result = run_backtest(
            conn,
            args.from_,
            args.to,
            step=args.step,
            retrain_every=args.retrain_every,
            clear_after=dt.timedelta(hours=settings.alert_clear_hours),
            cooldown=dt.timedelta(days=settings.alert_cooldown_days),
            prices=prices,
            kinds=set(args.kind) if args.kind else None,
            progress=progress,
            labelled=load_truth(conn),
        )
        if not args.no_record:  # the precision gate of the alerts reads it (signals.routing)
            record_precision(conn, result, dt.datetime.now(dt.UTC))
    if args.alerts_csv is not None:
        write_alerts_csv(args.alerts_csv, [a.as_dict() for a in result.alerts])
    load = delivery_load_of(result, settings.alert_min_precision, settings.alert_weekly_budget)
    emit(
        args,
        result.as_dict() | {"delivery": load.as_dict()},
        lambda: f"{format_table(result)}\n{load.line()}",
    )
    return 0


def write_alerts_csv(path: Path, alerts: list[dict[str, Any]]) -> None:
    """The raised alerts, one per line (reasons joined with `` | ``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [
        "raised_at",
        "account_id",
        "owner",
        "kind",
        "family",
        "subject",
        "score",
        "value",
        "horizon_days",
        "reasons",
    ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for alert in alerts:
            writer.writerow({**alert, "reasons": " | ".join(alert["reasons"])})


def _check_backtest(args: argparse.Namespace) -> str | None:
    """Wrong usage of ``signals backtest`` (argparse's exit 2), or None."""
    from signals.kinds import FAMILIES, RETIRED

    unknown = sorted(set(args.kind or ()) - set(FAMILIES))
    retired = [k for k in unknown if k in RETIRED]
    if retired:
        return (
            f"argument --kind: {', '.join(retired)} was retired: component_due became "
            "failure_risk (the asset fails) and service_due (the component is replaced)"
        )
    if unknown:
        return (
            f"argument --kind: unknown signal kind(s) {', '.join(unknown)} "
            f"(choose from {', '.join(sorted(FAMILIES))})"
        )
    if args.to <= args.from_:
        return (
            f"argument --to: {args.to.isoformat()} must be after --from ({args.from_.isoformat()})"
        )
    return None


def register(commands: Commands) -> None:
    """Add the ``signals`` group with ``backtest``."""
    signals = commands.group("signals", "signals: backtest, account health")
    bt = signals.add(
        "backtest",
        cmd_backtest,
        "replay history as of each step, list the alerts that would have been raised and "
        "score each kind against its own promise (failures, replacements, alarms, churn, "
        "expansions that happened within its horizon)",
    )
    bt.add_argument(
        "--from",
        dest="from_",
        metavar="FROM",
        type=moment,
        required=True,
        help="start (YYYY-MM-DD or ISO time)",
    )
    bt.add_argument("--to", type=moment, required=True, help="end, exclusive")
    bt.add_argument(
        "--step", type=duration, default=dt.timedelta(hours=1), help="time between passes (1h)"
    )
    bt.add_argument(
        "--retrain-every",
        type=duration,
        default=dt.timedelta(days=1),
        help="retrain the models on the data before the replayed time this often (1d)",
    )
    bt.add_argument(
        "--kind", action="append", help="only this signal kind (repeatable; default: all)"
    )
    bt.add_argument(
        "--alerts-csv", type=Path, default=None, help="also write the raised alerts to this CSV"
    )
    bt.add_argument(
        "--no-refresh",
        action="store_true",
        help="do not bring the rollups up to date with telemetry first",
    )
    bt.add_argument(
        "--no-record",
        action="store_true",
        help="do not store the measured precision per kind (which decides whose alerts are "
        "sent at once, BASEWATCH_ALERT_MIN_PRECISION)",
    )
    bt.set_defaults(validate=_check_backtest)
