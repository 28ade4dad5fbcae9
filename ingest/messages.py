"""Decoded messages and their routing: pure, no I/O (the writes are ``ingest.store``'s).

A :class:`Message` is one received MQTT message or import row with its topic parsed and its
payload decoded (:func:`decode_message`: ``ingest.topics`` and ``ingest.decode``). :func:`route`
splits a batch against the asset owners the registry gave (``asset_id`` -> ``account_id``) into
telemetry rows (one per asset and time, the metrics of a reading sent twice in one batch
merged), event rows and dead letters with their reasons: a topic that breaks the contract, an
unknown asset, an asset of another account than the topic's, or the items the decoder rejected
(summarised: the first five reasons and how many more). The rows come out in the column order
of ``ingest.store``'s COPY and INSERT statements.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg.types.json import Jsonb

from core.errors import InvalidPayload
from ingest.decode import Decoded, Event, Limits, Reading, decode_events, decode_telemetry
from ingest.topics import Topic, parse_topic


@dataclass(slots=True)
class Message:
    """One received message (or import row), decoded, waiting to be written.

    ``target`` is ``None`` when the topic broke the contract (``topic_error`` says how)."""

    topic: str
    payload: bytes
    received_at: dt.datetime
    target: Topic | None
    decoded: Decoded
    topic_error: str = ""
    source: str = "mqtt"
    line: int | None = None


def decode_message(
    topic_name: str, payload: bytes, *, prefix: str, limits: Limits, received_at: dt.datetime
) -> Message:
    """Parse the topic and decode the payload of one message (no database access)."""
    try:
        topic = parse_topic(topic_name, prefix)
    except InvalidPayload as exc:
        return Message(
            topic_name, payload, received_at, None, Decoded([], [], []), topic_error=exc.reason
        )
    if topic.channel == "telemetry":
        decoded = decode_telemetry(payload, received_at, limits)
    else:
        decoded = decode_events(payload, received_at, limits)
    return Message(topic_name, payload, received_at, topic, decoded)


@dataclass(slots=True)
class Routed:
    """A routed batch: telemetry rows by (asset, time), event rows, dead letters with their
    reasons, and the metric names seen."""

    rows: dict[tuple[str, dt.datetime], list[object]] = field(default_factory=dict)
    events: list[tuple[object, ...]] = field(default_factory=list)
    dead: list[tuple[Message, str]] = field(default_factory=list)  # (message, reason)
    names: set[str] = field(default_factory=set)

    def values(self) -> int:
        return sum(len(row[4]) for row in self.rows.values())  # type: ignore[arg-type,misc]


def route(messages: Sequence[Message], owners: dict[str, str]) -> Routed:
    """Split messages into telemetry rows (merged per asset and time), events and dead letters."""
    routed = Routed()
    for message in messages:
        reasons = _ownership_problem(message, owners)
        if reasons:
            routed.dead.append((message, reasons))
            continue
        target = message.target
        assert target is not None
        for reading in message.decoded.readings:
            _add_reading(routed, target.asset_id, reading, message.received_at)
        for event in message.decoded.events:
            routed.events.append(_event_row(target.asset_id, event, message.received_at))
        if message.decoded.rejections:
            routed.dead.append((message, _summarise(message.decoded)))
    return routed


def _ownership_problem(message: Message, owners: dict[str, str]) -> str:
    target = message.target
    if target is None:
        return message.topic_error or "invalid topic"
    owner = owners.get(target.asset_id)
    if owner is None:
        return (
            f"unknown asset {target.asset_id!r} (register it, or set BASEWATCH_AUTO_REGISTER=true)"
        )
    if owner != target.account_id:
        return (
            f"asset {target.asset_id!r} belongs to account {owner!r}, not to the topic's "
            f"account {target.account_id!r}"
        )
    return ""


def _add_reading(routed: Routed, asset_id: str, reading: Reading, received_at: dt.datetime) -> None:
    key = (asset_id, reading.time)
    row = routed.rows.get(key)
    if row is None:
        routed.rows[key] = [asset_id, reading.time, received_at, reading.seq, reading.metrics]
    else:  # the same reading twice in one batch: one row with the union of the metrics
        stored = row[4]
        assert isinstance(stored, dict)
        row[4] = {**stored, **reading.metrics}
    routed.names.update(reading.metrics)


def _event_row(asset_id: str, event: Event, received_at: dt.datetime) -> tuple[object, ...]:
    return (
        asset_id,
        event.time,
        event.kind,
        event.code,
        event.component,
        Jsonb(event.detail),
        received_at,
    )


def _summarise(decoded: Decoded) -> str:
    valid = len(decoded.readings) + len(decoded.events)
    total = valid + len(decoded.rejections)
    shown = "; ".join(decoded.rejections[:5])
    more = f"; ... {len(decoded.rejections) - 5} more" if len(decoded.rejections) > 5 else ""
    prefix = f"{len(decoded.rejections)} of {total} items rejected: " if total > 1 else ""
    return f"{prefix}{shown}{more}"
