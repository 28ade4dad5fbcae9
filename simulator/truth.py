"""The ground truth: what really happened in a simulated (or labelled) fleet.

The ``ground_truth`` table is this package's (``simulator/migrations/001_ground_truth.sql``,
``002_failure_truth.sql``): rows of kind ``failure``, ``third_party_replacement``, ``story``
(``detail`` names the account's story), ``churn``, ``expansion`` and ``silent``; a failure row
also names its failure ``mode``, whether it was ``foreseeable`` and how early its precursor was
visible (``lead_hours``, ``lead_running_hours``; ``simulator.physics``). The simulator writes it
(:func:`store_ground_truth`) and the benchmarks load a simulated fleet's ``ground_truth.csv``
into it (:func:`read_ground_truth_csv`). Other packages never read it: :func:`load_truth` turns
it into the ``signals.truth.LabelledTruth`` that the composition root hands to the signals
backtest.

Decisions: ``load_truth`` reads every row (a fleet's truth is a few rows per account and asset,
not per hour) and leaves choosing kinds and windows to the backtest; stories come from ``detail``
of the ``story`` rows; storing replaces the table's contents (one simulation's truth at a time).
A failure whose ``foreseeable`` is unknown (NULL: stored before issue 13, or labelled data that
does not say) loads as foreseeable, the :class:`~signals.truth.TruthEvent` default: without the
column every failure counted, as before. A ``ground_truth.csv`` written before issue 13 has
none of the failure columns; reading it leaves them empty.
"""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from signals.truth import LabelledTruth, TruthEvent


def store_ground_truth(conn: psycopg.Connection[TupleRow], rows: list[dict[str, object]]) -> None:
    """Replace the ground truth with ``rows`` (one simulation's; the failure columns optional)."""
    complete = [
        {"mode": "", "foreseeable": None, "lead_hours": None, "lead_running_hours": None, **row}
        for row in rows
    ]
    with conn.transaction():
        conn.execute("DELETE FROM ground_truth")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ground_truth (kind, account_id, asset_id, component, time, value,"
                " detail, mode, foreseeable, lead_hours, lead_running_hours) VALUES (%(kind)s,"
                " %(account_id)s, %(asset_id)s, %(component)s, %(time)s, %(value)s, %(detail)s,"
                " %(mode)s, %(foreseeable)s, %(lead_hours)s, %(lead_running_hours)s)"
                " ON CONFLICT DO NOTHING",
                complete,
            )


def read_ground_truth_csv(path: Path) -> list[dict[str, object]]:
    """The rows of a ``ground_truth.csv`` (``simulator.simulate.write_files``), of this version
    or an earlier one without the failure columns, ready for :func:`store_ground_truth`."""
    rows: list[dict[str, object]] = []
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            rows.append(
                {
                    "kind": record["kind"],
                    "account_id": record["account_id"],
                    "asset_id": record.get("asset_id") or "",
                    "component": record.get("component") or "",
                    "time": dt.datetime.fromisoformat(record["time"]),
                    "value": _decimal(record.get("value")),
                    "detail": record.get("detail") or "",
                    "mode": record.get("mode") or "",
                    "foreseeable": _bool(record.get("foreseeable")),
                    "lead_hours": _decimal(record.get("lead_hours")),
                    "lead_running_hours": _decimal(record.get("lead_running_hours")),
                }
            )
    return rows


def _decimal(text: str | None) -> Decimal | None:
    return Decimal(text) if text else None


def _bool(text: str | None) -> bool | None:
    if not text:
        return None
    return text.strip().lower() in ("true", "t", "1", "yes")


def load_truth(conn: psycopg.Connection[TupleRow]) -> LabelledTruth:
    """The stored ground truth as the backtest's labelled truth: every event (a failure with
    whether it was foreseeable) and each account's story."""
    rows = conn.execute(
        "SELECT kind, account_id, asset_id, component, time, detail, foreseeable"
        " FROM ground_truth ORDER BY time, kind, account_id, asset_id, component"
    ).fetchall()
    events = tuple(
        TruthEvent(str(k), str(a), str(s), str(c), t, foreseeable=f is not False)
        for k, a, s, c, t, _, f in rows
        if k != "story"
    )
    stories = {str(a): str(d) for k, a, _, _, _, d, _ in rows if k == "story"}
    return LabelledTruth(events, stories)
