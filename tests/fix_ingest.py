"""Running the real ``basewatch ingest`` command as a child process, and registering assets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import psycopg

from basewatch.localbroker import LocalBroker


class IngesterProcess:
    """``basewatch ingest`` against a test database and broker, with its own client id."""

    def __init__(
        self,
        db_url: str,
        broker: LocalBroker,
        prefix: str,
        *,
        client_id: str | None = None,
        extra_env: dict[str, str] | None = None,
        processes: int = 1,
        log_path: Path | None = None,
    ) -> None:
        self.env = dict(
            os.environ,
            BASEWATCH_DATABASE_URL=db_url,
            BASEWATCH_MQTT_HOST=broker.host,
            BASEWATCH_MQTT_PORT=str(broker.port),
            BASEWATCH_TOPIC_PREFIX=prefix,
            BASEWATCH_MQTT_CLIENT_ID=client_id or f"test-ingest-{uuid.uuid4().hex[:8]}",
            BASEWATCH_MQTT_SHARE_GROUP=f"g{uuid.uuid4().hex[:8]}",
            BASEWATCH_INGEST_BATCH_AGE_MS="50",
            BASEWATCH_LOG_LEVEL="INFO",
        )
        # extra_env overrides the defaults above (a share group common to several
        # processes, another broker port, a log level); passing it as keyword arguments to
        # dict() would raise TypeError on any of those keys
        self.env.update(extra_env or {})
        self.processes = processes
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_file = Path(tempfile.gettempdir()) / f"bw-ready-{uuid.uuid4().hex}"

    def start(self, ready_timeout_s: float = 30.0) -> IngesterProcess:
        """Start it and wait until it is subscribed: ``--ready-file`` appears once the broker
        confirmed the subscription (of every process), not after a guessed delay."""
        args = [sys.executable, "-m", "basewatch", "ingest", "--ready-file", str(self.ready_file)]
        if self.processes > 1:
            args += ["--processes", str(self.processes)]
        self.ready_file.unlink(missing_ok=True)
        if self.log_path is None:
            self.process = subprocess.Popen(
                args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        else:
            # the child keeps its own descriptor; ours is closed (ResourceWarning otherwise)
            with self.log_path.open("ab") as out:
                self.process = subprocess.Popen(args, env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + ready_timeout_s
        while not self.ready_file.exists():
            assert self.process.poll() is None, "ingester exited at start"
            assert time.monotonic() < deadline, f"ingester not subscribed in {ready_timeout_s} s"
            time.sleep(0.02)
        return self

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> IngesterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()


def register(db_url: str, assets: Iterable[tuple[str, str]]) -> None:
    """Register (account_id, asset_id) pairs."""
    with psycopg.connect(db_url) as conn:
        for account_id, asset_id in assets:
            conn.execute(
                "INSERT INTO accounts (account_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (account_id, account_id),
            )
            conn.execute(
                "INSERT INTO assets (asset_id, account_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (asset_id, account_id),
            )


def count(db_url: str, query: str, params: tuple[object, ...] = ()) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query.encode(), params).fetchone()
        return int(row[0]) if row else 0


def wait_for(
    db_url: str, query: str, expected: int, timeout_s: float = 60, params: tuple[object, ...] = ()
) -> int:
    """Poll ``query`` (a count) until it reaches ``expected``; return the last value."""
    deadline = time.monotonic() + timeout_s
    value = -1
    while time.monotonic() < deadline:
        value = count(db_url, query, params)
        if value >= expected:
            return value
        time.sleep(0.2)
    return value


def wait_subscribed(
    db_url: str,
    broker: LocalBroker,
    prefix: str,
    probe: tuple[str, str],
    timeout_s: float = 20,
) -> None:
    """Publish probe readings for ``probe`` (a registered (account_id, asset_id) that the test
    counts nowhere) until one is stored: an ingester is then connected and subscribed.

    ``IngesterProcess.start`` only sleeps; a message published before the ingester's SUBSCRIBE
    reached the broker is dropped by the broker ("no matching subscribers"), which on a busy
    machine loses the first messages of a test. After a broker restart the same holds until
    the ingester subscribes again (Mosquitto 2.0 does not persist shared subscriptions)."""
    from simulator.publish import Publisher

    account_id, asset_id = probe
    topic = f"{prefix}/{account_id}/{asset_id}/telemetry"
    query = "SELECT count(*) FROM telemetry WHERE asset_id = %s"
    before = count(db_url, query, (asset_id,))
    deadline = time.monotonic() + timeout_s
    with Publisher(broker.host, broker.port) as pub:
        while time.monotonic() < deadline:
            ts_ms = int(time.time() * 1000) - 86_400_000  # unique per attempt, a day ago
            pub.publish(topic, reading(ts_ms, 0, probe=1.0))
            if wait_for(db_url, query, before + 1, timeout_s=0.5, params=(asset_id,)) > before:
                return
    raise AssertionError(f"no ingester subscribed to {prefix}/# within {timeout_s} s")


def reading(ts_ms: int, seq: int, **metrics: float) -> bytes:
    return json.dumps({"ts": ts_ms, "seq": seq, "metrics": metrics}).encode()
