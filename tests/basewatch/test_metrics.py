"""Operations endpoints and Prometheus metrics (issue 15 item 4), scraped over HTTP and parsed
with prometheus_client's own parser: the API's ``/livez``, ``/readyz`` and ``/metrics``, a
running ``basewatch ingest`` (one process and two) on ``BASEWATCH_METRICS_PORT``, and the
scheduler's job and outbox metrics, on a real PostgreSQL and Mosquitto."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from psycopg import sql

from basewatch.api.app import route_table
from basewatch.localbroker import LocalBroker, free_port
from basewatch.metrics import (
    METRIC_NAME,
    ApiMetrics,
    MetricsServer,
    ingest_registry,
    render,
    scheduler_registry,
)
from basewatch.scheduler import Job, SchedulerRunner
from core.db import drop_database, with_database
from ingest.consumer import ConsumerConfig, Ingester
from ingest.store import DEAD_LETTER_KINDS, BatchWriter
from simulator.publish import Publisher
from tests.basewatch.test_api import _BEARER, TOKEN, api_config, running
from tests.fix_db import TEST_SERVER_URL
from tests.fix_ingest import IngesterProcess, reading, register
from tests.fix_proxy import TcpProxy

T0_MS = 1_767_600_000_000
UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/nowhere"


# -- scraping ---------------------------------------------------------------------------------


def get(url: str, token: str = "", *, signed_in: bool = True) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; by default as the admin that ``running``
    signed in for an API (``token`` instead when given)."""
    if not token and signed_in:
        token = next((t for base, t in _BEARER.items() if url.startswith(base + "/")), "")
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


class Scrape:
    """One scrape, parsed: samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))
        self.samples: list[Sample] = [s for f in self.families for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def values(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(s.labels.items())): s.value for s in self.samples if s.name == name}

    def names(self) -> set[str]:
        return {f.name for f in self.families}


def scrape(url: str, token: str = "") -> Scrape:
    status, content_type, body = get(url, token)
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return Scrape(body)


def poll(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# -- naming -----------------------------------------------------------------------------------

_UNITS = ("seconds", "bytes")
_NOT_BASE_UNITS = re.compile(r"_(milli|micro|nano)?(second|ms|minutes?|hours?|kb|mb|gb)(_|$)")


def naming_problems(scraped: Scrape) -> list[str]:
    """Prometheus naming rules (https://prometheus.io/docs/practices/naming/): a valid name
    with the application prefix, snake case, base units spelled out, ``_total`` on counters
    only, no label starting with ``__``, histograms of a unit named for it."""
    problems = []
    for family in scraped.families:
        name = family.name
        if not METRIC_NAME.fullmatch(name) or not name.startswith("basewatch_"):
            problems.append(f"{name}: not a basewatch_ metric name")
        if name != name.lower() or "__" in name:
            problems.append(f"{name}: not snake case")
        if _NOT_BASE_UNITS.search(name):
            problems.append(f"{name}: not in base units")
        if family.type != "counter" and name.endswith("_total"):
            problems.append(f"{name}: _total on a {family.type}")
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith(("_total", "_created")):
                problems.append(f"{sample.name}: a counter sample without _total")
            problems += [f"{sample.name}: label {k}" for k in sample.labels if k.startswith("__")]
        if family.type == "histogram" and not name.endswith(_UNITS):
            problems.append(f"{name}: a histogram without its unit")
    return problems


def test_the_naming_check_refuses_bad_names() -> None:
    bad = Scrape(
        "# TYPE basewatch_jobs_total gauge\nbasewatch_jobs_total 1\n"
        '# TYPE basewatch_job_ms histogram\nbasewatch_job_ms_bucket{le="+Inf"} 1\n'
        "basewatch_job_ms_count 1\nbasewatch_job_ms_sum 1\n"
        "# TYPE other_things_total counter\nother_things_total 1\n"
        "# TYPE basewatch_Runs gauge\nbasewatch_Runs 1\n"
    )
    assert naming_problems(bad) == [
        "basewatch_jobs_total: _total on a gauge",
        "basewatch_job_ms: not in base units",
        "basewatch_job_ms: a histogram without its unit",
        "other_things: not a basewatch_ metric name",
        "basewatch_Runs: not snake case",
    ]


def test_every_metric_name_follows_the_prometheus_conventions(db_url: str) -> None:
    registry = CollectorRegistry()
    api = ApiMetrics()
    api.observe("/alerts/{id}", "GET", 200, 0.01)
    registry.register(api.registry)  # a registry is a collector of its metrics

    ingester = Ingester(  # not connected: the collector reads its counters and buffer
        ConsumerConfig(host="127.0.0.1", port=1883, client_id="naming", topic_prefix="t"),
        BatchWriter(db_url),
    )
    ingester.stats.dead_letter_kinds = {"unknown_asset": 1}
    registry.register(ingest_registry(ingester))
    scheduler, jobs = scheduler_registry(db_url, ["deliver"], threading.Event())
    jobs.observe("deliver", 0.5, ok=False)
    registry.register(scheduler)
    scraped = Scrape(render(registry).decode())
    assert {"basewatch_api_requests", "basewatch_job_failures", "basewatch_outbox_backlog"} <= (
        scraped.names()
    )
    assert not naming_problems(scraped), naming_problems(scraped)


# -- API --------------------------------------------------------------------------------------


def test_livez_answers_without_a_database_and_readyz_says_why_not() -> None:
    config = api_config(UNREACHABLE_DB, db_pool_timeout_s=1)
    with running(config) as url:
        status, _, body = get(f"{url}/livez")
        assert (status, body) == (200, '{\n  "status": "ok"\n}\n')
        started = time.monotonic()
        status, _, body = get(f"{url}/readyz")
        assert time.monotonic() - started < 10
        assert status == 503
        assert '"reason": "the database does not answer"' in body
        assert "127.0.0.1" not in body  # no host
        assert "nowhere" not in body  # no database name
        scraped = scrape(f"{url}/metrics")  # /metrics needs no database either
    assert (
        scraped.value("basewatch_api_requests_total", route="/readyz", method="GET", status="503")
        == 1
    )


def test_readyz_is_ready_only_when_no_migration_is_pending(db_url: str) -> None:
    with running(api_config(db_url)) as url:
        assert get(f"{url}/readyz")[:1] == (200,)
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(
                "DELETE FROM schema_migrations WHERE (package, version) ="
                " (SELECT package, max(version) FROM schema_migrations"
                "  WHERE package = 'signals' GROUP BY package) RETURNING *"
            ).fetchone()
            assert row is not None
            try:
                status, _, body = get(f"{url}/readyz")
                assert status == 503
                assert "1 database migration pending: run basewatch db migrate" in body
            finally:
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s, %s, %s, %s)", row)
        assert get(f"{url}/readyz")[:1] == (200,)


def test_readyz_on_a_database_never_migrated() -> None:
    name = f"bw_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(TEST_SERVER_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(TEST_SERVER_URL, name)
    try:
        with running(api_config(url)) as api:
            status, _, body = get(f"{api}/readyz")
    finally:
        drop_database(url)
    assert status == 503
    assert re.search(r'"reason": "\d+ database migrations pending: run basewatch db', body)


def test_request_metrics_are_labelled_by_route_pattern_not_path(db_url: str) -> None:
    with running(api_config(db_url)) as url:
        for alert_id in (91001, 91002, 91003):
            assert get(f"{url}/alerts/{alert_id}")[0] == 404
        assert get(f"{url}/alerts")[0] == 200
        assert get(f"{url}/no/such/thing")[0] == 404
        assert get(f"{url}/livez")[0] == 200
        scraped = scrape(f"{url}/metrics")
    requests = "basewatch_api_requests_total"
    assert scraped.value(requests, route="/alerts/{id}", method="GET", status="404") == 3
    assert scraped.value(requests, route="/alerts", method="GET", status="200") == 1
    assert scraped.value(requests, route="none", method="GET", status="404") == 1
    assert scraped.value(requests, route="/livez", method="GET", status="200") == 1
    duration = "basewatch_api_request_duration_seconds"
    assert scraped.value(f"{duration}_count", route="/alerts/{id}") == 3
    assert scraped.value(f"{duration}_sum", route="/alerts/{id}") > 0
    assert scraped.value(f"{duration}_bucket", route="/alerts/{id}", le="+Inf") == 3
    assert scraped.value("basewatch_api_connections_refused_total") == 0
    routes = {s.labels["route"] for s in scraped.samples if "route" in s.labels}
    assert not any(re.search(r"\d{3,}", r) for r in routes), routes  # no ids
    assert routes <= {r.label for r in route_table()} | {"none"}
    assert not naming_problems(scraped), naming_problems(scraped)


def test_metrics_and_the_probes_need_no_credentials_while_other_routes_do(db_url: str) -> None:
    with running(api_config(db_url, token=TOKEN)) as url:
        assert get(f"{url}/alerts", signed_in=False)[0] == 401
        assert get(f"{url}/livez", signed_in=False)[0] == 200
        assert get(f"{url}/readyz", signed_in=False)[0] == 200
        assert get(f"{url}/metrics", signed_in=False)[0] == 200
        scraped = scrape(f"{url}/metrics")
    requests = "basewatch_api_requests_total"
    assert scraped.value(requests, route="/alerts", method="GET", status="401") == 1
    assert scraped.value(requests, route="/metrics", method="GET", status="200") == 1
    assert scraped.value(requests, route="/readyz", method="GET", status="200") == 1


# -- ingester ---------------------------------------------------------------------------------


def _publish(broker: LocalBroker, messages: list[tuple[str, bytes]]) -> None:
    with Publisher(broker.host, broker.port) as pub:
        for topic, payload in messages:
            pub.publish(topic, payload)
        assert pub.wait_all_acked(30)


def _ingest_scrape(port: int) -> Scrape:
    return scrape(f"http://127.0.0.1:{port}/metrics")


def test_ingester_counts_what_it_stores_and_dead_letters_by_reason(
    db_url: str, broker: LocalBroker, prefix: str
) -> None:
    register(db_url, [("acme", "m1")])
    port = free_port()
    n = 40
    good = [
        (f"{prefix}/acme/m1/telemetry", reading(T0_MS + i * 1000, i, load_pct=50.0 + i))
        for i in range(n)
    ]
    bad = [
        (f"{prefix}/acme/ghost/telemetry", reading(T0_MS, 0, load_pct=1.0)),  # unknown asset
        (f"{prefix}/acme/m1/telemetry", b"{not json"),  # invalid payload
        (f"{prefix}/acme/m1/telemetry", b'{"ts": 1767600000000, "metrics": {}}'),  # invalid too
    ]
    env = {"BASEWATCH_METRICS_PORT": str(port)}
    with IngesterProcess(db_url, broker, prefix, extra_env=env):
        before = _ingest_scrape(port)
        assert before.value("basewatch_ingest_messages_received_total") == 0
        _publish(broker, good + bad)
        assert poll(
            lambda: _ingest_scrape(port).value("basewatch_ingest_messages_committed_total") == n + 3
        )
        after = _ingest_scrape(port)
    assert after.value("basewatch_ingest_messages_received_total") == n + 3
    assert after.value("basewatch_ingest_messages_stored_total") == n
    assert after.value("basewatch_ingest_readings_total") == n
    assert after.value("basewatch_ingest_values_total") == n
    dead = after.values("basewatch_ingest_dead_letters_total")
    assert dead == {
        (("reason", kind),): {"unknown_asset": 1, "invalid_payload": 2}.get(kind, 0)
        for kind in DEAD_LETTER_KINDS
    }
    assert after.value("basewatch_ingest_buffer_depth") == 0
    assert after.value("basewatch_ingest_buffer_bytes") == 0
    assert after.value("basewatch_ingest_reading_paused") == 0
    batches = after.value("basewatch_ingest_batches_total")
    assert batches >= 1
    assert after.value("basewatch_ingest_batch_commit_seconds_count") == batches
    assert after.value("basewatch_ingest_batch_commit_seconds_sum") > 0
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry WHERE asset_id = 'm1'").fetchone()
    assert row == (n,)
    assert not naming_problems(after), naming_problems(after)


def test_two_ingester_processes_serve_on_port_and_port_plus_one(
    db_url: str, broker: LocalBroker, prefix: str
) -> None:
    register(db_url, [("acme", "m2")])
    port = free_port()
    while port + 1 > 65535 or _taken(port + 1):
        port = free_port()
    n = 60
    good = [
        (f"{prefix}/acme/m2/telemetry", reading(T0_MS + i * 1000, i, load_pct=1.0))
        for i in range(n)
    ]
    env = {"BASEWATCH_METRICS_PORT": str(port)}
    with IngesterProcess(db_url, broker, prefix, extra_env=env, processes=2):
        _publish(broker, good)

        def stored() -> float:
            return sum(
                _ingest_scrape(p).value("basewatch_ingest_messages_stored_total")
                for p in (port, port + 1)
            )

        assert poll(lambda: stored() == n), stored()
        received = [
            _ingest_scrape(p).value("basewatch_ingest_messages_received_total")
            for p in (port, port + 1)
        ]
    assert sum(received) == n


def _taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_a_metrics_port_in_use_stops_the_ingester_with_one_line(
    db_url: str, broker: LocalBroker, prefix: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ingester = IngesterProcess(
            db_url, broker, prefix, extra_env={"BASEWATCH_METRICS_PORT": str(port)}
        )
        result = subprocess.run(
            [sys.executable, "-m", "basewatch", "ingest"],
            env=ingester.env,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert f"BASEWATCH_METRICS_PORT: ingester cannot serve metrics on 127.0.0.1:{port}" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


# -- scheduler --------------------------------------------------------------------------------


@pytest.fixture
def scheduler_metrics(db_url: str) -> Iterator[Callable[..., tuple[str, SchedulerRunner]]]:
    """Start a runner with ``jobs``, its metrics served on a free port: (metrics URL, runner)."""
    started: list[tuple[SchedulerRunner, threading.Thread, MetricsServer]] = []

    def start(jobs: list[Job], url: str = db_url) -> tuple[str, SchedulerRunner]:
        lock_key = 8_000_000_000 + uuid.uuid4().int % 1_000_000_000
        runner = SchedulerRunner(db_url, jobs, retry_s=0.1, check_s=0.1, lock_key=lock_key)
        registry, job_metrics = scheduler_registry(url, [j.name for j in jobs], runner.active)
        runner.on_job = job_metrics.observe
        server = MetricsServer(registry, "127.0.0.1", 0, "scheduler")
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        started.append((runner, thread, server))
        return f"http://127.0.0.1:{server.port}/metrics", runner

    yield start
    for runner, thread, server in started:
        runner.stop()
        thread.join(timeout=10)
        server.close()


def test_job_runs_failures_and_durations(
    db_url: str, scheduler_metrics: Callable[..., tuple[str, SchedulerRunner]]
) -> None:
    def fine(conn: psycopg.Connection, now: dt.datetime) -> None:
        conn.execute("SELECT pg_sleep(0.05)")

    def broken(conn: psycopg.Connection, now: dt.datetime) -> None:
        raise ZeroDivisionError("a bug in a job")

    url, runner = scheduler_metrics(
        [
            Job("fine", fine, IntervalTrigger(seconds=0.3), run_at_start=True),
            Job("broken", broken, IntervalTrigger(seconds=0.3), run_at_start=True),
            Job("later", fine, IntervalTrigger(hours=1)),
        ]
    )
    assert poll(lambda: scrape(url).value("basewatch_job_runs_total", job="broken") >= 2)
    assert poll(lambda: scrape(url).value("basewatch_job_runs_total", job="fine") >= 2)
    scraped = scrape(url)
    assert scraped.value("basewatch_scheduler_leader") == 1
    runs = scraped.value("basewatch_job_runs_total", job="broken")
    failures = scraped.value("basewatch_job_failures_total", job="broken")
    assert runs - 1 <= failures <= runs  # a run may finish between the two reads
    assert scraped.value("basewatch_job_failures_total", job="fine") == 0
    assert scraped.value("basewatch_job_runs_total", job="later") == 0  # listed before it runs
    fine_count = scraped.value("basewatch_job_duration_seconds_count", job="fine")
    assert fine_count >= 2
    assert scraped.value("basewatch_job_duration_seconds_sum", job="fine") >= 0.05 * fine_count
    assert scraped.value("basewatch_job_duration_seconds_bucket", job="fine", le="0.1") >= 1
    runner.stop()
    assert poll(lambda: scrape(url).value("basewatch_scheduler_leader") == 0, 20)


def test_outbox_backlog_by_channel(
    db_url: str, scheduler_metrics: Callable[..., tuple[str, SchedulerRunner]]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox RESTART IDENTITY")
        conn.execute(
            "INSERT INTO outbox (created_at, channel, recipient, subject, body, dedup_key,"
            " sent_at, gave_up_at) VALUES"
            " (now() - interval '10 minutes', 'email', 'a@x.test', 's', 'b', 'k1', NULL, NULL),"
            " (now() - interval '1 minute', 'email', 'b@x.test', 's', 'b', 'k2', NULL, NULL),"
            " (now(), 'email', 'c@x.test', 's', 'b', 'k3', now(), NULL),"
            " (now(), 'webhook', 'https://h.test', 's', 'b', 'k4', NULL, now())"
        )
    url, _ = scheduler_metrics([])
    scraped = scrape(url)
    assert scraped.value("basewatch_outbox_backlog_up") == 1
    assert scraped.values("basewatch_outbox_backlog") == {
        (("channel", "email"),): 2,
        (("channel", "webhook"),): 0,
    }
    age = scraped.value("basewatch_outbox_oldest_age_seconds", channel="email")
    assert 590 <= age <= 700
    assert scraped.value("basewatch_outbox_oldest_age_seconds", channel="webhook") == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE outbox SET sent_at = now()")
    assert scrape(url).value("basewatch_outbox_backlog", channel="email") == 0


def test_a_scrape_does_not_hang_on_a_hung_database(
    db_url: str, scheduler_metrics: Callable[..., tuple[str, SchedulerRunner]]
) -> None:
    with TcpProxy.to_database(db_url) as proxy:
        url, _ = scheduler_metrics([], proxy.database_url(db_url))
        assert scrape(url).value("basewatch_outbox_backlog_up") == 1
        assert poll(lambda: scrape(url).value("basewatch_scheduler_leader") == 1, 20)
        proxy.hang()
        started = time.monotonic()
        scraped = scrape(url)
        elapsed = time.monotonic() - started
        proxy.resume()
    assert elapsed < 8, elapsed
    assert scraped.value("basewatch_outbox_backlog_up") == 0
    assert "basewatch_outbox_backlog" not in scraped.names()
    assert scraped.value("basewatch_scheduler_leader") == 1  # the rest is still there


def test_basewatch_scheduler_serves_its_metrics_on_the_setting(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    environ |= {"BASEWATCH_DATABASE_URL": db_url, "BASEWATCH_METRICS_PORT": str(port)}
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "basewatch", "scheduler"], env=environ, stderr=out
        )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert poll(lambda: "job deliver finished" in log.read_text(), 60), log.read_text()
        scraped = scrape(url)
        assert scraped.value("basewatch_job_runs_total", job="deliver") >= 1
        assert scraped.value("basewatch_job_failures_total", job="deliver") == 0
        jobs = {dict(k)["job"] for k in scraped.values("basewatch_job_runs_total")}
        assert {"rollups", "deliver", "score", "retrain", "nrr_report"} <= jobs
        assert scraped.value("basewatch_outbox_backlog_up") == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text()
