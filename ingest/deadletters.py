"""Listing and replaying dead letters.

Replay runs a stored MQTT message through today's decoder and registry (after an asset was
registered, say): what is now valid is stored (idempotently: a reading stored before is merged,
not doubled) and the dead letter is marked resolved; what is still invalid keeps its dead letter,
with the new reason.

Only complete MQTT payloads can be replayed: a dead letter whose stored payload is a prefix
(the message was larger than ``BASEWATCH_INGEST_DEAD_LETTER_PAYLOAD_BYTES``) and a rate-limit
summary (``suppressed`` > 0: it stands for messages that were counted, not stored) are skipped,
as are import rows. The list shows, for each dead letter, the payload's full size, whether the
stored one is cut, the sha256 of the whole payload and the count a summary stands for.

The listed strings (topic, payload text, reason) are exactly what was stored, control and bidi
characters included: whoever prints them escapes them (``basewatch deadletters list`` does,
through :func:`core.text.escape_controls`; the JSON form escapes them by itself).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from core.errors import InvalidPayload
from ingest.messages import Message
from ingest.store import BatchWriter

UTC = dt.UTC


@dataclass(frozen=True)
class ReplayResult:
    """Counts of a replay run."""

    replayed: int
    resolved: int
    still_failing: int
    skipped: int  # not replayable: import rows, truncated payloads, rate-limit summaries


def list_dead_letters(
    conn: psycopg.Connection[TupleRow],
    *,
    limit: int = 100,
    include_resolved: bool = False,
    reason_contains: str = "",
) -> list[dict[str, Any]]:
    """Newest first; the payload is shown as text when it is UTF-8, else as hex.

    ``payload_bytes`` is the size of the whole message, ``stored_bytes`` what is kept of it
    (``truncated`` when less), ``payload_sha256`` the hash of the whole message (none on a
    rate-limit summary, whose payload is a sample) and ``suppressed`` the number of messages a
    summary stands for (0 on an ordinary dead letter)."""
    rows = conn.execute(
        "SELECT id, received_at, source, topic, line, payload, reason, resolved_at, resolution,"
        " coalesce(payload_bytes, length(payload)), payload_sha256, suppressed"
        " FROM dead_letters WHERE (%s OR resolved_at IS NULL) AND reason ILIKE %s"
        " ORDER BY id DESC LIMIT %s",
        (include_resolved, f"%{reason_contains}%", limit),
    ).fetchall()
    return [
        {
            "id": r[0],
            "received_at": _iso(r[1]),
            "source": r[2],
            "topic": r[3],
            "line": r[4],
            "payload": _show(bytes(r[5])),
            "payload_bytes": int(r[9]),
            "stored_bytes": len(bytes(r[5])),
            "truncated": int(r[9]) > len(bytes(r[5])),
            "payload_sha256": None if r[11] else bytes(r[10]).hex(),
            "suppressed": int(r[11]),
            "reason": r[6],
            "resolved_at": _iso(r[7]),
            "resolution": r[8],
        }
        for r in rows
    ]


def dead_letter_reasons(conn: psycopg.Connection[TupleRow]) -> list[tuple[str, str]]:
    """(topic, reason) of every dead letter, oldest first."""
    return [
        (str(topic), str(reason))
        for topic, reason in conn.execute("SELECT topic, reason FROM dead_letters ORDER BY id")
    ]


def replay(
    conn: psycopg.Connection[TupleRow],
    writer: BatchWriter,
    decode: Callable[[str, bytes], Message],
    ids: Sequence[int] | None,
) -> ReplayResult:
    """Replay the unresolved dead letters with ``ids`` (all unresolved ones when ``None``)."""
    query = (
        "SELECT id, source, topic, payload,"
        " suppressed = 0 AND coalesce(payload_bytes, length(payload)) = length(payload)"
        " FROM dead_letters WHERE resolved_at IS NULL"
        " AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[])) ORDER BY id"
    )
    rows = conn.execute(
        query, (list(ids) if ids is not None else None, list(ids) if ids is not None else None)
    ).fetchall()
    resolved = failing = skipped = 0
    for dead_id, source, topic, payload, complete in rows:
        if source != "mqtt" or not complete:
            skipped += 1
            continue
        try:
            message = decode(str(topic), bytes(payload))
            message.source = "replay"
            stats = writer.write([message])
        except (InvalidPayload, ValueError, RecursionError) as exc:  # keep replaying the rest
            failing += 1
            conn.execute(
                "UPDATE dead_letters SET reason = %s WHERE id = %s",
                (f"replay failed: {exc}"[:2000], dead_id),
            )
            conn.commit()
            continue
        if stats.dead_letters:
            failing += 1
            conn.execute(
                "UPDATE dead_letters SET reason = %s WHERE id = %s", (stats.reasons[0], dead_id)
            )
        else:
            resolved += 1
            conn.execute(
                "UPDATE dead_letters SET resolved_at = now(), resolution = 'replayed'"
                " WHERE id = %s",
                (dead_id,),
            )
        conn.commit()
    return ReplayResult(
        replayed=len(rows) - skipped, resolved=resolved, still_failing=failing, skipped=skipped
    )


def _show(payload: bytes) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + payload[:512].hex()
    return text if len(text) <= 2000 else text[:2000] + "…"


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else None
