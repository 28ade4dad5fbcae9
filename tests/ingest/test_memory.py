"""Bounds on what devices can make the ingester hold and write (issue 11, item 2): the real
``basewatch ingest`` process, the private Mosquitto and PostgreSQL (behind a proxy that
simulates the outage), no mocks.

Memory:
While the database is down nothing can be committed, so nothing is acked, and every message
the ingester reads stays in its memory until the database is back. The pending buffer is
bounded in bytes (``BASEWATCH_INGEST_MAX_PENDING_BYTES``): once it is full the ingester stops
reading and the broker keeps the rest in the session queue. The test floods 200 messages of
about 1 MB (valid telemetry: lists of readings) during an outage, samples the process's
resident set from ``/proc/PID/status`` and checks the peak (``VmHWM``) against the bound, then
restores the database and checks that every reading is stored exactly once.

Dead letters: a device that floods large bad messages gets each stored as a prefix (with its
full size and sha256), and beyond the per-topic rate only counted, in one summary per topic
that ``deadletters list`` and ``db stats`` show.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from basewatch.localbroker import LocalBroker
from ingest.store import DeadLetterLimiter
from simulator.publish import Publisher
from tests.fix_ingest import (
    IngesterProcess,
    count,
    reading,
    register,
    wait_for,
    wait_subscribed,
)
from tests.fix_proxy import TcpProxy

UTC = dt.UTC
MESSAGES = 200
MESSAGE_BYTES = 1_000_000  # under Mosquitto's message_size_limit and the decoder's 1 MiB limit
METRICS = [f"bearing_{side}_vibration_band_{n:02d}_mm_s" for side in "ab" for n in range(20)]
PENDING_BOUND = 16 * 1024 * 1024
# What the process may hold above its resident set before the flood: the pending payloads
# (the bound, plus the one message read past it), the batch being decoded and written (a
# quarter of the bound, with Python's objects several times the raw JSON), paho's read buffer
# and allocator slack. Without a byte bound the flood takes it past 400 MB.
RSS_ALLOWANCE = 2 * PENDING_BOUND + 32 * 1024 * 1024


def big_messages(prefix: str, account: str, asset: str) -> tuple[list[tuple[str, bytes]], int]:
    """``MESSAGES`` telemetry payloads of about ``MESSAGE_BYTES`` each (a gateway uploading
    its buffered history), and the number of readings they hold."""
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=20)
    base_ms = int(start.timestamp() * 1000)
    topic = f"{prefix}/{account}/{asset}/telemetry"
    out = []
    seq = 0
    for _ in range(MESSAGES):
        readings = []
        size = 2
        while True:
            metrics = {name: round((seq * 7 + k) % 1000 / 7, 3) for k, name in enumerate(METRICS)}
            reading = json.dumps({"ts": base_ms + seq * 1000, "seq": seq, "metrics": metrics})
            if size + len(reading) + 1 > MESSAGE_BYTES:
                break
            readings.append(reading)
            size += len(reading) + 1
            seq += 1
        out.append((topic, ("[" + ",".join(readings) + "]").encode()))
    return out, seq


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak so far) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """Samples a process's resident set every 50 ms; ``peak_kib`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss", daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak_kib = max(self.peak_kib, rss_kib(self.pid)["VmRSS"])
            except (FileNotFoundError, ProcessLookupError, KeyError):
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.mark.slow
def test_memory_stays_bounded_while_1mb_messages_pile_up_during_a_database_outage(
    db_url: str, broker: LocalBroker, prefix: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    account, asset, probe = f"acct-{tag}", f"big-{tag}", f"probe-{tag}"
    register(db_url, [(account, asset), (account, probe)])
    messages, readings = big_messages(prefix, account, asset)
    assert all(900_000 < len(payload) <= MESSAGE_BYTES for _, payload in messages)
    log = tmp_path / "ingest.log"
    query = "SELECT count(*) FROM telemetry WHERE asset_id = %s"
    env = {"BASEWATCH_INGEST_MAX_PENDING_BYTES": str(PENDING_BOUND)}
    with TcpProxy.to_database(db_url) as pg_link:
        ingester = IngesterProcess(
            pg_link.database_url(db_url), broker, prefix, extra_env=env, log_path=log
        )
        with ingester:
            assert ingester.process is not None
            pid = ingester.process.pid
            wait_subscribed(db_url, broker, prefix, (account, probe))
            before = rss_kib(pid)["VmRSS"]
            sampler = RssSampler(pid)
            sampler.start()
            pg_link.stop()  # outage: nothing can be committed, so nothing is acked
            with Publisher(broker.host, broker.port, client_id=f"flood-{tag}") as pub:
                for topic, payload in messages:
                    pub.publish(topic, payload)
                assert pub.wait_all_acked(120), f"{pub.acked} of {pub.sent} acknowledged"
            # the ingester reads until its buffer is full, then pauses; give it time to take
            # all it would take, and to retry the database a few times
            time.sleep(3)
            cpu_before = cpu_s(pid)
            time.sleep(5)
            paused_cpu = cpu_s(pid) - cpu_before
            during = rss_kib(pid)
            assert count(db_url, query, (asset,)) == 0, "rows committed during the outage?"
            assert ingester.process.poll() is None, log_tail(log)
            pg_link.start()
            got = wait_for(db_url, query, readings, timeout_s=180, params=(asset,))
            assert got == readings, f"{got} of {readings} readings stored:\n{log_tail(log)}"
            sampler.stop()
            after = rss_kib(pid)
            assert ingester.terminate() == 0, log_tail(log)
    text = log.read_text()
    peak_kib = max(after["VmHWM"], sampler.peak_kib)
    figures = (
        f"RSS before the flood {before / 1024:.0f} MiB, during the outage "
        f"{during['VmRSS'] / 1024:.0f} MiB, peak {peak_kib / 1024:.0f} MiB, after the "
        f"backlog was written {after['VmRSS'] / 1024:.0f} MiB "
        f"(bound {PENDING_BOUND // 1024 // 1024} MiB, {MESSAGES} messages of "
        f"{MESSAGE_BYTES // 1000} kB); CPU while paused {paused_cpu:.2f} s in 5 s"
    )
    print(figures)
    assert "retrying in" in text, "the ingester never saw the outage:\n" + log_tail(log)
    assert "reading paused" in text, "the byte bound was never reached:\n" + log_tail(log)
    assert peak_kib - before < RSS_ALLOWANCE // 1024, figures + "\n" + log_tail(log)
    assert paused_cpu < 1.0, "the paused ingester spins:\n" + figures
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT time), min(seq), max(seq),"
            " sum((SELECT count(*) FROM jsonb_object_keys(metrics)))"
            " FROM telemetry WHERE asset_id = %s",
            (asset,),
        ).fetchone()
        dead = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE topic LIKE %s", (f"{prefix}/%",)
        ).fetchone()
    assert row == (readings, readings, 0, readings - 1, readings * len(METRICS))
    assert dead == (0,)


# -- dead letters -----------------------------------------------------------------------------

FLOOD = 100  # bad messages of BAD_BYTES on one topic
BAD_BYTES = 200_000
PREFIX_BYTES = 1024
PER_MINUTE = 10


def basewatch_json(db_url: str, *args: str) -> object:
    env = dict(os.environ, BASEWATCH_DATABASE_URL=db_url)
    done = subprocess.run(
        [sys.executable, "-m", "basewatch", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_dead_letter_limiter_refills_and_charges_only_on_commit() -> None:
    now = [0.0]
    limiter = DeadLetterLimiter(6, clock=lambda: now[0])  # a token every 10 s, bursts of 6
    assert [limiter.allow("t") for _ in range(8)] == [True] * 6 + [False] * 2
    limiter.rollback()  # the batch did not commit: nothing was charged
    assert [limiter.allow("t") for _ in range(7)] == [True] * 6 + [False]
    limiter.commit()
    assert limiter.allow("t") is False
    assert limiter.allow("other") is True  # per topic
    now[0] = 10.0
    limiter.commit()
    assert [limiter.allow("t") for _ in range(2)] == [True, False]
    assert DeadLetterLimiter(0).allow("t") is True  # 0: no limit


@pytest.mark.slow
def test_a_flood_of_large_bad_messages_is_stored_capped_and_counted(
    db_url: str, broker: LocalBroker, prefix: str, tmp_path: Path
) -> None:
    """100 bad messages of 200 kB in about a second on one topic: at most the rate's burst
    is stored, each as a 1 kB prefix with its full size and sha256; the rest are counted in
    one summary; another topic under the rate is not affected; nothing is silently lost."""
    tag = uuid.uuid4().hex[:8]
    account, noisy, quiet, probe = f"acct-{tag}", f"noisy-{tag}", f"quiet-{tag}", f"p-{tag}"
    register(db_url, [(account, noisy), (account, quiet), (account, probe)])
    noisy_topic = f"{prefix}/{account}/{noisy}/telemetry"
    quiet_topic = f"{prefix}/{account}/{quiet}/telemetry"
    flood = [b"not json %03d " % i + bytes([65 + i % 26]) * BAD_BYTES for i in range(FLOOD)]
    flood = [payload[:BAD_BYTES] for payload in flood]
    quiet_bad = [b"[1, 2, %d" % i for i in range(3)]
    log = tmp_path / "ingest.log"
    env = {
        "BASEWATCH_INGEST_DEAD_LETTER_PAYLOAD_BYTES": str(PREFIX_BYTES),
        "BASEWATCH_INGEST_DEAD_LETTERS_PER_MINUTE": str(PER_MINUTE),
    }
    with IngesterProcess(db_url, broker, prefix, extra_env=env, log_path=log) as ingester:
        wait_subscribed(db_url, broker, prefix, (account, probe))
        started = time.monotonic()
        with Publisher(broker.host, broker.port) as pub:
            for payload in flood:
                pub.publish(noisy_topic, payload)
            for payload in quiet_bad:
                pub.publish(quiet_topic, payload)
            pub.publish(noisy_topic, flood[0])  # a redelivered copy of a stored one
            sentinel_ms = int(time.time() * 1000) - 3_600_000
            pub.publish(f"{prefix}/{account}/{quiet}/telemetry", reading(sentinel_ms, 1, a=1.0))
            assert pub.wait_all_acked(60)
        stored = wait_for(
            db_url, "SELECT count(*) FROM telemetry WHERE asset_id = %s", 1, params=(quiet,)
        )
        elapsed = time.monotonic() - started
        assert stored == 1, log_tail(log)
        assert ingester.terminate() == 0, log_tail(log)

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT topic, length(payload), payload, payload_bytes, payload_sha256, suppressed,"
            " reason FROM dead_letters WHERE topic IN (%s, %s) ORDER BY id",
            (noisy_topic, quiet_topic),
        ).fetchall()
        written = conn.execute(
            "SELECT coalesce(sum(length(payload)), 0) FROM dead_letters"
        ).fetchone()
    noisy_rows = [r for r in rows if r[0] == noisy_topic and r[5] == 0]
    [summary] = [r for r in rows if r[5] > 0]
    quiet_rows = [r for r in rows if r[0] == quiet_topic]
    # the quiet topic is under its rate: every message is there, whole (they are small)
    assert sorted(bytes(r[2]) for r in quiet_rows) == sorted(quiet_bad)
    # the noisy one: at most the burst plus what refilled meanwhile, each cut to the prefix
    # but keyed on the whole payload (the redelivered copy is no second row)
    allowed = PER_MINUTE + int(elapsed * PER_MINUTE / 60) + 1
    assert PER_MINUTE <= len(noisy_rows) <= allowed, (len(noisy_rows), elapsed)
    by_hash = {hashlib.sha256(p).digest(): p for p in flood}
    for _, stored_bytes, payload, size, sha, _, reason in noisy_rows:
        original = by_hash[bytes(sha)]
        assert (stored_bytes, size) == (PREFIX_BYTES, BAD_BYTES)
        assert bytes(payload) == original[:PREFIX_BYTES]
        assert "invalid JSON" in reason
    assert len({bytes(r[4]) for r in noisy_rows}) == len(noisy_rows)
    # nothing silently lost: stored + counted = every message published on the topic (the
    # copy of a stored message is counted again when it arrives over the rate: at least once)
    assert summary[0] == noisy_topic
    assert len(noisy_rows) + summary[5] in (FLOOD, FLOOD + 1), (len(noisy_rows), summary[5])
    assert "over the rate limit of 10 dead letters a minute" in summary[6]
    assert "invalid JSON" in summary[6]
    assert (summary[1], summary[3]) == (PREFIX_BYTES, BAD_BYTES)
    assert written is not None
    assert written[0] < 40 * PREFIX_BYTES  # not 20 MB
    assert "counted, not stored" in log.read_text()

    listed = basewatch_json(db_url, "deadletters", "list", "--limit", "500")
    assert isinstance(listed, list)
    [shown] = [d for d in listed if d["suppressed"]]
    assert shown["suppressed"] == summary[5]
    assert shown["payload_sha256"] is None
    cut = [d for d in listed if d["topic"] == noisy_topic and not d["suppressed"]]
    assert cut
    assert all(d["truncated"] for d in cut)
    assert all((d["payload_bytes"], d["stored_bytes"]) == (BAD_BYTES, PREFIX_BYTES) for d in cut)
    assert {d["payload_sha256"] for d in cut} == {bytes(r[4]).hex() for r in noisy_rows}
    stats = basewatch_json(db_url, "db", "stats")
    assert isinstance(stats, dict)
    assert stats["dead_letters"]["suppressed"] == summary[5]
    assert stats["dead_letters"]["truncated"] == len(noisy_rows)
    # a cut payload or a summary cannot be replayed; the quiet topic's rows can (and fail again)
    replayed = basewatch_json(db_url, "deadletters", "replay", "--all")
    assert replayed == {
        "replayed": len(quiet_rows),
        "resolved": 0,
        "still_failing": len(quiet_rows),
        "skipped": len(noisy_rows) + 1,
    }
