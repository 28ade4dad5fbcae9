"""The payload and topic codecs, pure: hand-written cases and hypothesis properties.

Every test passes a fixed ``now``, so the time window (``max_future_s``, ``max_past_days``) is the
same on every run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidPayload
from core.ids import is_identifier
from ingest.decode import Decoded, Limits, Reading, decode_events, decode_telemetry, parse_time
from ingest.topics import CHANNELS, Topic, device_topic, parse_topic

UTC = dt.UTC
NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LIMITS = Limits()
PREFIX = "basewatch/v1"
EARLIEST = NOW - dt.timedelta(days=LIMITS.max_past_days)
LATEST = NOW + dt.timedelta(seconds=LIMITS.max_future_s)

IDENT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
FAST = settings(max_examples=120, deadline=None)


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def telemetry(document: object, limits: Limits = LIMITS) -> Decoded:
    return decode_telemetry(encode(document), NOW, limits)


def events(document: object, limits: Limits = LIMITS) -> Decoded:
    return decode_events(encode(document), NOW, limits)


def one_rejection(decoded: Decoded) -> str:
    assert decoded.readings == []
    assert decoded.events == []
    assert len(decoded.rejections) == 1, decoded.rejections
    return decoded.rejections[0]


def ts_rejection(value: object) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as caught:
        parse_time(value, NOW, LIMITS)
    assert caught.value.field == "ts"
    assert caught.value.reason.startswith("ts: ")
    return caught.value


# -- valid payloads -------------------------------------------------------------------------


def test_single_object_is_one_reading() -> None:
    decoded = telemetry({"ts": NOW_MS, "seq": 7, "metrics": {"load_pct": 81.5, "starts": 3}})
    assert decoded.rejections == []
    assert decoded.events == []
    assert decoded.readings == [Reading(NOW, 7, {"load_pct": 81.5, "starts": 3.0})]
    assert isinstance(decoded.readings[0].metrics["starts"], float)


def test_list_is_a_batch_of_readings_in_order() -> None:
    batch = [
        {"ts": "2026-01-05T08:00:00Z", "metrics": {"load_pct": 80}},
        {"ts": "2026-01-05T10:01:00+02:00", "seq": None, "metrics": {"load_pct": 79.25}},
        {"ts": NOW_MS - 1000, "seq": 3, "metrics": {"pressure_bar": -0.5}},
    ]
    decoded = telemetry(batch)
    assert decoded.rejections == []
    assert decoded.readings == [
        Reading(dt.datetime(2026, 1, 5, 8, 0, tzinfo=UTC), None, {"load_pct": 80.0}),
        Reading(dt.datetime(2026, 1, 5, 8, 1, tzinfo=UTC), None, {"load_pct": 79.25}),
        Reading(NOW - dt.timedelta(seconds=1), 3, {"pressure_bar": -0.5}),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-05T08:00:00Z", dt.datetime(2026, 1, 5, 8, 0, tzinfo=UTC)),
        ("2026-01-05T08:00:00.123456Z", dt.datetime(2026, 1, 5, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2026-01-05T08:00:00+00:00", dt.datetime(2026, 1, 5, 8, 0, tzinfo=UTC)),
        ("2026-01-05T10:30:00+02:30", dt.datetime(2026, 1, 5, 8, 0, tzinfo=UTC)),
        ("2026-01-04T23:00:00-09:00", dt.datetime(2026, 1, 5, 8, 0, tzinfo=UTC)),
        ("2026-01-05T08:00:00.5-00:00", dt.datetime(2026, 1, 5, 8, 0, 0, 500000, tzinfo=UTC)),
        (NOW_MS, NOW),
        (NOW_MS - 1, NOW - dt.timedelta(milliseconds=1)),
        (float(NOW_MS), NOW),
        (NOW_MS - 0.5, NOW - dt.timedelta(microseconds=500)),
    ],
)
def test_ts_rfc3339_and_epoch_ms_are_converted_to_utc(value: object, expected: dt.datetime) -> None:
    time = parse_time(value, NOW, LIMITS)
    assert time == expected
    assert time.utcoffset() == dt.timedelta(0)
    assert time.tzinfo == UTC


def test_ts_window_edges_are_inclusive() -> None:
    assert parse_time(LATEST.isoformat(), NOW, LIMITS) == LATEST
    assert parse_time(EARLIEST.isoformat(), NOW, LIMITS) == EARLIEST
    earliest_ms = int(EARLIEST.timestamp() * 1000)
    assert parse_time(earliest_ms, NOW, LIMITS) == EARLIEST


# -- ts rejected --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-05T08:00:00",  # naive
        "2026-01-05 08:00:00",  # naive, space separated
        "2026-01-05",  # date only
        "08:00:00Z",  # time only
        "",
        "yesterday",
        "2026-13-05T08:00:00Z",
        "2026-01-05T25:00:00Z",
        "2026-01-05T23:59:60Z",  # leap seconds are not representable
        "2026-01-05T08:00:00+24:00",
        "1767600000000",  # epoch ms as a string
        "2026-01-05T08:00:00Z" + " " * 60,  # too long
        "x'; DROP TABLE telemetry;--",
        "\x00",
        True,
        False,
        None,
        [NOW_MS],
        {"ms": NOW_MS},
        -1,
        -1.5,
        253_402_300_800_000,  # after 9999-12-31
        math.inf,
        -math.inf,
        math.nan,
    ],
)
def test_bad_ts_is_rejected_naming_ts(value: object) -> None:
    ts_rejection(value)


def test_ts_required_in_payload() -> None:
    assert one_rejection(telemetry({"metrics": {"a": 1}})) == "ts: required"
    assert one_rejection(telemetry({"ts": None, "metrics": {"a": 1}})) == "ts: required"
    reason = one_rejection(telemetry({"ts": True, "metrics": {"a": 1}}))
    assert reason.startswith("ts: ")
    assert "bool" in reason


def test_naive_and_date_only_reasons_ask_for_an_offset() -> None:
    assert "UTC offset" in ts_rejection("2026-01-05T08:00:00").reason
    assert "UTC offset" in ts_rejection("2026-01-05").reason


def test_far_future_is_rejected() -> None:
    too_late = LATEST + dt.timedelta(milliseconds=1)
    reason = ts_rejection(too_late.isoformat()).reason
    assert f"more than {LIMITS.max_future_s} s in the future" in reason
    ts_rejection(int(too_late.timestamp() * 1000))
    ts_rejection("9999-12-31T23:59:59Z")


def test_far_past_is_rejected_with_the_epoch_seconds_hint() -> None:
    too_early = EARLIEST - dt.timedelta(milliseconds=1)
    reason = ts_rejection(too_early.isoformat()).reason
    assert f"more than {LIMITS.max_past_days} days in the past" in reason
    assert "epoch seconds" not in reason
    # a device sending epoch seconds: 1970-01-21 as milliseconds
    reason = ts_rejection(NOW_MS // 1000).reason
    assert "epoch seconds instead of milliseconds?" in reason
    assert "epoch seconds" in ts_rejection(float(NOW_MS // 1000)).reason
    assert "epoch seconds" in ts_rejection(0).reason
    assert "epoch seconds" not in ts_rejection("1970-01-01T00:00:00Z").reason


def test_limits_of_the_window_come_from_limits() -> None:
    strict = Limits(max_future_s=0, max_past_days=1)
    assert parse_time(NOW_MS, NOW, strict) == NOW
    with pytest.raises(InvalidPayload, match="0 s in the future"):
        parse_time(NOW_MS + 1, NOW, strict)
    with pytest.raises(InvalidPayload, match="1 days in the past"):
        parse_time(NOW_MS - 86_400_001, NOW, strict)


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:30:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        10**400,  # an integer too large for a float
        -(10**400),
    ],
    ids=["year-0", "year-10000", "int-1e400", "int-minus-1e400"],
)
def test_ts_out_of_datetime_range_is_rejected_not_raised(value: object) -> None:
    ts_rejection(value)
    reason = one_rejection(telemetry({"ts": value, "metrics": {"a": 1}}))
    assert reason.startswith("ts: ")
    event = one_rejection(events({"ts": value, "kind": "alarm"}))
    assert event.startswith("ts: ")


# -- metrics rejected -----------------------------------------------------------------------


def reading_with(metrics: object) -> dict[str, Any]:
    return {"ts": NOW_MS, "metrics": metrics}


@pytest.mark.parametrize("metrics", [None, {}, [], [1, 2], "load_pct", 1, True])
def test_metrics_must_be_a_non_empty_object(metrics: object) -> None:
    document = reading_with(metrics)
    if metrics is None:
        del document["metrics"]
    assert one_rejection(telemetry(document)).startswith("metrics: ")


@pytest.mark.parametrize(
    "name",
    [
        "x'; DROP TABLE telemetry;--",
        'a"b',
        "load pct",
        "",
        "a" * 65,
        "température",
        "载荷",
        "load_pct\n",
        "a\x00b",
        "a/b",
        "$where",
        "metrics->>'a'",
    ],
)
def test_metric_names_must_be_identifiers(name: str) -> None:
    reason = one_rejection(telemetry(reading_with({"ok": 1, name: 2})))
    assert reason.startswith("metrics: name ")
    assert "is not an identifier" in reason
    assert "\x00" not in reason


def test_metric_name_of_64_characters_is_accepted() -> None:
    name = "m" * 64
    assert telemetry(reading_with({name: 1})).readings[0].metrics == {name: 1.0}


@pytest.mark.parametrize(
    "value", [True, False, None, "1.5", "", [1], {"v": 1}, {"nested": {"deep": 1}}]
)
def test_metric_values_must_be_numbers(value: object) -> None:
    reason = one_rejection(telemetry(reading_with({"load_pct": value})))
    assert reason.startswith("metrics.load_pct: expected a number")


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", str(2**53), str(10**30)]
)
def test_non_finite_and_huge_numbers_are_rejected(literal: str) -> None:
    payload = f'{{"ts": {NOW_MS}, "metrics": {{"load_pct": {literal}}}}}'.encode()
    reason = one_rejection(decode_telemetry(payload, NOW, LIMITS))
    assert "not a finite number" in reason


def test_largest_exact_integers_are_accepted() -> None:
    for value in (2**53 - 1, -(2**53) + 1, 0, -0.0, 1e308, 5e-324):
        assert telemetry(reading_with({"v": value})).readings[0].metrics == {"v": float(value)}


def test_too_many_metrics_are_rejected() -> None:
    limits = Limits(max_metrics=3)
    assert telemetry(reading_with({f"m{i}": i for i in range(3)}), limits).readings
    reason = one_rejection(telemetry(reading_with({f"m{i}": i for i in range(4)}), limits))
    assert reason == "metrics: 4 metrics exceed the limit of 3"


@pytest.mark.parametrize("seq", ["7", 7.0, 7.5, True, False, [7], {"n": 7}, 2**63, -(2**64)])
def test_seq_must_be_an_integer(seq: object) -> None:
    reason = one_rejection(telemetry({"ts": NOW_MS, "seq": seq, "metrics": {"a": 1}}))
    assert reason == "seq: must be an integer"


def test_seq_bigint_range_is_accepted() -> None:
    for seq in (0, -1, 2**63 - 1):
        assert telemetry({"ts": NOW_MS, "seq": seq, "metrics": {"a": 1}}).readings[0].seq == seq


# -- whole payload rejected -----------------------------------------------------------------


def test_payload_over_max_bytes_is_rejected_before_parsing() -> None:
    limits = Limits(max_payload_bytes=100)
    fits = encode(reading_with({"a": 1})).ljust(100)
    assert decode_telemetry(fits, NOW, limits).readings
    reason = one_rejection(decode_telemetry(fits + b" ", NOW, limits))
    assert reason == "payload: 101 bytes exceeds the limit of 100"
    reason = one_rejection(decode_events(b"[" * 101, NOW, limits))
    assert "exceeds the limit of 100" in reason


def test_list_over_max_items_is_rejected_whole() -> None:
    limits = Limits(max_items=3)
    assert len(telemetry([reading_with({"a": i}) for i in range(3)], limits).readings) == 3
    reason = one_rejection(telemetry([reading_with({"a": i}) for i in range(4)], limits))
    assert reason == "payload: list of 4 items exceeds the limit of 3"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"[]", "payload: empty list"),
        (b"", "payload: invalid JSON"),
        (b"   ", "payload: invalid JSON"),
        (b"1", "payload: expected an object or a list, got int"),
        (b"1.5", "payload: expected an object or a list, got float"),
        (b'"ts"', "payload: expected an object or a list, got str"),
        (b"null", "payload: expected an object or a list, got NoneType"),
        (b"true", "payload: expected an object or a list, got bool"),
        (b"NaN", "payload: invalid JSON"),
        (b"{", "payload: invalid JSON"),
        (b"{}{}", "payload: invalid JSON"),
        (b'{"ts": 1,}', "payload: invalid JSON"),
        (b"{'ts': 1}", "payload: invalid JSON"),
        (b'{"ts": "\xff\xfe"}', "payload: invalid JSON"),  # invalid UTF-8
        (b"\xc3\x28", "payload: invalid JSON"),
        (b"\x00\x00\x00\x00", "payload: invalid JSON"),
        (b"[" * 100_000, "payload: invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "payload: invalid JSON"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "payload: invalid JSON"),
        (b"1" * 5000, "payload: invalid JSON"),  # more digits than int() converts
    ],
)
def test_unparseable_payloads_are_one_rejection(payload: bytes, expected: str) -> None:
    for decode in (decode_telemetry, decode_events):
        reason = one_rejection(decode(payload, NOW, LIMITS))
        assert reason.startswith(expected), reason
        assert len(reason) < 300


def test_a_bad_item_in_a_list_keeps_the_valid_ones() -> None:
    batch = [
        reading_with({"a": 1}),
        {"metrics": {"a": 2}},
        reading_with({"a": "3"}),
        42,
        {"ts": NOW_MS - 2000, "metrics": {"a": 4}},
    ]
    decoded = telemetry(batch)
    assert decoded.readings == [
        Reading(NOW, None, {"a": 1.0}),
        Reading(NOW - dt.timedelta(seconds=2), None, {"a": 4.0}),
    ]
    assert decoded.rejections == [
        "item 1: ts: required",
        "item 2: metrics.a: expected a number, got str",
        "item 3: expected an object, got int",
    ]


def test_a_single_bad_object_has_no_item_number() -> None:
    assert one_rejection(telemetry({"metrics": {"a": 1}})) == "ts: required"
    assert one_rejection(telemetry([{"metrics": {"a": 1}}])) == "ts: required"


# -- events ---------------------------------------------------------------------------------


def test_event_with_kind_code_component_and_detail() -> None:
    decoded = events(
        {
            "ts": "2026-01-05T09:00:00+01:00",
            "kind": "component_replaced",
            "code": "E-12",
            "component": "oil_filter",
            "service_order": "SO-1",
            "hours": 4000.5,
        }
    )
    assert decoded.rejections == []
    assert decoded.readings == []
    (event,) = decoded.events
    assert event.time == dt.datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    assert (event.kind, event.code, event.component) == ("component_replaced", "E-12", "oil_filter")
    assert event.detail == {"service_order": "SO-1", "hours": 4000.5}


def test_event_type_is_accepted_for_kind() -> None:
    (event,) = events({"ts": NOW_MS, "type": "alarm"}).events
    assert (event.kind, event.code, event.component, event.detail) == ("alarm", "", "", {})


@pytest.mark.parametrize(
    "document",
    [
        {"ts": NOW_MS},
        {"ts": NOW_MS, "code": "E1", "metrics": {"a": 1}},
        {"ts": NOW_MS, "kind": None},
        {"ts": NOW_MS, "kind": ""},
        {"ts": NOW_MS, "kind": 3},
        {"ts": NOW_MS, "kind": "x'; DROP TABLE asset_events;--"},
        {"ts": NOW_MS, "kind": "k" * 65},
    ],
)
def test_event_needs_an_identifier_kind(document: dict[str, Any]) -> None:
    assert one_rejection(events(document)).startswith("kind: required")


@pytest.mark.parametrize("field", ["code", "component"])
@pytest.mark.parametrize("value", [3, "", "a b", "x'; --", "c" * 65, ["a"]])
def test_event_code_and_component_must_be_identifiers(field: str, value: object) -> None:
    reason = one_rejection(events({"ts": NOW_MS, "kind": "alarm", field: value}))
    assert reason.startswith(f"{field}: must be an identifier")


@pytest.mark.parametrize(
    "detail",
    [
        {"note": "a\u0000b"},
        {"a\u0000": 1},
        {"nested": {"list": ["ok", "\u0000"]}},
    ],
)
def test_event_detail_with_nul_is_rejected(detail: dict[str, Any]) -> None:
    reason = one_rejection(events({"ts": NOW_MS, "kind": "alarm", **detail}))
    assert reason == "detail: text contains a NUL character"


def test_event_detail_over_the_size_limit_is_rejected() -> None:
    reason = one_rejection(events({"ts": NOW_MS, "kind": "alarm", "note": "x" * 20_000}))
    assert reason.startswith("detail: extra fields longer than")


def test_event_detail_may_contain_a_backslash_u0000_text() -> None:
    # six characters, backslash u 0 0 0 0: no NUL character, PostgreSQL stores it
    (event,) = events({"ts": NOW_MS, "kind": "alarm", "path": "C:\\u0000\\log"}).events
    assert event.detail == {"path": "C:\\u0000\\log"}


@pytest.mark.parametrize("literal", ["1e400", "-1e400", '"\\ud800"', '{"k": "\\udfff"}'])
def test_event_detail_that_jsonb_cannot_store_is_rejected(literal: str) -> None:
    # infinity and lone surrogates decode in Python but PostgreSQL's jsonb refuses them
    payload = f'{{"ts": {NOW_MS}, "kind": "alarm", "x": {literal}}}'.encode()
    reason = one_rejection(decode_events(payload, NOW, LIMITS))
    assert reason.startswith("detail: ")


def _on_a_fresh_thread(call: Callable[[], Decoded]) -> Decoded:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def _frames_deeper(frames: int, call: Callable[[], Decoded]) -> Decoded:
    return call() if frames == 0 else _frames_deeper(frames - 1, call)


@pytest.mark.parametrize("depth", [10, 100, 500, 700, 900, 950, 990, 5000])
def test_event_acceptance_does_not_depend_on_the_callers_stack(depth: int) -> None:
    """An event accepted on a shallow stack must be accepted (and encodable) anywhere: the
    ingester decodes and writes (json.dumps into jsonb) from its loop, and
    ``deadletters replay`` decodes and writes at other depths again."""
    payload = b'{"ts": %d, "kind": "alarm", "x": %s}' % (NOW_MS, b"[" * depth + b"]" * depth)

    def decode() -> Decoded:
        return decode_events(payload, NOW, LIMITS)

    shallow = _on_a_fresh_thread(decode)
    deep = _frames_deeper(300, decode)
    assert (len(shallow.events), len(shallow.rejections)) == (
        len(deep.events),
        len(deep.rejections),
    )


def test_event_list_keeps_valid_events() -> None:
    decoded = events([{"ts": NOW_MS, "kind": "alarm"}, {"ts": NOW_MS}, "x"])
    assert [e.kind for e in decoded.events] == ["alarm"]
    assert decoded.rejections == [
        "item 1: kind: required: an identifier such as alarm, service, component_replaced, failure",
        "item 2: expected an object, got str",
    ]


# -- topics ---------------------------------------------------------------------------------


def test_topic_is_parsed() -> None:
    assert parse_topic(f"{PREFIX}/acme/c-1.a_b/telemetry", PREFIX) == Topic(
        "acme", "c-1.a_b", "telemetry"
    )
    assert parse_topic(f"{PREFIX}/acme/c1/event", PREFIX).channel == "event"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        PREFIX,
        f"{PREFIX}/",
        "other/v1/acme/c1/telemetry",
        f"{PREFIX}/acme/c1",
        f"{PREFIX}/acme/c1/telemetry/extra",
        f"{PREFIX}//c1/telemetry",
        f"{PREFIX}/acme//telemetry",
        f"{PREFIX}/acme/c1/",
        f"{PREFIX}/acme/c1/Telemetry",
        f"{PREFIX}/acme/c1/events",
        f"{PREFIX}/x'; DROP TABLE telemetry;--/c1/telemetry",
        f"{PREFIX}/acme/c1' OR '1'='1/telemetry",
        f"{PREFIX}/acme/{'a' * 65}/telemetry",
        f"{PREFIX}/acmé/c1/telemetry",
        f"{PREFIX}/acme/c1\n/telemetry",
        f"{PREFIX}/+/c1/telemetry",
        f"{PREFIX}/acme/#",
    ],
)
def test_bad_topics_raise_invalid_payload_on_topic(topic: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        parse_topic(topic, PREFIX)
    assert caught.value.field == "topic"


# -- properties -----------------------------------------------------------------------------

identifiers = st.text(IDENT_ALPHABET, min_size=1, max_size=64)
finite_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
)
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
window_times = st.datetimes(
    min_value=EARLIEST.replace(tzinfo=None),
    max_value=LATEST.replace(tzinfo=None),
    timezones=st.just(UTC),
)


@st.composite
def encoded_times(draw: st.DrawFn) -> tuple[object, dt.datetime]:
    """A time in the window and one of its encodings in a payload."""
    time = draw(window_times)
    how = draw(st.sampled_from(["ms", "ms_float", "z", "offset"]))
    if how in ("ms", "ms_float"):
        time = time.replace(microsecond=time.microsecond // 1000 * 1000)
        ms = (time - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(milliseconds=1)
        return (ms if how == "ms" else float(ms)), time
    if how == "z":
        return time.isoformat().replace("+00:00", "Z"), time
    local = time.astimezone(draw(offsets))
    return local.isoformat(), time


@st.composite
def valid_readings(draw: st.DrawFn) -> tuple[dict[str, Any], Reading]:
    ts, time = draw(encoded_times())
    seq = draw(st.one_of(st.none(), st.integers(-(2**63) + 1, 2**63 - 1)))
    metrics = draw(st.dictionaries(identifiers, finite_numbers, min_size=1, max_size=15))
    document: dict[str, Any] = {"ts": ts, "metrics": metrics}
    if seq is not None or draw(st.booleans()):
        document["seq"] = seq
    return document, Reading(time, seq, {k: float(v) for k, v in metrics.items()})


@FAST
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    check_decoded_shape(payload)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ts_values = st.one_of(
    json_values,
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.datetimes(timezones=st.one_of(st.none(), offsets)).map(dt.datetime.isoformat),
    st.datetimes(timezones=offsets).map(lambda t: t.isoformat().replace("+00:00", "Z")),
    encoded_times().map(lambda pair: pair[0]),
    # the edges of what datetime and float can hold
    st.integers(min_value=2**1024 - 2**970, max_value=10**400),
    st.datetimes(max_value=dt.datetime(1, 1, 2), timezones=offsets).map(dt.datetime.isoformat),
    st.datetimes(min_value=dt.datetime(9999, 12, 31), timezones=offsets).map(dt.datetime.isoformat),
)
json_items = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "ts": ts_values,
            "seq": st.one_of(st.integers(), json_values),
            "metrics": st.one_of(
                json_values, st.dictionaries(st.text(max_size=70), json_values, max_size=4)
            ),
            "kind": st.one_of(identifiers, json_values),
            "type": st.one_of(identifiers, json_values),
            "code": st.one_of(identifiers, json_values),
            "component": st.one_of(identifiers, json_values),
            "detail": json_values,
        },
    ),
)
json_documents = st.one_of(json_items, st.lists(json_items, max_size=6))


def check_decoded_shape(payload: bytes, limits: Limits = LIMITS) -> None:
    """Both decoders return; every item is a reading/event or a rejection, never both."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, list) and 0 < len(document) <= limits.max_items:
        expected = len(document)
    else:
        expected = 1  # one object, or one rejection for the whole payload
    for decode in (decode_telemetry, decode_events):
        decoded = decode(payload, NOW, limits)
        items = decoded.events if decode is decode_events else decoded.readings
        assert (decoded.events if decode is decode_telemetry else decoded.readings) == []
        assert all(isinstance(r, str) and r for r in decoded.rejections)
        if len(decoded.rejections) == 1 and decoded.rejections[0].startswith("payload: "):
            assert items == []
            continue
        assert len(items) + len(decoded.rejections) == expected
        for reading in decoded.readings:
            assert EARLIEST <= reading.time <= LATEST
            assert reading.metrics
            assert all(is_identifier(k) and math.isfinite(v) for k, v in reading.metrics.items())
        for event in decoded.events:
            assert EARLIEST <= event.time <= LATEST
            assert is_identifier(event.kind)


@FAST
@given(json_documents)
def test_arbitrary_json_documents_never_raise(document: object) -> None:
    check_decoded_shape(json.dumps(document).encode())


@FAST
@given(json_documents)
def test_arbitrary_json_never_raises_with_tight_limits(document: object) -> None:
    check_decoded_shape(json.dumps(document).encode(), Limits(max_items=2, max_metrics=2))


@settings(max_examples=100, deadline=None)
@given(st.lists(valid_readings(), min_size=1, max_size=6), st.booleans())
def test_valid_readings_round_trip(
    generated: list[tuple[dict[str, Any], Reading]], as_object: bool
) -> None:
    documents = [document for document, _ in generated]
    expected = [reading for _, reading in generated]
    payload = documents[0] if as_object and len(documents) == 1 else documents
    decoded = telemetry(payload)
    assert decoded.rejections == []
    assert decoded.readings == expected
    for reading in decoded.readings:
        assert reading.time.tzinfo == UTC


detail_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00\\"), max_size=20)
detail_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**15), 10**15),
        st.floats(allow_nan=False, allow_infinity=False),
        detail_text,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(detail_text, inner, max_size=3)
    ),
    max_leaves=8,
)


@FAST
@given(
    encoded_times(),
    identifiers,
    st.one_of(st.none(), identifiers),
    st.one_of(st.none(), identifiers),
    st.dictionaries(
        detail_text.filter(lambda k: k not in {"ts", "kind", "type", "code", "component"}),
        detail_values,
        max_size=4,
    ),
)
def test_valid_events_round_trip(
    ts_and_time: tuple[object, dt.datetime],
    kind: str,
    code: str | None,
    component: str | None,
    detail: dict[str, Any],
) -> None:
    ts, time = ts_and_time
    document: dict[str, Any] = {"ts": ts, "kind": kind, **detail}
    if code is not None:
        document["code"] = code
    if component is not None:
        document["component"] = component
    decoded = events(document)
    assert decoded.rejections == []
    (event,) = decoded.events
    assert (event.time, event.kind, event.code, event.component) == (
        time,
        kind,
        code or "",
        component or "",
    )
    assert event.detail == detail


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.sampled_from([PREFIX, "p", "a/b/c", ""]))
def test_arbitrary_topics_raise_only_invalid_payload(topic: str, prefix: str) -> None:
    try:
        parsed = parse_topic(topic, prefix)
    except InvalidPayload as exc:
        field = exc.field
    else:
        assert device_topic(prefix, parsed.account_id, parsed.asset_id, parsed.channel) == topic
        return
    assert field == "topic"


topic_levels = st.one_of(
    identifiers,
    st.text(max_size=70),
    st.sampled_from(["", "x'; DROP TABLE telemetry;--", "a b", "+", "#", "telemetry"]),
)


@settings(max_examples=300, deadline=None)
@given(topic_levels, topic_levels, st.one_of(st.sampled_from(CHANNELS), topic_levels))
def test_topics_built_from_any_levels(account: str, asset: str, channel: str) -> None:
    topic = f"{PREFIX}/{account}/{asset}/{channel}"
    valid = is_identifier(account) and is_identifier(asset) and channel in CHANNELS
    if valid:
        assert parse_topic(topic, PREFIX) == Topic(account, asset, channel)
    else:
        with pytest.raises(InvalidPayload):
            parse_topic(topic, PREFIX)


@settings(max_examples=200, deadline=None)
@given(identifiers, identifiers, st.sampled_from(CHANNELS), st.text(max_size=30))
def test_valid_identifiers_round_trip_through_device_topic(
    account: str, asset: str, channel: str, prefix: str
) -> None:
    topic = device_topic(prefix, account, asset, channel)
    assert parse_topic(topic, prefix) == Topic(account, asset, channel)
