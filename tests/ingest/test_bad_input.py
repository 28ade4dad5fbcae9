"""Bad input through the real broker and the real ``basewatch ingest`` process.

One ingester runs for the whole module. Every bad message is followed by a valid sentinel
reading; once the sentinel is stored, the bad message has been handled (one subscriber, one
publisher: the broker keeps their order, and a batch is one transaction), so the test checks that
it is in ``dead_letters`` with a reason and that nothing of it was stored. Bad payloads go to the
registered asset ``bad1``, sentinels to ``a1``: nothing may ever be stored for another asset
(except ``late-1``, registered by the replay test).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from basewatch.localbroker import LocalBroker
from core.ids import is_identifier
from ingest.decode import Limits, decode_events, decode_telemetry
from ingest.messages import decode_message
from ingest.store import BatchWriter
from simulator.publish import Publisher
from tests.fix_ingest import IngesterProcess, count, register, wait_for

UTC = dt.UTC
ACCOUNT, OTHER = "acct", "other"
SENTINEL_ASSET = "a1"  # valid messages only
BAD_ASSET = "bad1"  # registered under ACCOUNT, receives only bad payloads
OTHER_ASSET = "o1"  # registered under OTHER
LATE_ASSET = "late-1"  # dead-lettered as unknown, then registered and replayed
MAX_ITEMS = 100
MAX_BYTES = 65_536
LIMIT_ENV = {
    "BASEWATCH_INGEST_MAX_BATCH_ITEMS": str(MAX_ITEMS),
    "BASEWATCH_INGEST_MAX_PAYLOAD_BYTES": str(MAX_BYTES),
    # every bad message here is checked whole and one by one (the caps: tests/ingest/test_memory)
    "BASEWATCH_INGEST_DEAD_LETTER_PAYLOAD_BYTES": str(2 * MAX_BYTES),
    "BASEWATCH_INGEST_DEAD_LETTERS_PER_MINUTE": "0",
}
LIMITS = Limits(max_items=MAX_ITEMS, max_payload_bytes=MAX_BYTES)
# an hour ago, whole seconds: inside the accepted window for the whole run
BASE = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1)
BASE_MS = int(BASE.timestamp() * 1000)
DEAD_QUERY = (
    "SELECT count(*) FROM dead_letters"
    " WHERE topic = %s AND payload_sha256 = %s AND resolved_at IS NULL"
)
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Rig:
    db_url: str
    prefix: str
    pub: Publisher
    ingester: IngesterProcess
    log_path: Path
    sentinels: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def topic(self, account: str, asset: str, channel: str = "telemetry") -> str:
        return f"{self.prefix}/{account}/{asset}/{channel}"

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-3000:]

    def assert_alive(self) -> None:
        process = self.ingester.process
        assert process is not None
        assert process.poll() is None, f"the ingester exited:\n{self.log_tail()}"

    def settle(self) -> dt.datetime:
        """Publish a valid sentinel reading and wait until it is stored."""
        at = BASE + dt.timedelta(seconds=next(self.sentinels))
        ms = int(at.timestamp() * 1000)
        payload = json.dumps({"ts": ms, "metrics": {"load_pct": 50.0}}).encode()
        self.pub.publish(self.topic(ACCOUNT, SENTINEL_ASSET), payload)
        assert self.pub.wait_all_acked(30)
        query = "SELECT count(*) FROM telemetry WHERE asset_id = %s AND time = %s"
        deadline = time.monotonic() + 20
        while count(self.db_url, query, (SENTINEL_ASSET, at)) < 1:
            self.assert_alive()
            assert time.monotonic() < deadline, f"sentinel {at} not stored:\n{self.log_tail()}"
            time.sleep(0.05)
        return at

    def dead_letters(self, topic: str, payload: bytes) -> list[tuple[str, str, bytes]]:
        """(source, reason, payload) of the unresolved dead letters of this message."""
        sha = hashlib.sha256(payload).digest()
        wait_for(self.db_url, DEAD_QUERY, 1, timeout_s=3, params=(topic, sha))
        with psycopg.connect(self.db_url) as conn:
            rows = conn.execute(
                "SELECT source, reason, payload FROM dead_letters"
                " WHERE topic = %s AND payload_sha256 = %s AND resolved_at IS NULL",
                (topic, sha),
            ).fetchall()
        return [(str(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def assert_dead_lettered(self, topic: str, payload: bytes) -> str:
        """One unresolved dead letter with a reason; return the reason."""
        rows = self.dead_letters(topic, payload)
        assert len(rows) == 1, (topic, payload[:200], rows, self.log_tail())
        source, reason, stored = rows[0]
        assert source == "mqtt"
        assert stored == payload
        assert reason.strip(), (topic, payload[:200])
        return reason

    def assert_nothing_stored_elsewhere(self) -> None:
        others = "asset_id NOT IN (%s, %s)"
        params = (SENTINEL_ASSET, LATE_ASSET)
        assert count(self.db_url, f"SELECT count(*) FROM telemetry WHERE {others}", params) == 0
        assert count(self.db_url, f"SELECT count(*) FROM asset_events WHERE {others}", params) == 0

    def check_bad(self, topic: str, payload: bytes) -> str:
        self.pub.publish(topic, payload)
        self.settle()
        reason = self.assert_dead_lettered(topic, payload)
        self.assert_nothing_stored_elsewhere()
        return reason


@pytest.fixture(scope="module")
def rig(
    db_url: str, broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    prefix = f"bwtest/{uuid.uuid4().hex[:10]}"
    register(
        db_url,
        [(ACCOUNT, SENTINEL_ASSET), (ACCOUNT, BAD_ASSET), (OTHER, OTHER_ASSET)],
    )
    log_path = tmp_path_factory.mktemp("bad_input") / "ingest.log"
    ingester = IngesterProcess(db_url, broker, prefix, extra_env=LIMIT_ENV, log_path=log_path)
    with ingester, Publisher(broker.host, broker.port) as pub:
        yield Rig(db_url, prefix, pub, ingester, log_path)


def reading(offset_s: float = 0, **metrics: float) -> dict[str, Any]:
    return {"ts": BASE_MS - int(offset_s * 1000), "metrics": metrics or {"load_pct": 1.0}}


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def run_cli(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        BASEWATCH_DATABASE_URL=rig.db_url,
        BASEWATCH_TOPIC_PREFIX=rig.prefix,
        **LIMIT_ENV,
    )
    return subprocess.run(
        [sys.executable, "-m", "basewatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- hand-written cases ---------------------------------------------------------------------

NUL_DETAIL = b'{"ts": %d, "kind": "alarm", "note": "a\\u0000b"}' % BASE_MS


def fixed_cases(rig: Rig) -> list[tuple[str, str, bytes, str]]:
    """(name, topic, payload, a part of the expected reason)."""
    bad = rig.topic(ACCOUNT, BAD_ASSET)
    bad_event = rig.topic(ACCOUNT, BAD_ASSET, "event")
    valid = encode(reading(60))
    ms = BASE_MS
    many = [reading(i) for i in range(MAX_ITEMS + 1)]
    return [
        ("garbage bytes", bad, b"\xff\xfe\x00\x01garbage\x80", "invalid JSON"),
        ("empty payload", bad, b"", "invalid JSON"),
        ("truncated", bad, b'{"ts": 1', "invalid JSON"),
        ("scalar", bad, b"42", "expected an object or a list"),
        ("empty list", bad, b"[]", "empty list"),
        ("deep nesting", bad, b"[" * 50_000, "invalid JSON"),
        ("naive ts", bad, encode({"ts": "2026-01-05T08:00:00", "metrics": {"a": 1}}), "ts: "),
        ("date-only ts", bad, encode({"ts": "2026-01-05", "metrics": {"a": 1}}), "ts: "),
        ("bool ts", bad, encode({"ts": True, "metrics": {"a": 1}}), "ts: "),
        ("epoch seconds", bad, encode({"ts": ms // 1000, "metrics": {"a": 1}}), "epoch seconds"),
        (
            "year 0 in UTC",
            bad,
            encode({"ts": "0001-01-01T00:30:00+01:00", "metrics": {"a": 1}}),
            "ts: ",
        ),
        ("huge int ts", bad, b'{"ts": 1%s, "metrics": {"a": 1}}' % (b"0" * 400), "ts: "),
        (
            "far future",
            bad,
            encode({"ts": int(time.time() * 1000) + 86_400_000, "metrics": {"a": 1}}),
            "in the future",
        ),
        ("metrics list", bad, encode({"ts": ms, "metrics": [1, 2]}), "metrics: "),
        ("string value", bad, encode({"ts": ms, "metrics": {"a": "1"}}), "metrics.a: "),
        ("bool value", bad, encode({"ts": ms, "metrics": {"a": True}}), "metrics.a: "),
        ("null value", bad, encode({"ts": ms, "metrics": {"a": None}}), "metrics.a: "),
        ("nested value", bad, encode({"ts": ms, "metrics": {"a": {"b": 1}}}), "metrics.a: "),
        (
            "sql metric name",
            bad,
            encode({"ts": ms, "metrics": {"x'; DROP TABLE telemetry;--": 1}}),
            "is not an identifier",
        ),
        ("NaN", bad, b'{"ts": %d, "metrics": {"a": NaN}}' % ms, "not a finite number"),
        ("Infinity", bad, b'{"ts": %d, "metrics": {"a": Infinity}}' % ms, "not a finite number"),
        ("-Infinity", bad, b'{"ts": %d, "metrics": {"a": -Infinity}}' % ms, "not a finite number"),
        ("1e400", bad, b'{"ts": %d, "metrics": {"a": 1e400}}' % ms, "not a finite number"),
        ("huge int", bad, b'{"ts": %d, "metrics": {"a": %d}}' % (ms, 10**30), "finite"),
        ("seq string", bad, encode({"ts": ms, "seq": "1", "metrics": {"a": 1}}), "seq: "),
        ("seq bool", bad, encode({"ts": ms, "seq": True, "metrics": {"a": 1}}), "seq: "),
        ("too many items", bad, encode(many), f"exceeds the limit of {MAX_ITEMS}"),
        (
            "too many bytes",
            bad,
            encode(reading(1)) + b" " * MAX_BYTES,
            f"exceeds the limit of {MAX_BYTES}",
        ),
        ("all items bad", bad, encode([{"ts": ms}, 7, {"metrics": {}}]), "item 2: "),
        ("event without kind", bad_event, encode({"ts": ms, "code": "E1"}), "kind: "),
        ("telemetry on event", bad_event, encode(reading(2)), "kind: "),
        ("NUL in event detail", bad_event, NUL_DETAIL, "NUL"),
        ("NUL in detail key", bad_event, b'{"ts": %d, "kind": "a", "\\u0000": 1}' % ms, "NUL"),
        (
            "inf in event detail",
            bad_event,
            b'{"ts": %d, "kind": "alarm", "x": 1e400}' % ms,
            "",
        ),
        (
            "lone surrogate in event detail",
            bad_event,
            b'{"ts": %d, "kind": "alarm", "x": "\\ud800"}' % ms,
            "",
        ),
        ("sql event code", bad_event, encode({"ts": ms, "kind": "a", "code": "1' --"}), "code"),
        ("unknown asset", rig.topic(ACCOUNT, "ghost"), valid, "unknown asset 'ghost'"),
        (
            "cross-account asset",
            rig.topic(OTHER, BAD_ASSET),
            valid,
            "belongs to account 'acct'",
        ),
        (
            "cross-account other way",
            rig.topic(ACCOUNT, OTHER_ASSET),
            valid,
            "belongs to account 'other'",
        ),
        (
            "sql asset level",
            rig.topic(ACCOUNT, "x'; DROP TABLE telemetry;--"),
            valid,
            "asset id is not an identifier",
        ),
        (
            "sql account level",
            rig.topic("acct' OR '1'='1", BAD_ASSET),
            valid,
            "account id is not an identifier",
        ),
        ("empty level", rig.topic("", BAD_ASSET), valid, "account id is not an identifier"),
        ("unicode level", rig.topic(ACCOUNT, "kompressör"), valid, "asset id"),
        ("long level", rig.topic(ACCOUNT, "a" * 65), valid, "asset id"),
    ]


def test_fixed_bad_messages_are_dead_lettered_and_the_stream_goes_on(rig: Rig) -> None:
    cases = fixed_cases(rig)
    for _, topic, payload, _ in cases:
        rig.pub.publish(topic, payload)
    rig.settle()
    for name, topic, payload, expected in cases:
        reason = rig.assert_dead_lettered(topic, payload)
        assert expected in reason, (name, reason)
    rig.assert_nothing_stored_elsewhere()
    rig.assert_alive()
    # the SQL-looking names did nothing to the schema
    tables = "('telemetry', 'asset_events', 'dead_letters', 'assets', 'accounts')"
    assert count(rig.db_url, f"SELECT count(*) FROM pg_tables WHERE tablename IN {tables}") == 5
    assert count(rig.db_url, "SELECT count(*) FROM assets") == 3


def test_redelivered_bad_payload_has_one_unresolved_dead_letter(rig: Rig) -> None:
    topic = rig.topic(ACCOUNT, BAD_ASSET)
    payload = encode({"ts": BASE_MS, "metrics": {"load_pct": "redelivered"}})
    rig.pub.publish(topic, payload)
    rig.pub.publish(topic, payload)  # most likely in the same batch
    rig.settle()
    rig.pub.publish(topic, payload)  # in a later batch
    rig.settle()
    rig.assert_dead_lettered(topic, payload)
    sha = hashlib.sha256(payload).digest()
    query = "SELECT count(*) FROM dead_letters WHERE topic = %s AND payload_sha256 = %s"
    assert count(rig.db_url, query, (topic, sha)) == 1
    # the same payload on another topic is another dead letter
    other = rig.topic(ACCOUNT, "ghost-redelivered")
    rig.pub.publish(other, payload)
    rig.settle()
    rig.assert_dead_lettered(other, payload)


# -- generated cases ------------------------------------------------------------------------


def _topic_safe(char: str) -> bool:
    """What Mosquitto accepts in a topic level (it drops a client that sends other text)."""
    code = ord(char)
    return not (0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE)


topic_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="/+#").filter(
        _topic_safe
    ),
    max_size=70,
)
identifiers = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=50
)
sql_like = st.sampled_from(
    [
        "x'; DROP TABLE telemetry;--",
        "1 OR 1=1",
        "acct' OR '1'='1",
        'a"; DELETE FROM assets; --',
        "$(reboot)",
        "..\\..\\etc\\passwd",
        "%s%s%n",
        "",
        " ",
        "\\",
    ]
)
now_ms = int(time.time() * 1000)
bad_ts = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=25),
    st.datetimes().map(dt.datetime.isoformat),  # naive
    st.dates().map(dt.date.isoformat),
    st.integers(min_value=now_ms + 3_600_000, max_value=now_ms + 10 * 365 * 86_400_000),
    st.integers(min_value=1_000_000_000, max_value=2_000_000_000),  # epoch seconds
    st.integers(max_value=-1),
    st.lists(st.integers(), max_size=2),
)
json_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.text(max_size=10), st.integers()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
bad_metric_values = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.integers(min_value=2**53),
)
bad_metrics = st.one_of(
    json_junk.filter(lambda m: not isinstance(m, dict) or not m),
    st.dictionaries(
        st.one_of(topic_text, sql_like).filter(lambda k: not is_identifier(k)),
        st.floats(allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=3,
    ),
    st.dictionaries(identifiers, bad_metric_values, min_size=1, max_size=3),
)
good_metrics = st.dictionaries(identifiers, st.floats(-1e6, 1e6), min_size=1, max_size=3)


@st.composite
def bad_readings(draw: st.DrawFn) -> dict[str, Any]:
    broken = draw(st.sampled_from(["ts", "metrics", "seq"]))
    item: dict[str, Any] = {
        "ts": draw(bad_ts) if broken == "ts" else BASE_MS,
        "metrics": draw(bad_metrics) if broken == "metrics" else draw(good_metrics),
    }
    if broken == "seq":
        item["seq"] = draw(
            st.one_of(st.booleans(), st.text(max_size=5), st.floats(), st.integers(min_value=2**63))
        )
    if broken == "ts" and draw(st.booleans()):
        del item["ts"]
    return item


@st.composite
def bad_events(draw: st.DrawFn) -> dict[str, Any]:
    broken = draw(st.sampled_from(["kind", "nul", "code", "ts"]))
    item: dict[str, Any] = {
        "ts": draw(bad_ts) if broken == "ts" else BASE_MS,
        "kind": draw(identifiers),
    }
    if broken == "kind":
        del item["kind"]
        if draw(st.booleans()):
            item["kind"] = draw(st.one_of(json_junk, sql_like))
    if broken == "nul":
        text = draw(st.text(max_size=10))
        at = draw(st.integers(0, len(text)))
        item[draw(st.sampled_from(["note", "site"]))] = text[:at] + "\x00" + text[at:]
    if broken == "code":
        item[draw(st.sampled_from(["code", "component"]))] = draw(
            st.one_of(sql_like, json_junk).filter(lambda v: v is not None and not is_identifier(v))
        )
    return item


def _payload(channel: str, document: object) -> tuple[str, bytes]:
    return channel, json.dumps(document).encode()


non_finite = st.builds(
    lambda literal, name: (
        "telemetry",
        b'{"ts": %d, "metrics": {"%s": %s}}' % (BASE_MS, name.encode(), literal),
    ),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]),
    identifiers,
)
bad_payloads = st.one_of(
    st.tuples(st.sampled_from(["telemetry", "event"]), st.binary(max_size=300)),
    st.builds(_payload, st.just("telemetry"), bad_readings()),
    st.builds(_payload, st.just("telemetry"), st.lists(bad_readings(), min_size=2, max_size=4)),
    st.builds(_payload, st.just("event"), bad_events()),
    st.builds(_payload, st.just("event"), st.lists(bad_events(), min_size=2, max_size=4)),
    st.builds(
        _payload,
        st.sampled_from(["telemetry", "event"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.just([])),
    ),
    non_finite,
    st.integers(MAX_ITEMS + 1, 3 * MAX_ITEMS).map(
        lambda n: _payload("telemetry", [reading(i) for i in range(n)])
    ),
)


def _fully_rejected(channel: str, payload: bytes) -> bool:
    now = dt.datetime.now(UTC)
    decode = decode_telemetry if channel == "telemetry" else decode_events
    decoded = decode(payload, now, LIMITS)
    return not decoded.readings and not decoded.events


@EXAMPLES
@given(bad_payloads)
def test_generated_bad_payloads_are_dead_lettered(rig: Rig, case: tuple[str, bytes]) -> None:
    channel, payload = case
    assume(_fully_rejected(channel, payload))
    rig.check_bad(rig.topic(ACCOUNT, BAD_ASSET, channel), payload)


@st.composite
def bad_topics(draw: st.DrawFn) -> tuple[str, str, str]:
    """(account, asset, channel) of a topic the broker accepts and the ingester must refuse."""
    how = draw(st.sampled_from(["unknown", "cross", "level"]))
    channel = draw(st.sampled_from(["telemetry", "event"]))
    if how == "unknown":
        account = draw(st.sampled_from([ACCOUNT, OTHER])) if draw(st.booleans()) else ACCOUNT
        return account, "ghost-" + draw(identifiers), channel
    if how == "cross":
        if draw(st.booleans()):
            return draw(identifiers.filter(lambda a: a != ACCOUNT)), BAD_ASSET, channel
        return ACCOUNT, OTHER_ASSET, channel
    level = st.one_of(topic_text, sql_like)
    account = draw(st.one_of(level, st.just(ACCOUNT)))
    asset = draw(st.one_of(level, st.just(BAD_ASSET)))
    assume(not (is_identifier(account) and is_identifier(asset)))
    return account, asset, channel


@EXAMPLES
@given(bad_topics())
def test_generated_bad_topics_are_dead_lettered(rig: Rig, parts: tuple[str, str, str]) -> None:
    account, asset, channel = parts
    document: dict[str, Any] = (
        reading(120) if channel == "telemetry" else {"ts": BASE_MS, "kind": "alarm"}
    )
    rig.check_bad(rig.topic(account, asset, channel), encode(document))


# -- the deadletters command ----------------------------------------------------------------


def test_deadletters_list_and_replay_after_registering_the_asset(rig: Rig) -> None:
    topic = rig.topic(ACCOUNT, LATE_ASSET)
    at = BASE - dt.timedelta(minutes=5)
    payload = encode({"ts": int(at.timestamp() * 1000), "seq": 9, "metrics": {"power_kw": 55.5}})
    rig.pub.publish(topic, payload)
    rig.settle()
    rig.assert_dead_lettered(topic, payload)

    listed = run_cli(rig, "deadletters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert isinstance(rows, list)
    assert rows
    mine = [r for r in rows if r["topic"] == topic]
    assert len(mine) == 1, rows[:3]
    assert "unknown asset 'late-1'" in mine[0]["reason"]
    assert mine[0]["payload"] == payload.decode()
    assert mine[0]["resolved_at"] is None

    # every dead letter of this module lists as JSON, garbage payloads included
    everything = run_cli(rig, "deadletters", "list", "--json", "--all", "--limit", "100000")
    assert everything.returncode == 0, everything.stderr
    all_rows = json.loads(everything.stdout)
    assert len(all_rows) == count(rig.db_url, "SELECT count(*) FROM dead_letters")
    assert all(r["reason"] for r in all_rows)

    register(rig.db_url, [(ACCOUNT, LATE_ASSET)])
    unresolved = count(rig.db_url, "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL")
    replayed = run_cli(rig, "deadletters", "replay", "--all", "--json")
    assert replayed.returncode == 0, replayed.stderr
    result = json.loads(replayed.stdout)
    assert set(result) == {"replayed", "resolved", "still_failing", "skipped"}
    assert result["replayed"] == unresolved
    assert result["skipped"] == 0
    assert result["resolved"] >= 1
    assert result["resolved"] + result["still_failing"] == result["replayed"]

    with psycopg.connect(rig.db_url) as conn:
        stored = conn.execute(
            "SELECT time, seq, metrics FROM telemetry WHERE asset_id = %s", (LATE_ASSET,)
        ).fetchall()
        letter = conn.execute(
            "SELECT resolved_at IS NOT NULL, resolution FROM dead_letters WHERE topic = %s",
            (topic,),
        ).fetchall()
    assert stored == [(at, 9, {"power_kw": 55.5})]
    assert letter == [(True, "replayed")]
    # the bad ones stay dead-lettered (nothing else was stored by the replay)
    rig.assert_nothing_stored_elsewhere()

    again = run_cli(rig, "deadletters", "list", "--json")
    assert again.returncode == 0, again.stderr
    assert topic not in {r["topic"] for r in json.loads(again.stdout)}


def test_deeply_nested_event_detail_never_stops_the_ingester(rig: Rig) -> None:
    """Nesting near Python's recursion limit: stored or dead-lettered, never a crash."""
    topic = rig.topic(ACCOUNT, SENTINEL_ASSET, "event")
    sent = []
    for depth in (100, 500, 900, 950, 980, 985, 990, 991, 995, 1000, 2000):
        at = BASE - dt.timedelta(minutes=30, seconds=depth)
        inner = "[" * depth + "]" * depth
        payload = b'{"ts": %d, "kind": "nested", "x": %s}' % (
            int(at.timestamp() * 1000),
            inner.encode(),
        )
        rig.pub.publish(topic, payload)
        sent.append((at, payload))
    rig.settle()
    for at, payload in sent:
        stored = count(
            rig.db_url,
            "SELECT count(*) FROM asset_events WHERE asset_id = %s AND time = %s",
            (SENTINEL_ASSET, at),
        )
        dead = count(rig.db_url, DEAD_QUERY, (topic, hashlib.sha256(payload).digest()))
        assert stored + dead == 1, (at, stored, dead, rig.log_tail())
    rig.assert_alive()

    # replaying them (the CLI decodes on a shallower stack than the ingester) stores or keeps
    # each one, and finishes
    with psycopg.connect(rig.db_url) as conn:
        ids = [
            str(row[0])
            for row in conn.execute(
                "SELECT id FROM dead_letters WHERE topic = %s AND resolved_at IS NULL", (topic,)
            )
        ]
    if ids:
        replayed = run_cli(rig, "deadletters", "replay", *ids, "--json")
        assert replayed.returncode == 0, replayed.stderr[-1500:]
        assert json.loads(replayed.stdout)["replayed"] == len(ids)


def test_writer_stores_or_dead_letters_every_nested_event_the_decoder_accepts(
    db_url: str,
) -> None:
    """Whatever ``decode_message`` returns, ``BatchWriter.write`` must not raise for it.

    The ingester decodes and writes from its loop (paho's callback only queues); replay decodes
    and writes at other stack depths again. Here the decoding runs on a fresh thread (a shallow
    stack) and the writing on the test's, so a limit that depends on the caller's stack shows."""
    register(db_url, [(ACCOUNT, SENTINEL_ASSET)])
    prefix = "direct/v1"
    topic = f"{prefix}/{ACCOUNT}/{SENTINEL_ASSET}/event"
    writer = BatchWriter(db_url)
    try:
        for depth in (10, 500, 900, *range(960, 1000, 3)):
            at = BASE - dt.timedelta(minutes=40, seconds=depth)
            payload = b'{"ts": %d, "kind": "direct", "x": %s}' % (
                int(at.timestamp() * 1000),
                b"[" * depth + b"]" * depth,
            )
            with ThreadPoolExecutor(1) as pool:
                message = pool.submit(
                    decode_message,
                    topic,
                    payload,
                    prefix=prefix,
                    limits=Limits(),
                    received_at=dt.datetime.now(UTC),
                ).result()
            stats = writer.write([message])
            assert stats.events + stats.dead_letters == 1, (depth, stats)
    finally:
        writer.close()


def test_ingester_is_alive_and_still_storing_after_all_of_it(rig: Rig) -> None:
    rig.assert_alive()
    topic = rig.topic(ACCOUNT, SENTINEL_ASSET)
    at = BASE - dt.timedelta(minutes=1)
    rig.pub.publish(topic, encode({"ts": int(at.timestamp() * 1000), "metrics": {"last": 1.0}}))
    assert rig.pub.wait_all_acked(30)
    query = "SELECT count(*) FROM telemetry WHERE asset_id = %s AND time = %s AND metrics ? 'last'"
    assert wait_for(rig.db_url, query, 1, timeout_s=20, params=(SENTINEL_ASSET, at)) == 1
    rig.assert_alive()
