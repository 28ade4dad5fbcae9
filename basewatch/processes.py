"""Running ingester processes: one in this process, or several children on the shared
subscription, each with its own stable MQTT client id (so each keeps its persistent session).

Readiness (``basewatch ingest --ready-file PATH``): an ingester writes PATH once the broker has
confirmed its subscription (the SUBACK), and again after each re-subscription, so that a script
publishes only when the messages have a subscriber to be queued for (before that the broker
drops them: "no matching subscribers"). The file is written whole (a rename) and holds one
JSON object (client id, pid, time); it is removed when the ingester starts and when it stops.
With several processes, process n writes ``PATH.n`` and the supervisor writes PATH once every
process has written its own.

Metrics (``BASEWATCH_METRICS_PORT``, 0: off): ingester process n serves Prometheus metrics on
that port + n (``basewatch.metrics``); the supervisor of several processes serves none.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import psycopg

from basewatch.wiring import consumer_config, dead_letter_policy
from core.db import connect
from core.errors import ConfigError, StorageUnavailable
from core.settings import Settings
from ingest.consumer import Ingester
from ingest.store import BatchWriter

log = logging.getLogger(__name__)


def check_schema(settings: Settings) -> None:
    """Fail fast on an unmigrated database; a database that is down is only a warning (the
    ingester waits for it without acking)."""
    try:
        with connect(settings.database_url) as conn:
            row = conn.execute("SELECT to_regclass('telemetry') IS NOT NULL").fetchone()
    except StorageUnavailable as exc:
        log.warning("%s; starting anyway, messages stay unacked until it is back", exc)
        return
    except psycopg.Error as exc:
        raise StorageUnavailable(f"database check failed: {exc}") from exc
    if not (row and row[0]):
        raise ConfigError(
            "BASEWATCH_DATABASE_URL", "the database is not migrated; run basewatch db migrate"
        )


def write_ready_file(path: Path, document: dict[str, object]) -> None:
    """Write ``path`` whole: a reader sees the old file, no file, or the complete new one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document) + "\n")
    partial.replace(path)


def _ready_marker(path: Path, document: dict[str, object]) -> None:
    try:
        write_ready_file(path, document | {"at": dt.datetime.now(dt.UTC).isoformat()})
    except OSError as exc:  # a marker must never stop ingest
        log.warning("cannot write the ready file %s: %s", path, exc)


def run_ingester(settings: Settings, index: int = 0, ready_file: Path | None = None) -> int:
    """Run one ingester in this process until SIGTERM/SIGINT."""
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    check_schema(settings)
    config = consumer_config(settings, index)
    writer = BatchWriter(
        settings.database_url,
        auto_register=settings.auto_register,
        application_name=f"basewatch-ingest-{index}",
        dead_letters=dead_letter_policy(settings),
        write_timeout_s=settings.ingest_write_timeout_s,
    )
    ingester = Ingester(config, writer)
    ingester.install_signal_handlers()
    metrics = None
    if settings.metrics_port:
        from basewatch.metrics import serve_ingest_metrics

        try:
            metrics = serve_ingest_metrics(
                ingester, settings.metrics_host, settings.metrics_port + index
            )
        except BaseException:
            writer.close()
            raise
    if ready_file is not None:
        marker = ready_file
        document: dict[str, object] = {"client_id": config.client_id, "pid": os.getpid()}
        ingester.on_subscribed = lambda: _ready_marker(marker, document)
    log.info(
        "ingester %s subscribing to %s/+/+/{telemetry,event} on %s:%d (broker user %s)",
        config.client_id,
        settings.topic_prefix,
        settings.mqtt_host,
        settings.mqtt_port,
        config.username or "-",
    )
    try:
        ingester.run()
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
        if metrics is not None:
            metrics.close()
    return 0


def run_ingesters(
    settings: Settings, *, processes: int, index: int | None, ready_file: Path | None = None
) -> int:
    """One ingester here when ``processes`` is 1 (or this is a child), else a supervisor."""
    if index is not None:
        return run_ingester(settings, index, ready_file)
    if processes == 1:
        return run_ingester(settings, 0, ready_file)
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    if settings.metrics_port and settings.metrics_port + processes - 1 > 65535:
        raise ConfigError(
            "BASEWATCH_METRICS_PORT",
            f"process n serves on the port + n: {settings.metrics_port} + {processes - 1} "
            "is past 65535",
        )
    check_schema(settings)
    child_ready = [
        ready_file.with_name(f"{ready_file.name}.{i}") if ready_file else None
        for i in range(processes)
    ]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "basewatch", "ingest", "--index", str(i)]
            + (["--ready-file", str(child_ready[i])] if child_ready[i] else []),
            env=dict(os.environ),
        )
        for i in range(processes)
    ]
    log.info("started %d ingester processes", processes)
    try:
        return _supervise(children, ready_file, child_ready)
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)


def _supervise(
    children: list[subprocess.Popen[bytes]],
    ready_file: Path | None,
    child_ready: list[Path | None],
) -> int:

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes: list[int] = []
    ready = False
    while len(codes) < len(children):
        if ready_file is not None and not ready and all(p and p.exists() for p in child_ready):
            _ready_marker(ready_file, {"processes": len(children), "pid": os.getpid()})
            ready = True
        codes = [c for c in (child.poll() for child in children) if c is not None]
        if codes and any(code != 0 for code in codes):
            forward(signal.SIGTERM, None)  # one failed: stop the others cleanly, report it
            for child in children:
                child.wait()
            return 1
        time.sleep(0.2)
    return 0
