"""Payload codecs for the MQTT contract (DESIGN.md), pure: no I/O.

Telemetry: ``{"ts": RFC 3339 | epoch ms, "seq": int (optional), "metrics": {name: number}}`` or a
list of such objects. Events: ``{"ts": ..., "kind": identifier, "code": str, "component": str,
...}`` or a list; ``type`` is accepted for ``kind``, other fields are kept as the event's detail.

A payload that cannot be parsed at all is rejected whole; in a list, each item is judged on its
own, so one bad item does not hold back the valid ones.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidPayload
from core.ids import is_identifier

UTC = dt.UTC
_EPOCH_MS_MAX = 253_402_300_799_000  # 9999-12-31T23:59:59Z
_BIGINT_MAX = 2**63 - 1
_MAX_TEXT = 1024
_INT_EXACT = 2**53
# Metric names already validated (they repeat in every message); bounded so that a stream of
# random names cannot grow it without limit.
_KNOWN_NAMES: set[str] = set()
_KNOWN_NAMES_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Limits:
    """What a payload may contain; from settings (``BASEWATCH_INGEST_*``)."""

    max_payload_bytes: int = 1_048_576
    max_items: int = 10_000
    max_metrics: int = 500
    max_future_s: int = 600
    max_past_days: int = 3650


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry sample of one asset: device time, optional sequence number, values."""

    time: dt.datetime
    seq: int | None
    metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class Event:
    """An alarm, service or replacement reported by an asset."""

    time: dt.datetime
    kind: str
    code: str
    component: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decoded:
    """The valid items of a payload and the reasons for the rejected ones."""

    readings: list[Reading]
    events: list[Event]
    rejections: list[str]


def _reject_constant(name: str) -> float:
    raise InvalidPayload("", f"{name} is not a finite number")


def parse_json(payload: bytes, limits: Limits) -> list[dict[str, Any]]:
    """Parse a payload into a list of objects (a single object becomes a list of one)."""
    if len(payload) > limits.max_payload_bytes:
        raise InvalidPayload(
            "payload", f"{len(payload)} bytes exceeds the limit of {limits.max_payload_bytes}"
        )
    try:
        document = json.loads(payload, parse_constant=_reject_constant)
    except InvalidPayload as exc:
        raise InvalidPayload("payload", f"invalid JSON: {exc.reason}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidPayload("payload", f"invalid JSON: {str(exc)[:200]}") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        if not document:
            raise InvalidPayload("payload", "empty list")
        if len(document) > limits.max_items:
            raise InvalidPayload(
                "payload", f"list of {len(document)} items exceeds the limit of {limits.max_items}"
            )
        return document
    raise InvalidPayload("payload", f"expected an object or a list, got {type(document).__name__}")


def parse_time(value: object, now: dt.datetime, limits: Limits, field: str = "ts") -> dt.datetime:
    """An RFC 3339 string or epoch milliseconds, within the allowed window around ``now``."""
    if isinstance(value, str):
        if len(value) > 64:
            raise InvalidPayload(field, "timestamp string too long")
        try:
            time = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidPayload(field, f"{value!r} is not an RFC 3339 timestamp") from None
        if time.tzinfo is None:
            raise InvalidPayload(
                field, f"{value!r} needs a date, a time and a UTC offset (RFC 3339)"
            )
        try:
            time = time.astimezone(UTC)
        except OverflowError:
            raise InvalidPayload(field, f"{value!r} is out of range") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value <= _EPOCH_MS_MAX:  # also false for NaN
            raise InvalidPayload(field, f"{value!r} is not an epoch time in milliseconds")
        time = dt.datetime.fromtimestamp(value / 1000, UTC)
    elif value is None:
        raise InvalidPayload(field, "required")
    else:
        raise InvalidPayload(
            field, f"expected an RFC 3339 string or epoch milliseconds, got {type(value).__name__}"
        )
    if time > now + dt.timedelta(seconds=limits.max_future_s):
        raise InvalidPayload(
            field, f"{time.isoformat()} is more than {limits.max_future_s} s in the future"
        )
    if time < now - dt.timedelta(days=limits.max_past_days):
        hint = (
            " (epoch seconds instead of milliseconds?)"
            if isinstance(value, int | float) and value < 1e11
            else ""
        )
        raise InvalidPayload(
            field, f"{time.isoformat()} is more than {limits.max_past_days} days in the past{hint}"
        )
    return time


def _reading(item: object, now: dt.datetime, limits: Limits) -> Reading:
    if not isinstance(item, dict):
        raise InvalidPayload("", f"expected an object, got {type(item).__name__}")
    time = parse_time(item.get("ts"), now, limits)
    seq = item.get("seq")
    if seq is not None and (
        not isinstance(seq, int) or isinstance(seq, bool) or not -_BIGINT_MAX <= seq <= _BIGINT_MAX
    ):
        raise InvalidPayload("seq", "must be an integer")
    raw = item.get("metrics")
    if not isinstance(raw, dict):
        raise InvalidPayload("metrics", "required: an object of metric name to number")
    if not raw:
        raise InvalidPayload("metrics", "is empty")
    if len(raw) > limits.max_metrics:
        raise InvalidPayload(
            "metrics", f"{len(raw)} metrics exceed the limit of {limits.max_metrics}"
        )
    for name, value in raw.items():
        if name not in _KNOWN_NAMES:
            if not is_identifier(name):
                raise InvalidPayload(
                    "metrics", f"name {name[:70]!r} is not an identifier ([A-Za-z0-9_.-]{{1,64}})"
                )
            if len(_KNOWN_NAMES) < _KNOWN_NAMES_MAX:
                _KNOWN_NAMES.add(name)
        kind = type(value)  # exact types: bool is an int subclass and must not pass
        if kind is float:
            if value - value != 0.0:  # NaN or ±inf (parse_constant rejects the literals,
                raise InvalidPayload(f"metrics.{name}", "is not a finite number")  # 1e400 not)
        elif kind is int:
            if not -_INT_EXACT < value < _INT_EXACT:
                raise InvalidPayload(f"metrics.{name}", "is not a finite number (too large)")
            raw[name] = float(value)  # replacing a value while iterating is allowed
        else:
            raise InvalidPayload(
                f"metrics.{name}", f"expected a number, got {type(value).__name__}"
            )
    metrics: dict[str, float] = raw  # validated in place: no copy on the hot path
    return Reading(time, seq, metrics)


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 64 or not is_identifier(value):
        raise InvalidPayload(key, "must be an identifier ([A-Za-z0-9_.-]{1,64})")
    return value


def _event(item: object, now: dt.datetime, limits: Limits) -> Event:
    if not isinstance(item, dict):
        raise InvalidPayload("", f"expected an object, got {type(item).__name__}")
    time = parse_time(item.get("ts"), now, limits)
    kind = item.get("kind", item.get("type"))
    if not is_identifier(kind):
        raise InvalidPayload(
            "kind", "required: an identifier such as alarm, service, component_replaced, failure"
        )
    assert isinstance(kind, str)
    detail = {k: v for k, v in item.items() if k not in {"ts", "kind", "type", "code", "component"}}
    _check_detail(detail)
    return Event(time, kind, _text(item, "code"), _text(item, "component"), detail)


_MAX_DETAIL_DEPTH = 32
_MAX_DETAIL_CHARS = 16 * _MAX_TEXT


def _check_detail(detail: object) -> None:
    """Reject what jsonb cannot store (NUL, lone surrogates, infinities) and what is too deep
    or too large to keep, so the database never refuses an accepted event."""
    stack: list[tuple[object, int]] = [(detail, 0)]
    chars = 0
    while stack:
        value, depth = stack.pop()
        if depth > _MAX_DETAIL_DEPTH:
            raise InvalidPayload("detail", f"nested deeper than {_MAX_DETAIL_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidPayload("detail", "is not a finite number")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**300:
            raise InvalidPayload("detail", "number out of range")
        texts: list[str] = [value] if isinstance(value, str) else []
        if isinstance(value, dict):
            texts = list(value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        for text in texts:
            chars += len(text)
            if "\x00" in text:
                raise InvalidPayload("detail", "text contains a NUL character")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidPayload("detail", "text is not valid Unicode") from None
        if chars > _MAX_DETAIL_CHARS:
            raise InvalidPayload(
                "detail", f"extra fields longer than {_MAX_DETAIL_CHARS} characters"
            )


def decode_telemetry(payload: bytes, now: dt.datetime, limits: Limits) -> Decoded:
    """Decode a telemetry payload; never raises for bad content (it is in ``rejections``)."""
    readings: list[Reading] = []
    rejections: list[str] = []
    try:
        items = parse_json(payload, limits)
    except InvalidPayload as exc:
        return Decoded([], [], [exc.reason])
    for index, item in enumerate(items):
        try:
            readings.append(_reading(item, now, limits))
        except InvalidPayload as exc:
            rejections.append(_where(index, len(items), exc))
    return Decoded(readings, [], rejections)


def decode_events(payload: bytes, now: dt.datetime, limits: Limits) -> Decoded:
    """Decode an event payload; never raises for bad content (it is in ``rejections``)."""
    events: list[Event] = []
    rejections: list[str] = []
    try:
        items = parse_json(payload, limits)
    except InvalidPayload as exc:
        return Decoded([], [], [exc.reason])
    for index, item in enumerate(items):
        try:
            events.append(_event(item, now, limits))
        except InvalidPayload as exc:
            rejections.append(_where(index, len(items), exc))
    return Decoded([], events, rejections)


def _where(index: int, count: int, exc: InvalidPayload) -> str:
    return exc.reason if count == 1 else f"item {index}: {exc.reason}"
