"""Operations: Prometheus metrics of the three services, and the API's readiness check.

Every metric is defined here, in the composition root, with ``prometheus_client``; the
packages below know nothing of Prometheus. ingest exposes what it counts anyway
(``ingest.consumer.Counters``, the pending buffer's size, an ``on_batch`` hook called with each
committed batch's :class:`~ingest.store.WriteStats` and write time) and signals exposes the
outbox backlog as a query (``signals.delivery.backlog_per_channel``); this module turns them
into metrics. So the import contracts stay as they are (ingest never imports basewatch) and a
test of ingest needs no metrics library.

Decisions:

- **One registry per served thing**, never prometheus_client's global one: tests run several
  APIs, ingesters' collectors and schedulers in one process, and the process and platform
  collectors of the default registry are left out (they are the node exporter's business).
- **Counters as custom collectors over running totals.** The ingester's totals live in its
  ``Counters`` and are read at scrape time (:class:`IngestCollector`), so the hot path pays
  nothing for metrics but one histogram observation per batch. The reads come from the
  scrape thread while the ingester writes them: each is one attribute read (atomic in
  CPython); the dead-letter kinds are a dict the ingester replaces whole.
- **Several ingester processes: one port each.** Process n of ``basewatch ingest --processes
  N`` serves on ``BASEWATCH_METRICS_PORT + n``; the supervisor serves nothing. Prometheus
  scrapes every port (one target each) and sums over ``instance``. prometheus_client's
  multiprocess mode was the alternative: it needs a shared directory cleaned between runs,
  does not support custom collectors, and would hide a stuck process in a sum.
- **Off by default** (``BASEWATCH_METRICS_PORT=0``): the ingester and the scheduler open no
  port unless asked, so two services on one host never collide on a default. They listen on
  ``BASEWATCH_METRICS_HOST`` (default 127.0.0.1; the compose file sets 0.0.0.0 inside its
  network). These endpoints carry counts only: no token, no secrets. A port that is taken
  stops the process at start with one line (exit 1), rather than running unobserved.
- **The outbox backlog is read from the database at scrape time** (``basewatch_outbox_backlog``
  and the age of the oldest waiting message), on a connection of its own bounded to
  :data:`OUTBOX_TIMEOUT_S` for connecting and the same again for the query, so a scrape never
  hangs on a database that is down: it then answers without those two families and with
  ``basewatch_outbox_backlog_up 0``. Read at scrape time it is current even while the
  delivery job is stuck, which is when it matters. Every scheduler replica reports it (the
  database's figure, the same on each): alert on ``max``, not ``sum``.
- **API: the route pattern, never the path.** ``route`` is the pattern with its parameters
  named (``/alerts/{id}/ack``), ``none`` for a path no route matches, so alert and account ids
  do not make new series. Requests the standard library refuses before routing (a garbled
  request line) and connections answered 503 by the accept thread (counted in
  ``basewatch_api_connections_refused_total``) never reach a route.
- ``/readyz`` is ready when the database answers and no migration this code knows is missing
  from ``schema_migrations`` (a migration the database has and this code does not - a newer
  schema - does not make it unready).

Names follow the Prometheus conventions: ``basewatch_`` prefix, base units (``_seconds``,
``_bytes``), ``_total`` on counters; ``tests/basewatch/test_metrics.py`` checks them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import psycopg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from core.db import connect, deadline
from core.errors import ConfigError, StorageUnavailable

if TYPE_CHECKING:
    from ingest.consumer import Ingester
    from ingest.store import WriteStats

log = logging.getLogger(__name__)
# no ``_created`` series beside every counter and histogram: Prometheus' text format has no use
# for them and they would double the series (prometheus_client's switch is process-wide)
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # every Prometheus reads it; our names need no more
OUTBOX_TIMEOUT_S = 3  # connect, then query: a scrape waits at most about twice this
# seconds; a batch commit takes milliseconds to a second, a job seconds to an hour
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# what Prometheus accepts as a metric name
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def render(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(registry)


class MetricsServer:
    """A registry served over HTTP (``GET /metrics``, any path) on a thread of its own."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, what: str) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError("BASEWATCH_METRICS_PORT", f"{what}: port {port} is out of range")
        try:
            server, thread = _start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(
                "BASEWATCH_METRICS_PORT",
                f"{what} cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
            ) from exc
        self._server: WSGIServer = server
        self._thread = thread
        self.port = int(server.server_address[1])
        log.info("%s: Prometheus metrics on http://%s:%d/metrics", what, host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# -- ingest -----------------------------------------------------------------------------------


class IngestCollector(Collector):
    """The ingester's running totals and buffer, read at scrape time."""

    def __init__(self, ingester: Ingester) -> None:
        self._ingester = ingester

    def collect(self) -> Iterator[Metric]:
        from ingest.store import DEAD_LETTER_KINDS

        ingester = self._ingester
        s = ingester.stats
        yield _counter(
            "basewatch_ingest_messages_received",
            "MQTT messages received (a redelivered message counts again)",
            s.received,
        )
        yield _counter(
            "basewatch_ingest_messages_committed",
            "messages written and acked: stored, dead-lettered, or both",
            s.committed,
        )
        yield _counter(
            "basewatch_ingest_messages_stored",
            "messages with at least one reading or event stored",
            s.stored,
        )
        yield _counter("basewatch_ingest_readings", "telemetry rows written", s.readings)
        yield _counter("basewatch_ingest_values", "metric values written", s.values)
        yield _counter("basewatch_ingest_events", "event rows written", s.events)
        kinds = s.dead_letter_kinds
        dead = CounterMetricFamily(
            "basewatch_ingest_dead_letters",
            "messages dead-lettered, by reason (ingest.store.DEAD_LETTER_KINDS)",
            labels=["reason"],
        )
        for kind in dict.fromkeys([*DEAD_LETTER_KINDS, *kinds]):
            dead.add_metric([kind], kinds.get(kind, 0))
        yield dead
        yield _counter(
            "basewatch_ingest_dead_letters_suppressed",
            "dead letters over the per-topic rate limit: counted in a summary, payload not stored",
            s.suppressed,
        )
        yield _counter("basewatch_ingest_batches", "batches committed", s.batches)
        yield _counter(
            "basewatch_ingest_write_failures",
            "batch writes that failed (database unavailable or too slow) and were retried",
            s.write_failures,
        )
        yield GaugeMetricFamily(
            "basewatch_ingest_buffer_depth",
            "messages received and not yet committed (nor acked)",
            value=ingester.pending_messages,
        )
        yield GaugeMetricFamily(
            "basewatch_ingest_buffer_bytes",
            "payload and topic bytes of those (bound: BASEWATCH_INGEST_MAX_PENDING_BYTES)",
            value=ingester.pending_bytes,
        )
        yield GaugeMetricFamily(
            "basewatch_ingest_reading_paused",
            "1 while reading from the broker is paused because the buffer is full",
            value=int(ingester.paused),
        )


def ingest_registry(ingester: Ingester) -> CollectorRegistry:
    """The ingester's metrics; installs its ``on_batch`` hook (the commit-time histogram)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(IngestCollector(ingester))
    commit = Histogram(
        "basewatch_ingest_batch_commit_seconds",
        "time to write and commit one batch (COPY, dead letters, commit)",
        buckets=BATCH_BUCKETS,
        registry=registry,
    )

    def on_batch(written: WriteStats, seconds: float) -> None:
        commit.observe(seconds)

    ingester.on_batch = on_batch
    return registry


def serve_ingest_metrics(ingester: Ingester, host: str, port: int) -> MetricsServer:
    return MetricsServer(ingest_registry(ingester), host, port, "ingester")


# -- scheduler --------------------------------------------------------------------------------


class JobMetrics:
    """Runs, failures and durations of the scheduler's jobs (``observe`` after each run)."""

    def __init__(self, registry: CollectorRegistry, job_names: Iterable[str]) -> None:
        self.duration = Histogram(
            "basewatch_job_duration_seconds",
            "duration of a scheduler job run (failed runs included)",
            ["job"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.runs = Counter(
            "basewatch_job_runs", "scheduler job runs finished", ["job"], registry=registry
        )
        self.failures = Counter(
            "basewatch_job_failures",
            "scheduler job runs that raised an error",
            ["job"],
            registry=registry,
        )
        for name in job_names:  # every job's series exists from the start, at 0
            self.duration.labels(name)
            self.runs.labels(name)
            self.failures.labels(name)

    def observe(self, job: str, seconds: float, ok: bool) -> None:
        self.duration.labels(job).observe(seconds)
        self.runs.labels(job).inc()
        if not ok:
            self.failures.labels(job).inc()


class OutboxCollector(Collector):
    """The outbox backlog per channel, read from the database at each scrape (bounded)."""

    def __init__(self, database_url: str, timeout_s: float = OUTBOX_TIMEOUT_S) -> None:
        self._url = database_url
        self._timeout_s = timeout_s

    def collect(self) -> Iterator[Metric]:
        try:
            backlog = self._read()
        except (StorageUnavailable, psycopg.Error) as exc:
            log.warning("metrics: outbox backlog not read: %s", _first_line(exc))
            backlog = None
        yield GaugeMetricFamily(
            "basewatch_outbox_backlog_up",
            "1 when the last scrape read the outbox backlog, 0 when the database did not answer",
            value=int(backlog is not None),
        )
        if backlog is None:
            return
        count = GaugeMetricFamily(
            "basewatch_outbox_backlog",
            "outbox messages waiting to be sent (not sent, not given up), by channel",
            labels=["channel"],
        )
        oldest = GaugeMetricFamily(
            "basewatch_outbox_oldest_age_seconds",
            "age of the oldest waiting outbox message, by channel (0: none waits)",
            labels=["channel"],
        )
        for channel, (n, age) in backlog.items():
            count.add_metric([channel], n)
            oldest.add_metric([channel], age)
        yield count
        yield oldest

    def _read(self) -> dict[str, tuple[int, float]]:
        from signals.delivery import backlog_per_channel

        timeout = max(2, int(self._timeout_s))  # libpq's connect_timeout: 2 s at least
        url = make_conninfo("", **{**conninfo_to_dict(self._url), "connect_timeout": timeout})
        with (
            connect(url, autocommit=True, application_name="basewatch-metrics") as conn,
            deadline(conn, self._timeout_s, "outbox backlog"),
        ):
            return backlog_per_channel(conn, dt.datetime.now(dt.UTC))


class LeaderCollector(Collector):
    """Whether this scheduler replica holds the lock and runs the jobs."""

    def __init__(self, active: threading.Event) -> None:
        self._active = active

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "basewatch_scheduler_leader",
            "1 while this replica holds the scheduler lock and runs the jobs",
            value=int(self._active.is_set()),
        )


def scheduler_registry(
    database_url: str, job_names: Sequence[str], active: threading.Event
) -> tuple[CollectorRegistry, JobMetrics]:
    registry = CollectorRegistry(auto_describe=True)
    jobs = JobMetrics(registry, job_names)
    registry.register(LeaderCollector(active))
    registry.register(OutboxCollector(database_url))
    return registry, jobs


# -- API --------------------------------------------------------------------------------------


class ApiMetrics:
    """Requests by route pattern, method and status, and their durations by route."""

    def __init__(self, refused: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "basewatch_api_requests",
            "HTTP requests answered, by route pattern, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "basewatch_api_request_duration_seconds",
            "time to answer a request (routing to the response body), by route pattern",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.refused = refused  # the server replaces it with its own count
        self.registry.register(_RefusedCollector(self))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def render(self) -> bytes:
        return render(self.registry)


class _RefusedCollector(Collector):
    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield _counter(
            "basewatch_api_connections_refused",
            "connections answered 503 at once because BASEWATCH_API_MAX_CONNECTIONS were held",
            self._metrics.refused(),
        )


def route_label(pattern: str) -> str:
    """A route's regular expression as a label: ``/alerts/(\\d+)/ack`` -> ``/alerts/{id}/ack``,
    ``/csm/([^/]+)`` -> ``/csm/{name}``, an alternative ``(ack|snooze)`` -> ``{action}``."""
    label = pattern.replace(r"(\d+)", "{id}").replace("([^/]+)", "{name}")
    return re.sub(r"\([^)]*\)", "{action}", label)


# -- readiness --------------------------------------------------------------------------------


def expected_migrations(packages: Sequence[str]) -> frozenset[tuple[str, int]]:
    """(package, version) of every migration this code ships."""
    from core.migrate import discover

    return frozenset((m.package, m.version) for m in discover(packages))


def pending_migrations(
    conn: psycopg.Connection[TupleRow], expected: frozenset[tuple[str, int]]
) -> int:
    """How many of ``expected`` the database has not applied (all when it was never
    migrated)."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return len(expected)
    applied = {
        (str(package), int(version))
        for package, version in conn.execute("SELECT package, version FROM schema_migrations")
    }
    return len(expected - applied)


# -- helpers ----------------------------------------------------------------------------------


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
