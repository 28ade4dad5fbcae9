"""Benchmark of MQTT ingest end to end: publishers → Mosquitto → ``basewatch ingest`` → PostgreSQL.

Prints figures; never fails on a target (the targets are printed next to the figures).

Each run (one per entry of ``--ingesters``) takes a fresh migrated database ``bw_bench_<random>``,
registers the assets, starts a private Mosquitto (:class:`~basewatch.localbroker.LocalBroker`)
and the real ``basewatch ingest --processes N`` as a child process, then publishes from several
publisher processes (each its own paho client, QoS 1, payloads of the reference compressor):

- ``warm-up``: one message per asset (primes caches; counted in the loss check only);
- ``saturated``: ``--messages`` as fast as the broker acknowledges them: sustained end-to-end
  messages/s and values/s from the first publish to the last commit;
- ``paced``: ``--messages`` at ``--rate`` msg/s (the target rate): latency from the device
  timestamp to commit without a backlog building up.

A message counts as published only when the broker acknowledged it (PUBACK). Lost = acknowledged
but not in ``telemetry``; duplicated = ``count(*) − count(DISTINCT (asset_id, time))``.

Commit latency: a sampler thread polls ``telemetry`` every ``--poll-ms`` for the rows of
``--latency-assets`` assets (primary-key range scans, a few rows per poll) and records the time a
row is first visible: the snapshot is taken after the recorded time, so latency = first visible −
device ts over-estimates the commit latency by at most one poll period.

Also: the ingester's RSS while PostgreSQL is unreachable for ``--outage-seconds`` (a TCP proxy in
this file sits between the ingester and PostgreSQL and is closed), and ``--layout``: raw binary
COPY of the same messages into the project's ``telemetry`` (one row per message, jsonb metrics),
a narrow table (one row per metric) and, for reference, a wide table (one float column per metric).

    .venv/bin/python bench/ingest_throughput.py             # everything, defaults
    .venv/bin/python bench/ingest_throughput.py --messages 20000 --no-layout --outage-seconds 0
    .venv/bin/python bench/ingest_throughput.py --ingesters 1 \
        --ingest-env BASEWATCH_INGEST_BATCH_SIZE=5000
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime as dt
import itertools
import json
import math
import multiprocessing
import multiprocessing.pool
import os
import random
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from basewatch.localbroker import LocalBroker, free_port
from basewatch.wiring import PACKAGES
from core.db import drop_database, table_bytes, with_database
from core.migrate import migrate
from core.settings import Settings
from ingest.topics import device_topic
from simulator.physics import METRICS

REPO_ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC
PREFIX = "basewatch/v1"
ACCOUNTS = 20
PROBE_ACCOUNT = "bench-probe-acc"
PROBE_ASSET = "bench-probe"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# targets from the issue
TARGET_MSG_S = 8_000
TARGET_VALUES_S = 120_000
NODE_RED_ROWS_S = 21_000
NODE_RED_FACTOR = 5
TARGET_P99_S = 1.0

# value formats of the 15 reference metrics (≈ 450 bytes of JSON per message with ts and seq)
_FORMATS = {
    "load_pct": "%.5f",
    "pressure_bar": "%.6f",
    "flow_m3_min": "%.6f",
    "power_kw": "%.5f",
    "energy_kwh": "%.4f",
    "running_hours": "%.5f",
    "loaded_hours": "%.5f",
    "oil_temp_c": "%.5f",
    "discharge_temp_c": "%.5f",
    "vibration_mm_s": "%.6f",
    "oil_filter_dp_bar": "%.7f",
    "air_filter_dp_mbar": "%.5f",
    "separator_dp_bar": "%.7f",
    "ambient_temp_c": "%.5f",
    "starts": "%d",
}


def metric_names(count: int) -> tuple[str, ...]:
    """The first ``count`` reference metrics, padded with ``aux_NN`` beyond the 15."""
    extra = tuple(f"aux_{i:02d}" for i in range(len(METRICS), count))
    return (METRICS + extra)[:count]


def payload_format(names: Sequence[str]) -> str:
    body = ", ".join(f'"{name}": {_FORMATS.get(name, "%.3f")}' for name in names)
    return '{"ts": %d, "seq": %d, "metrics": {' + body + "}}"


def note(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms_to_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, UTC)


def percentile(ordered: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


# -- simulated machines ----------------------------------------------------------------------


@dataclass(slots=True)
class Machine:
    """A screw compressor's readings, one second apart per message (cheap to generate)."""

    rated_kw: float
    energy_kwh: float
    running_h: float
    loaded_h: float
    starts: int
    oil_dp: float
    air_dp: float
    sep_dp: float
    ambient: float

    @classmethod
    def new(cls, rng: random.Random) -> Machine:
        return cls(
            rated_kw=rng.choice((37.0, 55.0, 75.0, 90.0, 110.0, 160.0)),
            energy_kwh=rng.uniform(1e4, 9e5),
            running_h=rng.uniform(500, 40_000),
            loaded_h=rng.uniform(300, 30_000),
            starts=rng.randint(100, 50_000),
            oil_dp=rng.uniform(0.25, 1.2),
            air_dp=rng.uniform(18, 65),
            sep_dp=rng.uniform(0.15, 0.85),
            ambient=rng.uniform(5, 35),
        )

    def values(self, rng: random.Random, count: int) -> tuple[float, ...]:
        r = rng.random()
        load = 35.0 + 65.0 * r
        power = self.rated_kw * (0.3 + 0.007 * load)
        self.energy_kwh += power / 3600
        self.running_h += 1 / 3600
        self.loaded_h += r / 3600
        if r < 0.001:
            self.starts += 1
        oil = 72.0 + 18.0 * r + self.ambient * 0.3
        values = (
            load,
            6.8 + 0.6 * rng.random(),
            self.rated_kw / 6.5 * load / 100,
            power,
            self.energy_kwh,
            self.running_h,
            self.loaded_h,
            oil,
            oil + 8.0 + 3.0 * rng.random(),
            1.2 + 2.5 * rng.random(),
            self.oil_dp,
            self.air_dp,
            self.sep_dp,
            self.ambient + rng.random(),
            float(self.starts),
        )
        if count <= len(values):
            return values[:count]
        return values + tuple(rng.random() * 100 for _ in range(count - len(values)))


# -- publisher processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class PublishJob:
    index: int
    host: str
    port: int
    assets: tuple[tuple[str, str], ...]  # (account_id, asset_id)
    asset_numbers: tuple[int, ...]  # each asset's index in the run's asset list
    count: int
    rate: float  # messages/s of this process; 0: as fast as the broker acknowledges
    start_at: float  # wall clock
    metrics: int
    seq_after: tuple[int, ...]  # last seq used per asset
    ts_after: tuple[int, ...]  # last ts used per asset (epoch ms)
    seed: int
    window: int = 1000


@dataclass
class PublishResult:
    index: int
    asset_numbers: array.array[int]  # of each acknowledged message
    ts_ms: array.array[int]
    sent: int
    refused: int
    first_publish: float
    last_publish: float
    last_ack: float
    seq_after: tuple[int, ...]
    ts_after: tuple[int, ...]
    cpu_s: float
    payload_bytes: int
    error: str = ""

    @property
    def acked(self) -> int:
        return len(self.ts_ms)


@dataclass(slots=True)
class _Tally:
    connected: bool = False
    connect_error: str = ""
    refused: int = 0
    last_ack: float = 0.0


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def publish_worker(job: PublishJob) -> PublishResult:
    """One publisher process: a single-threaded paho client that records what the broker acked."""
    rng = random.Random(job.seed)
    machines = [Machine.new(rng) for _ in job.assets]
    topics = [device_topic(PREFIX, account, asset) for account, asset in job.assets]
    template = payload_format(metric_names(job.metrics))
    pending: dict[int, tuple[int, int]] = {}
    acked_assets: array.array[int] = array.array("i")
    acked_ts: array.array[int] = array.array("q")
    tally = _Tally()

    def on_connect(
        _c: mqtt.Client,
        _u: Any,
        _f: mqtt.ConnectFlags,
        reason: ReasonCode,
        _p: Properties | None,
    ) -> None:
        tally.connected = not reason.is_failure
        tally.connect_error = "" if tally.connected else str(reason)

    def on_publish(
        _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        item = pending.pop(mid, None)
        if item is None:
            return
        if reason.is_failure:
            tally.refused += 1
            return
        acked_assets.append(item[0])
        acked_ts.append(item[1])
        tally.last_ack = time.time()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{job.index}-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(job.window + 16)  # our own window governs
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(job.host, job.port, keepalive=60, clean_start=True)
    sock = client.socket()
    if sock is None:
        raise RuntimeError("publisher: no socket after connect")

    def service(timeout: float) -> None:
        wlist = [sock] if client.want_write() else []
        readable, writable, _ = select.select([sock], wlist, [], max(0.0, timeout))
        if readable:
            client.loop_read()
        if writable:
            client.loop_write()

    deadline = time.monotonic() + 10
    while not tally.connected and not tally.connect_error and time.monotonic() < deadline:
        service(0.1)
    if not tally.connected:
        raise RuntimeError(f"publisher {job.index}: not connected ({tally.connect_error})")
    while time.time() < job.start_at:
        service(min(0.05, job.start_at - time.time()))
        client.loop_misc()

    seqs = list(job.seq_after)
    last_ts = list(job.ts_after)
    n_assets = len(topics)
    cpu_start = _cpu_self()
    payload_bytes = 0
    started = time.monotonic()
    next_misc = started + 1.0
    first_publish = time.time()
    for i in range(job.count):
        if job.rate > 0:
            due = started + i / job.rate
            while (delay := due - time.monotonic()) > 0:
                service(delay)
        while len(pending) >= job.window:
            service(1.0)
        k = i % n_assets
        now_ms = int(time.time() * 1000)
        ts = now_ms if now_ms > last_ts[k] else last_ts[k] + 1
        last_ts[k] = ts
        seqs[k] += 1
        payload = (template % ((ts, seqs[k], *machines[k].values(rng, job.metrics)))).encode()
        payload_bytes += len(payload)
        info = client.publish(topics[k], payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            pending[info.mid] = (job.asset_numbers[k], ts)
        if i & 15 == 15:
            service(0.0)
            if time.monotonic() >= next_misc:
                client.loop_misc()
                next_misc = time.monotonic() + 1.0
    last_publish = time.time()
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        service(0.5)
        client.loop_misc()
    cpu_s = _cpu_self() - cpu_start
    error = f"{len(pending)} publishes never acknowledged" if pending else ""
    client.disconnect()
    return PublishResult(
        index=job.index,
        asset_numbers=acked_assets,
        ts_ms=acked_ts,
        sent=job.count,
        refused=tally.refused,
        first_publish=first_publish,
        last_publish=last_publish,
        last_ack=tally.last_ack,
        seq_after=tuple(seqs),
        ts_after=tuple(last_ts),
        cpu_s=cpu_s,
        payload_bytes=payload_bytes,
        error=error,
    )


def _noop(_: int) -> int:
    return os.getpid()


# -- database, ingester, broker helpers ------------------------------------------------------


def create_database(server: str) -> str:
    name = f"bw_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server, name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, PACKAGES, "auto")
    return url


def register(url: str, assets: Sequence[tuple[str, str]]) -> None:
    pairs = [*assets, (PROBE_ACCOUNT, PROBE_ASSET)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO accounts (account_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(account, account) for account in sorted({a for a, _ in pairs})],
        )
        cur.executemany(
            "INSERT INTO assets (asset_id, account_id) VALUES (%s, %s)",
            [(asset, account) for account, asset in pairs],
        )


def make_assets(count: int) -> list[tuple[str, str]]:
    return [(f"bench-acc-{i % ACCOUNTS:02d}", f"bench-a{i:04d}") for i in range(count)]


class Ingesters:
    """``basewatch ingest --processes N`` as a child process, logging to a file."""

    def __init__(
        self,
        database_url: str,
        broker: LocalBroker,
        processes: int,
        log_path: Path,
        extra_env: dict[str, str],
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.env = dict(
            os.environ,
            BASEWATCH_DATABASE_URL=database_url,
            BASEWATCH_MQTT_HOST=broker.host,
            BASEWATCH_MQTT_PORT=str(broker.port),
            BASEWATCH_TOPIC_PREFIX=PREFIX,
            BASEWATCH_MQTT_CLIENT_ID=f"bench-ingest-{tag}",
            BASEWATCH_MQTT_SHARE_GROUP=f"bench{tag}",
            BASEWATCH_LOG_LEVEL="WARNING",
        )
        self.env.update(extra_env)
        self.settings = Settings.from_env(self.env)
        self.processes = processes
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Ingesters:
        args = [sys.executable, "-m", "basewatch", "ingest", "--processes", str(self.processes)]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                args, env=self.env, stdout=out, stderr=out, cwd=REPO_ROOT
            )
        return self

    def pids(self) -> list[int]:
        """The consumer processes (and the supervisor, when there are several)."""
        if self.process is None:
            return []
        pid = self.process.pid
        if self.processes == 1:
            return [pid]
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        return [pid, *(int(c) for c in children)]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return None
        return process.returncode

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []


def wait_ready(url: str, broker: LocalBroker, ingesters: Ingesters, timeout_s: float = 60) -> float:
    """Publish probe messages until one is stored: the ingester is subscribed and writing."""
    started = time.monotonic()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-probe-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    topic = device_topic(PREFIX, PROBE_ACCOUNT, PROBE_ASSET)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            seq = 0
            while time.monotonic() - started < timeout_s:
                if not ingesters.alive():
                    tail = "\n".join(ingesters.log_lines()[-20:])
                    raise RuntimeError(f"the ingester exited at start:\n{tail}")
                seq += 1
                body = {"ts": int(time.time() * 1000), "seq": seq, "metrics": {"load_pct": 1.0}}
                client.publish(topic, json.dumps(body), qos=1)
                time.sleep(0.25)
                row = conn.execute(
                    "SELECT count(*) FROM telemetry WHERE asset_id = %s", (PROBE_ASSET,)
                ).fetchone()
                if row and row[0]:
                    if ingesters.processes > 1:
                        time.sleep(1.5)  # the other consumers subscribe at the same time
                    return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()
    raise RuntimeError(f"no probe message was stored within {timeout_s:.0f} s")


def version_of(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


# -- CPU accounting --------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, summed over cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, (busy + idle + iowait) / CLK_TCK


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def backend_pids(url: str, database: str) -> dict[str, list[int]]:
    """PostgreSQL backends of the bench database by role (ingester writers, sampler)."""
    groups: dict[str, list[int]] = {"ingester": [], "sampler": []}
    with psycopg.connect(url, autocommit=True) as conn:
        for pid, app in conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity WHERE datname = %s", (database,)
        ):
            if str(app).startswith("basewatch-ingest"):
                groups["ingester"].append(int(pid))
            elif app == "bench-sampler":
                groups["sampler"].append(int(pid))
    return groups


@dataclass
class CpuSnapshot:
    wall: float
    per_pid: dict[int, float]
    bench_self: float
    machine_busy: float
    machine_total: float


class CpuMeter:
    """Where the machine's CPU went during a phase, by component."""

    def __init__(self, url: str, database: str, ingesters: Ingesters, broker_pid: int | None):
        self.url = url
        self.database = database
        self.ingesters = ingesters
        self.broker_pid = broker_pid

    def snapshot(self) -> CpuSnapshot:
        pids = set(postgres_pids()) | set(self.ingesters.pids())
        if self.broker_pid:
            pids.add(self.broker_pid)
        per_pid = {pid: cpu for pid in pids if (cpu := proc_cpu_s(pid)) is not None}
        busy, total = machine_cpu_s()
        return CpuSnapshot(time.time(), per_pid, _cpu_self(), busy, total)

    def report(
        self, before: CpuSnapshot, after: CpuSnapshot, publishers_cpu_s: float
    ) -> dict[str, float]:
        """Cores used on average (CPU seconds per wall second) by each component."""
        wall = max(after.wall - before.wall, 1e-9)
        backends = backend_pids(self.url, self.database)

        def used(pids: Sequence[int]) -> float:
            return sum(
                after.per_pid[p] - before.per_pid.get(p, 0.0) for p in pids if p in after.per_pid
            )

        ingester = used(self.ingesters.pids())
        pg_ingest = used(backends["ingester"])
        pg_sampler = used(backends["sampler"])
        known = set(backends["ingester"]) | set(backends["sampler"])
        pg_other = used([p for p in postgres_pids() if p not in known])
        broker = used([self.broker_pid]) if self.broker_pid else 0.0
        bench = after.bench_self - before.bench_self
        busy = after.machine_busy - before.machine_busy
        cores = (after.machine_total - before.machine_total) / wall
        parts = {
            "ingester_python": ingester,
            "postgres_ingester_backends": pg_ingest,
            "postgres_other_processes": pg_other,
            "mosquitto": broker,
            "publishers": publishers_cpu_s,
            "bench_sampler_thread_and_main": bench,
            "postgres_sampler_backend": pg_sampler,
        }
        parts["rest_of_machine"] = busy - sum(parts.values())
        result = {name: round(value / wall, 3) for name, value in parts.items()}
        result["machine_busy"] = round(busy / wall, 3)
        result["machine_cores"] = round(cores, 2)
        result["wall_s"] = round(wall, 3)
        return result


# CPU per message of the parts a production ingest host runs (publishers are devices elsewhere)
_SERVER_PARTS = ("ingester_python", "postgres_ingester_backends", "mosquitto")


def cpu_per_message(cpu: dict[str, float], messages: int) -> dict[str, float]:
    """CPU µs per message by component, and the rates they imply: the load on this shared
    machine changes the wall-clock figures, much less the CPU each message costs."""
    if messages <= 0:
        return {}
    per = {
        name: round(cpu[name] * cpu["wall_s"] / messages * 1e6, 1)
        for name in (*_SERVER_PARTS, "publishers")
    }
    ingester = per["ingester_python"]
    server = sum(per[name] for name in _SERVER_PARTS)
    per["ceiling_one_ingester_on_one_free_core_msg_s"] = round(1e6 / ingester) if ingester else 0
    per["ceiling_server_parts_on_two_free_cores_msg_s"] = round(2e6 / server) if server else 0
    everything = server + per["publishers"]
    per["ceiling_with_publishers_on_two_free_cores_msg_s"] = (
        round(2e6 / everything) if everything else 0
    )
    return per


# -- commit latency sampler ------------------------------------------------------------------

GAP_GIVE_UP_S = 30.0
_SAMPLE = (
    "SELECT w.a, x.seq, round(extract(epoch FROM x.time) * 1000)::int8"
    " FROM unnest(%s::text[], %s::timestamptz[]) AS w(a, since)"
    " CROSS JOIN LATERAL (SELECT time, seq FROM telemetry"
    " WHERE asset_id = w.a AND time > w.since) AS x"
)


class LatencySampler(threading.Thread):
    """Records when each row of the sampled assets first becomes visible.

    Per asset it asks only for rows after the highest contiguous ``seq`` seen, through the
    primary key (asset_id, time): each poll reads about the rows committed since the last one
    (plus rows committed out of order, as with several ingesters). A seq still missing after
    GAP_GIVE_UP_S stops holding the window back."""

    def __init__(self, url: str, assets: Sequence[str], period_s: float) -> None:
        super().__init__(name="latency-sampler", daemon=True)
        self.url = url
        self.assets = list(assets)
        self.period_s = period_s
        self.first_seen: dict[tuple[str, int], float] = {}
        self.polls: list[tuple[float, float, int]] = []  # (start, seconds, rows)
        self.error = ""
        self._halt = threading.Event()
        self._by_seq: dict[str, dict[int, int]] = {a: {} for a in self.assets}
        self._contig_seq = dict.fromkeys(self.assets, 0)
        self._contig_ts = dict.fromkeys(self.assets, 0)
        self._gap_since: dict[str, float] = {}

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        try:
            with psycopg.connect(
                self.url, autocommit=True, application_name="bench-sampler"
            ) as conn:
                conn.prepare_threshold = 0
                no_scans(conn)
                while not self._halt.is_set():
                    self._skip_old_gaps(time.time())
                    since = [ms_to_dt(self._contig_ts[a]) for a in self.assets]
                    started = time.time()
                    rows = conn.execute(_SAMPLE, (self.assets, since)).fetchall()
                    took = time.time() - started
                    for asset, seq, ts in rows:
                        self._record(str(asset), seq, int(ts), started)
                    self.polls.append((started, took, len(rows)))
                    self._halt.wait(max(0.0, self.period_s - took))
        except Exception as exc:  # reported with the figures
            self.error = f"{type(exc).__name__}: {exc}"

    def wait_poll_after(self, moment: float, timeout_s: float = 5.0) -> None:
        """Wait for a poll that started after ``moment`` (so it saw everything committed)."""
        deadline = time.monotonic() + timeout_s
        while self.is_alive() and time.monotonic() < deadline:
            if self.polls and self.polls[-1][0] > moment:
                return
            time.sleep(self.period_s / 2)

    def _skip_old_gaps(self, now: float) -> None:
        """A seq missing for GAP_GIVE_UP_S (lost, or never acked) stops holding the window."""
        for asset, by_seq in self._by_seq.items():
            if not by_seq:
                self._gap_since.pop(asset, None)
                continue
            since = self._gap_since.setdefault(asset, now)
            if now - since > GAP_GIVE_UP_S:
                contig = min(by_seq)
                self._contig_ts[asset] = by_seq.pop(contig)
                while contig + 1 in by_seq:
                    contig += 1
                    self._contig_ts[asset] = by_seq.pop(contig)
                self._contig_seq[asset] = contig
                self._gap_since.pop(asset)

    def _record(self, asset: str, seq: int | None, ts: int, seen_at: float) -> None:
        key = (asset, ts)
        if key in self.first_seen:
            return
        self.first_seen[key] = seen_at
        if seq is None:
            return
        by_seq = self._by_seq[asset]
        by_seq[seq] = ts
        contig = self._contig_seq[asset]
        while contig + 1 in by_seq:
            contig += 1
            self._contig_ts[asset] = by_seq.pop(contig)
        self._contig_seq[asset] = contig

    def summary(self, first_ms: int, last_ms: int) -> dict[str, Any]:
        latencies = sorted(
            seen - ts / 1000
            for (_, ts), seen in self.first_seen.items()
            if first_ms <= ts <= last_ms
        )
        polls = [p for p in self.polls if first_ms / 1000 <= p[0] <= last_ms / 1000 + 30]
        periods = [b[0] - a[0] for a, b in itertools.pairwise(polls)]
        return {
            "samples": len(latencies),
            "p50_s": _round(percentile(latencies, 0.50)),
            "p90_s": _round(percentile(latencies, 0.90)),
            "p99_s": _round(percentile(latencies, 0.99)),
            "max_s": _round(latencies[-1] if latencies else None),
            "poll_period_mean_ms": _round(1000 * sum(periods) / len(periods) if periods else None),
            "poll_period_max_ms": _round(1000 * max(periods) if periods else None),
            "poll_query_mean_ms": _round(
                1000 * sum(p[1] for p in polls) / len(polls) if polls else None
            ),
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def no_scans(conn: psycopg.Connection[Any]) -> None:
    """Keep this session's polls on the primary key. Without statistics on a growing table the
    planner prefers a sequential scan with a hash join for the per-asset lookups (6 ms at 40k
    rows and growing, against 0.1 ms through the index), which would make the sampler a load of
    its own."""
    for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
        conn.execute(sql.SQL("SET {} = off").format(sql.Identifier(setting)))


# -- end of a phase, and the loss check ------------------------------------------------------

_LAST_VISIBLE = (
    "SELECT count(*) FROM unnest(%s::text[], %s::timestamptz[]) AS w(a, t)"
    " WHERE EXISTS (SELECT 1 FROM telemetry x WHERE x.asset_id = w.a AND x.time = w.t)"
)


def wait_committed(
    url: str,
    last: dict[str, int],
    expected: int,
    timeout_s: float = 300,
    stall_s: float = 20,
) -> tuple[float, int]:
    """Wait until ``expected`` rows (probe excluded) are visible; returns the wall time of the
    poll that first saw them all (the last commit happened before it) and the count.

    First a cheap poll (every 20 ms) for the last acked message of each asset, then full
    counts. When rows are missing it gives up after ``stall_s`` without progress and returns
    the time of the last progress."""
    assets = sorted(last)
    times = [ms_to_dt(last[a]) for a in assets]
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        no_scans(conn)
        seen = -1
        progress_at = time.time()
        while time.monotonic() < deadline:
            row = conn.execute(_LAST_VISIBLE, (assets, times)).fetchone()
            visible = int(row[0]) if row else 0
            if visible >= len(assets):
                break
            if visible != seen:
                seen, progress_at = visible, time.time()
            elif time.time() - progress_at > stall_s:
                break
            time.sleep(0.02)
        conn.execute("RESET ALL")  # the full counts below read the whole table anyway
        count = -1
        progress_at = time.time()
        while True:
            polled = time.time()
            row = conn.execute(
                "SELECT count(*) FROM telemetry WHERE asset_id <> %s", (PROBE_ASSET,)
            ).fetchone()
            stored = int(row[0]) if row else 0
            if stored >= expected:
                return polled, stored
            if stored != count:
                count, progress_at = stored, polled
            elif polled - progress_at > stall_s or time.monotonic() > deadline:
                return progress_at, stored
            time.sleep(0.05)


def verify(url: str, assets: Sequence[str], results: Sequence[PublishResult]) -> dict[str, Any]:
    """Compare what the broker acknowledged with what is in ``telemetry``."""
    acked: set[tuple[int, int]] = set()
    acked_total = 0
    for result in results:
        acked.update(zip(result.asset_numbers, result.ts_ms, strict=True))
        acked_total += result.acked
    index = {name: i for i, name in enumerate(assets)}
    stored: set[tuple[int, int]] = set()
    with psycopg.connect(url, autocommit=True) as conn:
        for asset_id, ts in conn.execute(
            "SELECT asset_id, round(extract(epoch FROM time) * 1000)::int8 FROM telemetry"
            " WHERE asset_id <> %s",
            (PROBE_ASSET,),
        ):
            stored.add((index.get(str(asset_id), -1), int(ts)))
        row = conn.execute(
            "SELECT count(*), count(*) - count(DISTINCT (asset_id, time)),"
            " count(*) - count(DISTINCT (asset_id, seq)),"
            " coalesce(sum((SELECT count(*) FROM jsonb_object_keys(metrics))), 0)"
            " FROM telemetry WHERE asset_id <> %s",
            (PROBE_ASSET,),
        ).fetchone()
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert row is not None
    return {
        "acked": acked_total,
        "stored_rows": int(row[0]),
        "stored_values": int(row[3]),
        "lost": len(acked - stored),
        "duplicated": int(row[1]),
        "duplicated_seq": int(row[2]),
        "stored_not_acked": len(stored - acked),
        "acked_twice_by_broker": acked_total - len(acked),
        "dead_letters": int(dead[0]) if dead else 0,
    }


# -- one publishing phase --------------------------------------------------------------------


@dataclass
class PublishState:
    """Per asset, the last seq and ts used, carried from phase to phase."""

    seq: list[int]
    ts: list[int]


@dataclass
class RunContext:
    args: argparse.Namespace
    url: str
    database: str
    broker: LocalBroker
    ingesters: Ingesters
    pool: multiprocessing.pool.Pool
    assets: list[tuple[str, str]]
    state: PublishState
    sampler: LatencySampler | None = None
    cpu: CpuMeter | None = None
    expected: int = 0  # acked messages so far (rows expected in telemetry)
    results: list[PublishResult] = field(default_factory=list)


def run_phase(
    ctx: RunContext,
    name: str,
    count: int,
    rate: float,
    publishers: int,
    during: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Publish ``count`` messages from ``publishers`` processes (``rate`` msg/s in total, 0 for
    unthrottled), wait until all acked messages are committed, and measure."""
    args = ctx.args
    publishers = max(1, min(publishers, len(ctx.assets), count))
    start_at = time.time() + 0.5
    jobs = []
    for p in range(publishers):
        numbers = tuple(range(p, len(ctx.assets), publishers))
        jobs.append(
            PublishJob(
                index=p,
                host=ctx.broker.host,
                port=ctx.broker.port,
                assets=tuple(ctx.assets[n] for n in numbers),
                asset_numbers=numbers,
                count=count // publishers + (1 if p < count % publishers else 0),
                rate=rate / publishers,
                start_at=start_at,
                metrics=args.metrics,
                seq_after=tuple(ctx.state.seq[n] for n in numbers),
                ts_after=tuple(ctx.state.ts[n] for n in numbers),
                seed=hash((name, p, len(ctx.results))) & 0xFFFFFFFF,
            )
        )
    how = f"at {rate:,.0f} msg/s" if rate else "unthrottled"
    note(f"{name}: {count:,} messages from {publishers} publisher processes, {how}")
    cpu_before = ctx.cpu.snapshot() if ctx.cpu else None
    pending = ctx.pool.map_async(publish_worker, jobs, chunksize=1)
    if during is not None:
        during(start_at)
    while not pending.ready():
        pending.wait(5)
        if not pending.ready():
            seen = f" ({len(ctx.sampler.first_seen):,} sampled rows seen)" if ctx.sampler else ""
            note(f"{name}: publishing ...{seen}")
    results: list[PublishResult] = pending.get()
    acked = sum(r.acked for r in results)
    ctx.results += results
    ctx.expected += acked
    for job, result in zip(jobs, results, strict=True):
        for n, seq, ts in zip(job.asset_numbers, result.seq_after, result.ts_after, strict=True):
            ctx.state.seq[n] = seq
            ctx.state.ts[n] = ts
    last: dict[str, int] = {}
    for result in results:
        for n, ts in zip(result.asset_numbers, result.ts_ms, strict=True):
            asset = ctx.assets[n][1]
            last[asset] = max(last.get(asset, 0), ts)
    first_publish = min(r.first_publish for r in results)
    last_publish = max(r.last_publish for r in results)
    last_ack = max(r.last_ack for r in results)
    note(f"{name}: {acked:,} acked in {last_ack - first_publish:.1f} s; waiting for commits")
    end, stored = wait_committed(ctx.url, last, ctx.expected)
    cpu = None
    if ctx.cpu and cpu_before:
        cpu = ctx.cpu.report(cpu_before, ctx.cpu.snapshot(), sum(r.cpu_s for r in results))
    duration = max(end - first_publish, 1e-9)
    phase: dict[str, Any] = {
        "phase": name,
        "publishers": publishers,
        "rate_asked": rate or None,
        "sent": sum(r.sent for r in results),
        "acked": acked,
        "refused_by_broker": sum(r.refused for r in results),
        "publisher_errors": [r.error for r in results if r.error],
        "payload_bytes_mean": round(sum(r.payload_bytes for r in results) / max(1, count), 1),
        "seconds": round(duration, 3),
        "messages_per_s": round(acked / duration, 1),
        "values_per_s": round(acked * args.metrics / duration, 1),
        "publish_acked_per_s": round(acked / max(last_ack - first_publish, 1e-9), 1),
        "drain_after_last_ack_s": round(end - last_ack, 3),
        "stored_after_phase": stored,
        "expected_after_phase": ctx.expected,
        "cpu_cores": cpu,
        "cpu_us_per_message": cpu_per_message(cpu, acked) if cpu else None,
    }
    if ctx.sampler is not None:
        ctx.sampler.wait_poll_after(end)
        sampled = set(ctx.sampler.assets)
        phase["latency"] = ctx.sampler.summary(
            int(first_publish * 1000) - 1, int(last_publish * 1000) + 1
        )
        phase["latency"]["acked_of_sampled_assets"] = sum(
            1 for r in results for n in r.asset_numbers if ctx.assets[n][1] in sampled
        )
    lat = phase.get("latency") or {}
    note(
        f"{name}: {phase['messages_per_s']:,.0f} msg/s end to end, "
        f"p99 {lat.get('p99_s')} s, {stored:,}/{ctx.expected:,} rows"
    )
    return phase


def spawn_pool(processes: int) -> multiprocessing.pool.Pool:
    pool = multiprocessing.get_context("spawn").Pool(processes)
    pool.map(_noop, range(processes), chunksize=1)  # workers imported and ready
    return pool


def broker_pid(broker: LocalBroker) -> int | None:
    process = getattr(broker, "_process", None)
    pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


# -- the throughput runs ---------------------------------------------------------------------


def throughput_run(args: argparse.Namespace, processes: int, folder: Path) -> dict[str, Any]:
    assets = make_assets(args.assets)
    note(f"run with {processes} ingester process(es): creating the database")
    url = create_database(args.database_url)
    database = str(conninfo_to_dict(url)["dbname"])
    try:
        register(url, assets)
        with LocalBroker() as broker, spawn_pool(args.publishers) as pool:
            ingesters = Ingesters(
                url, broker, processes, folder / f"ingest-{processes}.log", args.ingest_env
            ).start()
            sampler: LatencySampler | None = None
            try:
                ready_s = wait_ready(url, broker, ingesters)
                note(f"ingester ready after {ready_s:.1f} s (pids {ingesters.pids()})")
                step = max(1, len(assets) // max(1, args.latency_assets))
                sampled = [a for _, a in assets[::step]][: args.latency_assets]
                sampler = LatencySampler(url, sampled, args.poll_ms / 1000)
                sampler.start()
                ctx = RunContext(
                    args=args,
                    url=url,
                    database=database,
                    broker=broker,
                    ingesters=ingesters,
                    pool=pool,
                    assets=assets,
                    state=PublishState([0] * len(assets), [0] * len(assets)),
                    sampler=sampler,
                )
                phases = [run_phase(ctx, "warm-up", len(assets), 0, args.publishers)]
                ctx.cpu = CpuMeter(url, database, ingesters, broker_pid(broker))
                time.sleep(1)
                phases.append(run_phase(ctx, "saturated", args.messages, 0, args.publishers))
                if args.rate > 0:
                    time.sleep(1)
                    phases.append(
                        run_phase(ctx, "paced", args.messages, args.rate, args.publishers)
                    )
                sampler.stop()
                note("checking loss and duplicates")
                check = verify(url, [a for _, a in assets], ctx.results)
                effective = ingesters.settings
            finally:
                if sampler is not None and sampler.is_alive():
                    sampler.stop()
                code = ingesters.stop()
            log = ingesters.log_lines()
    finally:
        drop_database(url)
    return {
        "ingesters": processes,
        "ingester_settings": {
            "batch_size": effective.ingest_batch_size,
            "batch_age_ms": effective.ingest_batch_age_ms,
            "receive_maximum": effective.mqtt_receive_maximum,
        },
        "latency_assets": sampled,
        "sampler_error": sampler.error if sampler else "",
        "phases": phases,
        "check": check,
        "ingester_exit_code": code,
        "ingester_log_lines": len(log),
        "ingester_log_tail": log[-5:],
    }


# -- the outage run --------------------------------------------------------------------------


class TcpProxy:
    """A threaded TCP proxy; ``stop()`` is an outage (listener closed, links cut both ways)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.host = "127.0.0.1"
        self.port = free_port()
        self._running = threading.Event()
        self._lock = threading.Lock()
        self._links: list[socket.socket] = []
        self._acceptor: threading.Thread | None = None

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._running.set()
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener,), name="proxy-accept", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._running.clear()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
            self._acceptor = None
        with self._lock:
            links, self._links = self._links, []
        for sock in links:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def url(self, url: str) -> str:
        params = conninfo_to_dict(url)
        params.update(host=self.host, port=str(self.port))
        params.pop("hostaddr", None)
        return make_conninfo("", **params)

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._running.is_set():
                if not select.select([listener], [], [], 0.05)[0]:
                    continue
                client, _ = listener.accept()
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                with self._lock:
                    self._links += [client, upstream]
                threading.Thread(
                    target=self._pump, args=(client, upstream), name="proxy-link", daemon=True
                ).start()

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                for source in select.select([client, upstream], [], [], 0.5)[0]:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class Poller(threading.Thread):
    """Calls ``probe`` every ``period_s`` and keeps (wall time, value)."""

    def __init__(self, period_s: float, probe: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.period_s = period_s
        self.probe = probe
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.time(), self.probe()))
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def outage_run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    assets = make_assets(args.assets)
    params = conninfo_to_dict(args.database_url)
    target = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    pre_s, post_s = 5.0, 25.0
    total_s = pre_s + args.outage_seconds + post_s
    note(
        f"outage run: {args.outage_rate:,} msg/s for {total_s:.0f} s, database cut for "
        f"{args.outage_seconds:.0f} s after {pre_s:.0f} s"
    )
    url = create_database(args.database_url)
    database = str(conninfo_to_dict(url)["dbname"])
    proxy = TcpProxy(target).start()
    try:
        register(url, assets)
        with LocalBroker() as broker, spawn_pool(args.publishers) as pool:
            ingesters = Ingesters(
                proxy.url(url), broker, 1, folder / "ingest-outage.log", args.ingest_env
            ).start()
            try:
                wait_ready(url, broker, ingesters)
                pid = ingesters.pids()[0]
                ctx = RunContext(
                    args=args,
                    url=url,
                    database=database,
                    broker=broker,
                    ingesters=ingesters,
                    pool=pool,
                    assets=assets,
                    state=PublishState([0] * len(assets), [0] * len(assets)),
                )
                run_phase(ctx, "outage warm-up", len(assets), 0, args.publishers)
                rss = Poller(0.2, lambda: rss_kb(pid))
                stored_conn = psycopg.connect(url, autocommit=True)

                def count_rows() -> int:
                    row = stored_conn.execute("SELECT count(*) FROM telemetry").fetchone()
                    return int(row[0]) if row else 0

                rows = Poller(0.5, count_rows)
                rss.start()
                rows.start()
                marks: dict[str, float] = {}

                def cut(start_at: float) -> None:
                    time.sleep(max(0.0, start_at + pre_s - time.time()))
                    note("outage: database unreachable (proxy closed)")
                    marks["down"] = time.time()
                    proxy.stop()
                    time.sleep(args.outage_seconds)
                    proxy.start()
                    marks["up"] = time.time()
                    note("outage: database reachable again")

                phase = run_phase(
                    ctx,
                    "steady with outage",
                    int(args.outage_rate * total_s),
                    args.outage_rate,
                    1,
                    during=cut,
                )
                drained = time.time()
                time.sleep(2)
                rss.stop()
                rows.stop()
                stored_conn.close()
                check = verify(url, [a for _, a in assets], ctx.results)
            finally:
                code = ingesters.stop()
            log = ingesters.log_lines()
    finally:
        proxy.stop()
        drop_database(url)
    down, up = marks["down"], marks["up"]

    def peak(lo: float, hi: float) -> float | None:
        values = [kb for t, kb in rss.samples if lo <= t < hi]
        return round(max(values) / 1024, 1) if values else None

    first_commit_after = next(
        (
            t
            for (t, n), (_, prev) in zip(rows.samples[1:], rows.samples, strict=False)
            if t > up and n > prev
        ),
        None,
    )
    stuck = [n for t, n in rows.samples if down + 1 <= t < up]
    origin = rss.samples[0][0] if rss.samples else down
    timeline = [
        {"t_s": round(t - origin, 1), "rss_mb": round(kb / 1024, 1)} for t, kb in rss.samples[::5]
    ]
    return {
        "outage_seconds": args.outage_seconds,
        "rate": args.outage_rate,
        "rss_mb_at_start": round(rss.samples[0][1] / 1024, 1) if rss.samples else None,
        "rss_peak_mb_before": peak(0, down),
        "rss_peak_mb_during": peak(down, up),
        "rss_peak_mb_after": peak(up, math.inf),
        "rss_mb_at_end": round(rss.samples[-1][1] / 1024, 1) if rss.samples else None,
        "rows_committed_during_outage": (max(stuck) - min(stuck)) if stuck else None,
        "first_commit_after_recovery_s": _round(first_commit_after - up)
        if first_commit_after
        else None,
        "all_committed_after_recovery_s": round(drained - up, 1),
        "outage_from_s": round(down - origin, 1),
        "outage_to_s": round(up - origin, 1),
        "rss_timeline": timeline,
        "rows_timeline": [{"t_s": round(t - origin, 1), "rows": n} for t, n in rows.samples[::2]],
        "phase": phase,
        "check": check,
        "ingester_exit_code": code,
        "ingester_warnings": sum(1 for line in log if "WARNING" in line),
        "ingester_log_tail": log[-3:],
    }


# -- storage layout micro-benchmark ----------------------------------------------------------


@dataclass(slots=True)
class Sample:
    asset_id: str
    time: dt.datetime
    received_at: dt.datetime
    seq: int
    values: tuple[float, ...]


def checkpoint(url: str) -> None:
    """Start each layout with no dirty buffers of the previous one (needs superuser or
    pg_checkpoint; skipped without)."""
    with (
        psycopg.connect(url, autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


def layout_run(args: argparse.Namespace) -> dict[str, Any]:
    names = metric_names(args.metrics)
    count = args.layout_messages
    note(f"layout: generating {count:,} messages of {len(names)} metrics")
    rng = random.Random(7)
    assets = [a for _, a in make_assets(args.assets)]
    machines = [Machine.new(rng) for _ in assets]
    start = dt.datetime.now(UTC) - dt.timedelta(days=1)
    samples = [
        Sample(
            assets[i % len(assets)],
            start + dt.timedelta(seconds=i // len(assets)),
            start + dt.timedelta(seconds=i // len(assets), milliseconds=300),
            i // len(assets) + 1,
            machines[i % len(assets)].values(rng, len(names)),
        )
        for i in range(count)
    ]
    url = create_database(args.database_url)
    results = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE bench_narrow (time timestamptz NOT NULL, asset_id text NOT NULL,"
                " metric text NOT NULL, value double precision NOT NULL,"
                " PRIMARY KEY (asset_id, metric, time))"
            )
            columns = sql.SQL(", ").join(
                sql.SQL("{} double precision").format(sql.Identifier(n)) for n in names
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE bench_wide (asset_id text NOT NULL, time timestamptz NOT NULL,"
                    " received_at timestamptz NOT NULL, seq bigint, {},"
                    " PRIMARY KEY (asset_id, time))"
                ).format(columns)
            )
        batch = args.layout_batch
        wide_cols = sql.SQL(", ").join(map(sql.Identifier, names))

        def jsonb_rows(chunk: Sequence[Sample]) -> Iterator[tuple[object, ...]]:
            for s in chunk:
                yield (
                    s.asset_id,
                    s.time,
                    s.received_at,
                    s.seq,
                    dict(zip(names, s.values, strict=True)),
                )

        def narrow_rows(chunk: Sequence[Sample]) -> Iterator[tuple[object, ...]]:
            for s in chunk:
                for name, value in zip(names, s.values, strict=True):
                    yield (s.time, s.asset_id, name, value)

        def wide_rows(chunk: Sequence[Sample]) -> Iterator[tuple[object, ...]]:
            for s in chunk:
                yield (s.asset_id, s.time, s.received_at, s.seq, *s.values)

        layouts: list[
            tuple[str, str, sql.Composable, list[str], Callable[..., Iterator[tuple[object, ...]]]]
        ] = [
            (
                "telemetry: row per message, jsonb metrics (the project's table)",
                "telemetry",
                sql.SQL("COPY telemetry (asset_id, time, received_at, seq, metrics)"),
                ["text", "timestamptz", "timestamptz", "int8", "jsonb"],
                jsonb_rows,
            ),
            (
                "narrow: row per metric value, PK (asset_id, metric, time)",
                "bench_narrow",
                sql.SQL("COPY bench_narrow (time, asset_id, metric, value)"),
                ["timestamptz", "text", "text", "float8"],
                narrow_rows,
            ),
            (
                "wide (reference): row per message, a float column per metric",
                "bench_wide",
                sql.SQL("COPY bench_wide (asset_id, time, received_at, seq, {})").format(wide_cols),
                ["text", "timestamptz", "timestamptz", "int8"] + ["float8"] * len(names),
                wide_rows,
            ),
        ]
        with psycopg.connect(url) as conn:
            for label, table, copy_sql, types, rows in layouts:
                checkpoint(url)
                note(f"layout: {label}")
                written = 0
                started = time.perf_counter()
                for i in range(0, count, batch):
                    with (
                        conn.transaction(),
                        conn.cursor() as cur,
                        cur.copy(copy_sql + sql.SQL(" FROM STDIN (FORMAT BINARY)")) as copy,
                    ):
                        copy.set_types(types)
                        for row in rows(samples[i : i + batch]):
                            copy.write_row(row)
                            written += 1
                seconds = time.perf_counter() - started
                size = (table_bytes(conn, table),)  # a hypertable's chunks, not its parent
                conn.commit()
                results.append(
                    {
                        "layout": label,
                        "table": table,
                        "messages": count,
                        "rows": written,
                        "seconds": round(seconds, 3),
                        "messages_per_s": round(count / seconds, 1),
                        "values_per_s": round(count * len(names) / seconds, 1),
                        "rows_per_s": round(written / seconds, 1),
                        "size_mb": round(int(size[0]) / 1e6, 1) if size else None,
                    }
                )
    finally:
        drop_database(url)
    return {"batch_messages": args.layout_batch, "results": results}


# -- output ----------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ",.0f", missing: str = "-") -> str:
    if value is None:
        return missing
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def render(report: dict[str, Any]) -> str:
    env = report["environment"]
    cfg = report["config"]
    out: list[str] = []
    out.append(
        f"basewatch ingest benchmark — {env['cores']} cores, PostgreSQL {env['postgres']} "
        f"({env['timescale']}), {env['mosquitto']}, paho-mqtt {env['paho']}, "
        f"Python {env['python']}"
    )
    out.append(
        f"load average at start {env['loadavg_start']}, at end {env.get('loadavg_end', '-')} "
        "(other work on this machine shares the 2 cores)"
    )
    out.append(
        f"{cfg['messages']:,} messages × {cfg['metrics']} metrics per phase, {cfg['assets']} "
        f"assets, {cfg['publishers']} publisher processes (paho, QoS 1, only PUBACKed messages "
        "counted)"
    )
    t = report["targets"]
    for run in report.get("runs", []):
        s = run["ingester_settings"]
        out.append("")
        out.append(
            f"== {run['ingesters']} ingester process(es)  (batch {s['batch_size']} messages / "
            f"{s['batch_age_ms']} ms, receive maximum {s['receive_maximum']})"
        )
        header = (
            f"{'phase':<10} {'acked':>8} {'seconds':>8} {'msg/s':>8} {'values/s':>9} "
            f"{'pub acked/s':>11} {'drain s':>7} {'p50 s':>6} {'p90 s':>6} {'p99 s':>6} "
            f"{'max s':>6} {'samples':>7} {'poll ms avg/max':>15}"
        )
        out.append(header)
        for ph in run["phases"]:
            lat = ph.get("latency") or {}
            out.append(
                f"{ph['phase']:<10} {ph['acked']:>8,} {ph['seconds']:>8.2f} "
                f"{ph['messages_per_s']:>8,.0f} {ph['values_per_s']:>9,.0f} "
                f"{ph['publish_acked_per_s']:>11,.0f} {ph['drain_after_last_ack_s']:>7.2f} "
                f"{_fmt(lat.get('p50_s'), '.3f'):>6} {_fmt(lat.get('p90_s'), '.3f'):>6} "
                f"{_fmt(lat.get('p99_s'), '.3f'):>6} {_fmt(lat.get('max_s'), '.3f'):>6} "
                f"{_fmt(lat.get('samples')):>7} "
                f"{_fmt(lat.get('poll_period_mean_ms'), '.0f') + '/':>8}"
                f"{_fmt(lat.get('poll_period_max_ms'), '.0f'):<7}"
            )
        c = run["check"]
        out.append(
            f"check: acked {c['acked']:,}, stored {c['stored_rows']:,} rows / "
            f"{c['stored_values']:,} values; lost {c['lost']}, duplicated {c['duplicated']} "
            f"(same seq twice {c['duplicated_seq']}), stored but not acked "
            f"{c['stored_not_acked']}, dead letters {c['dead_letters']}; ingester exit "
            f"{run['ingester_exit_code']}, {run['ingester_log_lines']} log lines at WARNING+"
        )
        if run["sampler_error"]:
            out.append(f"latency sampler failed: {run['sampler_error']}")
        for ph in run["phases"]:
            cpu = ph.get("cpu_cores")
            per = ph.get("cpu_us_per_message")
            if cpu and per and ph["phase"] != "warm-up":
                parts = ", ".join(
                    f"{k} {v:.2f}"
                    for k, v in cpu.items()
                    if k not in {"machine_cores", "wall_s", "machine_busy"}
                )
                out.append(
                    f"cores used in {ph['phase']} (busy {cpu['machine_busy']:.2f} of "
                    f"{cpu['machine_cores']:.0f}): {parts}"
                )
                out.append(
                    f"  CPU µs per message: ingester {per['ingester_python']:.0f}, its "
                    f"PostgreSQL backends {per['postgres_ingester_backends']:.0f}, mosquitto "
                    f"{per['mosquitto']:.0f}, publishers {per['publishers']:.0f}"
                )
            if cpu and per and ph["phase"] == "saturated":
                out.append(
                    "  → ceilings (CPU per message only; batches are full when saturated): one "
                    "ingester on a free core "
                    f"{per['ceiling_one_ingester_on_one_free_core_msg_s']:,} msg/s; ingester + "
                    "PostgreSQL + broker on 2 free cores "
                    f"{per['ceiling_server_parts_on_two_free_cores_msg_s']:,} msg/s, with the "
                    f"publishers too {per['ceiling_with_publishers_on_two_free_cores_msg_s']:,} "
                    "msg/s"
                )
        if run["ingesters"] == 1:
            sat = next((p for p in run["phases"] if p["phase"] == "saturated"), None)
            paced = next((p for p in run["phases"] if p["phase"] == "paced"), None)
            if sat:
                out.append(
                    f"targets (1 ingester): ≥ {t['messages_per_s']:,} msg/s → "
                    f"{sat['messages_per_s']:,.0f}; ≥ {t['values_per_s']:,} values/s → "
                    f"{sat['values_per_s']:,.0f}; ≥ {t['node_red_x5_values_per_s']:,} values/s "
                    f"(5 × Node-RED {t['node_red_rows_per_s']:,} rows/s) → "
                    f"{sat['values_per_s'] / t['node_red_rows_per_s']:.1f} × Node-RED"
                )
            if paced:
                p99 = (paced.get("latency") or {}).get("p99_s")
                out.append(
                    f"targets: p99 < {t['p99_s']} s at {paced['rate_asked']:,.0f} msg/s → "
                    f"{_fmt(p99, '.3f')} s; lost 0 → {c['lost']}; duplicated 0 → "
                    f"{c['duplicated']}"
                )
    out.append("")
    out.append(
        "latency = first poll that sees the row − device ts (epoch ms at publish); it "
        "over-estimates commit latency by at most one poll period (column 'poll ms'); "
        f"sampled on {cfg['latency_assets']} of {cfg['assets']} assets. 'drain s' = last "
        "commit − last PUBACK. 'saturated' latency includes the broker backlog."
    )
    outage = report.get("outage")
    if outage:
        c = outage["check"]
        out.append("")
        out.append(
            f"== database outage of {outage['outage_seconds']:.0f} s at "
            f"{outage['rate']:,} msg/s (1 ingester, PostgreSQL behind a TCP proxy that is "
            "closed)"
        )
        out.append(
            f"ingester RSS MB: start {_fmt(outage['rss_mb_at_start'], '.1f')}, peak before "
            f"{_fmt(outage['rss_peak_mb_before'], '.1f')}, peak during "
            f"{_fmt(outage['rss_peak_mb_during'], '.1f')}, peak after "
            f"{_fmt(outage['rss_peak_mb_after'], '.1f')}, end "
            f"{_fmt(outage['rss_mb_at_end'], '.1f')}"
        )
        out.append(
            f"rows committed while down {_fmt(outage['rows_committed_during_outage'])}; first "
            f"commit {_fmt(outage['first_commit_after_recovery_s'], '.1f')} s after recovery, "
            f"all committed {_fmt(outage['all_committed_after_recovery_s'], '.1f')} s after; "
            f"acked {c['acked']:,}, stored {c['stored_rows']:,}, lost {c['lost']}, duplicated "
            f"{c['duplicated']}, dead letters {c['dead_letters']}; ingester warnings "
            f"{outage['ingester_warnings']}, exit {outage['ingester_exit_code']}"
        )
    layout = report.get("layout")
    if layout:
        out.append("")
        out.append(
            f"== storage layout: binary COPY of {cfg['layout_messages']:,} messages × "
            f"{cfg['metrics']} metrics, {layout['batch_messages']:,} messages per transaction, "
            "primary key included"
        )
        out.append(
            f"{'layout':<66} {'msg/s':>9} {'values/s':>10} {'rows/s':>9} {'seconds':>8} {'MB':>6}"
        )
        for r in layout["results"]:
            out.append(
                f"{r['layout']:<66} {r['messages_per_s']:>9,.0f} {r['values_per_s']:>10,.0f} "
                f"{r['rows_per_s']:>9,.0f} {r['seconds']:>8.2f} {_fmt(r['size_mb'], '.1f'):>6}"
            )
    return "\n".join(out)


# -- main ------------------------------------------------------------------------------------


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("BASEWATCH_"):
        raise argparse.ArgumentTypeError("expected BASEWATCH_NAME=value")
    return name, value


def _int_list(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=100_000, help="messages per phase")
    parser.add_argument("--assets", type=int, default=200, help="registered assets publishing")
    parser.add_argument("--publishers", type=int, default=3, help="publisher processes")
    parser.add_argument("--metrics", type=int, default=15, help="metrics per message")
    parser.add_argument(
        "--ingesters",
        type=_int_list,
        default="1,2",
        help="ingester processes per run (none: skip these runs)",
    )
    parser.add_argument(
        "--rate", type=float, default=TARGET_MSG_S, help="msg/s of the paced phase (0: skip)"
    )
    parser.add_argument(
        "--latency-assets", type=int, default=10, help="assets whose rows the sampler follows"
    )
    parser.add_argument("--poll-ms", type=float, default=20, help="latency sampler period")
    parser.add_argument("--outage-seconds", type=float, default=30, help="0: skip")
    parser.add_argument("--outage-rate", type=int, default=2000, help="msg/s during the outage run")
    parser.add_argument(
        "--layout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="storage layout micro-benchmark",
    )
    parser.add_argument(
        "--layout-messages", type=int, default=100_000, help="messages of the layout benchmark"
    )
    parser.add_argument("--layout-batch", type=int, default=2000, help="messages per COPY")
    parser.add_argument(
        "--ingest-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="BASEWATCH_X=V",
        help="extra setting for the ingester (repeatable)",
    )
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="server; the bench creates and drops its own databases bw_bench_<random>",
    )
    parser.add_argument("--log-dir", default="", help="keep the ingester logs in this folder")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    args.ingest_env = dict(args.ingest_env)
    if args.messages < 1 or args.assets < 1 or args.publishers < 1 or args.metrics < 1:
        parser.error("--messages, --assets, --publishers and --metrics must be positive")
    return args


def environment(server: str) -> dict[str, Any]:
    with psycopg.connect(server, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        ts = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    return {
        "cores": os.cpu_count(),
        "postgres": str(row[0]).split()[0] if row else "?",
        "timescale": "TimescaleDB available" if ts and ts[0] else "plain, no TimescaleDB",
        "mosquitto": version_of(
            [
                shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin:/usr/bin") or "mosquitto",
                "-h",
            ]
        ),
        "paho": paho.mqtt.__version__,
        "python": sys.version.split()[0],
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "environment": environment(args.database_url),
        "config": {
            "messages": args.messages,
            "assets": args.assets,
            "publishers": args.publishers,
            "metrics": args.metrics,
            "ingesters": args.ingesters,
            "rate": args.rate,
            "latency_assets": args.latency_assets,
            "poll_ms": args.poll_ms,
            "outage_seconds": args.outage_seconds,
            "outage_rate": args.outage_rate,
            "layout_messages": args.layout_messages,
            "ingest_env": args.ingest_env,
        },
        "targets": {
            "messages_per_s": TARGET_MSG_S,
            "values_per_s": TARGET_VALUES_S,
            "p99_s": TARGET_P99_S,
            "lost": 0,
            "duplicated": 0,
            "node_red_rows_per_s": NODE_RED_ROWS_S,
            "node_red_x5_values_per_s": NODE_RED_ROWS_S * NODE_RED_FACTOR,
        },
        "notes": [
            "latency over-estimates commit latency by at most one sampler poll period",
            f"latency sampled on {args.latency_assets} of {args.assets} assets",
            "values = metric values (messages × metrics), the 'rows' of a narrow layout",
        ],
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bw-bench-ingest-") as tmp:
        folder = Path(args.log_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for processes in args.ingesters:
            report["runs"].append(throughput_run(args, processes, folder))
        if args.outage_seconds > 0:
            report["outage"] = outage_run(args, folder)
    if args.layout:
        report["layout"] = layout_run(args)
    report["environment"]["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
