"""The model store (trained models kept in the database), and the protocol every model-backed
detector follows. Named ``model_store``, not ``models``: the models are the detector modules.

A detector module (``signals.failure_model``, ``signals.anomaly``, ``signals.health``) provides

- ``NAME``: the model's name in the store;
- ``train(conn, until) -> object | None``: fit on what was known before ``until`` (rollups,
  events, contracts with times before it), or ``None`` when there is too little to learn from;
- ``findings(conn, as_of, prices, model) -> list[Finding]``: score as of ``as_of`` with the
  model (``None``: the detector's documented fallback, or nothing).

Production trains nightly (``signals.scoring.retrain_models``) and keeps the result here; the
hourly scoring pass loads the latest. The backtest trains in memory as of each replayed time,
so it never scores with a model that saw the future.

Blobs are pickles written by basewatch itself into its own database: only a database writer
could forge one, and they can already change every figure.
"""

from __future__ import annotations

import datetime as dt
import pickle
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import TupleRow

KEEP = 5  # trained versions kept per model


@dataclass(frozen=True)
class Stored:
    name: str
    trained_until: dt.datetime
    trained_at: dt.datetime
    summary: dict[str, Any]
    model: object


def save_model(
    conn: psycopg.Connection[TupleRow],
    name: str,
    trained_until: dt.datetime,
    model: object,
    summary: dict[str, Any] | None = None,
) -> None:
    """Store ``model`` (replacing a version with the same cut-off) and prune old versions."""
    from psycopg.types.json import Jsonb

    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    with conn.transaction():
        conn.execute(
            "INSERT INTO signal_models (name, trained_until, summary, blob)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (name, trained_until) DO UPDATE"
            " SET trained_at = now(), summary = EXCLUDED.summary, blob = EXCLUDED.blob",
            (name, trained_until, Jsonb(summary or {}), blob),
        )
        conn.execute(
            "DELETE FROM signal_models WHERE name = %s AND trained_until < ALL ("
            " SELECT trained_until FROM signal_models WHERE name = %s"
            " ORDER BY trained_until DESC LIMIT %s)",
            (name, name, KEEP),
        )


def load_model(
    conn: psycopg.Connection[TupleRow], name: str, as_of: dt.datetime | None = None
) -> Stored | None:
    """The latest stored version of ``name`` (trained before ``as_of`` when given)."""
    row = conn.execute(
        "SELECT name, trained_until, trained_at, summary, blob FROM signal_models"
        " WHERE name = %s AND (%s::timestamptz IS NULL OR trained_until <= %s)"
        " ORDER BY trained_until DESC LIMIT 1",
        (name, as_of, as_of),
    ).fetchone()
    if row is None:
        return None
    model = pickle.loads(bytes(row[4]))  # noqa: S301 - our own database, see the docstring
    return Stored(str(row[0]), row[1], row[2], dict(row[3]), model)
