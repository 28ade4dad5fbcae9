"""The ground truth: what really happened in a simulated (or labelled) fleet.

The ``ground_truth`` table is this package's (``simulator/migrations/001_ground_truth.sql``):
rows of kind ``failure``, ``third_party_replacement``, ``story`` (``detail`` names the
account's story), ``churn``, ``expansion`` and ``silent``. The simulator writes it
(:func:`store_ground_truth`) and the benchmarks copy a simulated fleet's ``ground_truth.csv``
into it. Other packages never read it: :func:`load_truth` turns it into the
``signals.truth.LabelledTruth`` that the composition root hands to the signals backtest.

Decisions: ``load_truth`` reads every row (a fleet's truth is a few rows per account and asset,
not per hour) and leaves choosing kinds and windows to the backtest; stories come from ``detail``
of the ``story`` rows; storing replaces the table's contents (one simulation's truth at a time).
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from signals.truth import LabelledTruth, TruthEvent


def store_ground_truth(conn: psycopg.Connection[TupleRow], rows: list[dict[str, object]]) -> None:
    """Replace the ground truth with ``rows`` (one simulation's)."""
    with conn.transaction():
        conn.execute("DELETE FROM ground_truth")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ground_truth (kind, account_id, asset_id, component, time, value,"
                " detail) VALUES (%(kind)s, %(account_id)s, %(asset_id)s, %(component)s,"
                " %(time)s, %(value)s, %(detail)s) ON CONFLICT DO NOTHING",
                rows,
            )


def load_truth(conn: psycopg.Connection[TupleRow]) -> LabelledTruth:
    """The stored ground truth as the backtest's labelled truth: every event and each account's
    story."""
    rows = conn.execute(
        "SELECT kind, account_id, asset_id, component, time, detail FROM ground_truth"
        " ORDER BY time, kind, account_id, asset_id, component"
    ).fetchall()
    events = tuple(
        TruthEvent(str(k), str(a), str(s), str(c), t) for k, a, s, c, t, _ in rows if k != "story"
    )
    stories = {str(a): str(d) for k, a, _, _, _, d in rows if k == "story"}
    return LabelledTruth(events, stories)
