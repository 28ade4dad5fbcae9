"""The scheduler: one active replica (a session advisory lock), jobs that survive their own
failures, a lost lock connection, the production job list, and SIGTERM."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from apscheduler.triggers.interval import IntervalTrigger

from basewatch.jobs import MonthlyRun
from basewatch.scheduler import Job, LeaderLock, SchedulerRunner, default_jobs
from core.registry import import_registry, read_registry_csv
from core.settings import Settings
from nrr.imports import import_file
from signals.alerts import apply_findings
from signals.findings import Finding
from tests.fix_smtp import running_smtp_server

DATA = Path(__file__).parent.parent / "data"


def lock_key() -> int:
    # a key of its own per test, so tests never contend with each other or a real scheduler
    return 8_000_000_000 + uuid.uuid4().int % 1_000_000_000


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def started() -> Iterator[Callable[[SchedulerRunner], None]]:
    running: list[tuple[SchedulerRunner, threading.Thread]] = []

    def start(runner: SchedulerRunner) -> None:
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        running.append((runner, thread))

    yield start
    for runner, thread in running:
        runner.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_second_lock_waits_until_the_first_is_gone(db_url: str) -> None:
    key = lock_key()
    first, second = LeaderLock(db_url, key), LeaderLock(db_url, key)
    try:
        assert first.acquire()
        assert not second.acquire()
        assert first.held()
        first.release()
        assert not first.held()
        assert second.acquire()
        assert not first.acquire()
    finally:
        first.release()
        second.release()


def test_lock_is_freed_when_its_session_dies(db_url: str) -> None:
    key = lock_key()
    first, second = LeaderLock(db_url, key), LeaderLock(db_url, key)
    try:
        assert first.acquire()
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first.backend_pid,))
        assert wait_for(second.acquire)
        assert not first.held()
    finally:
        first.release()
        second.release()


def test_unreachable_database_is_no_lock() -> None:
    assert not LeaderLock("postgresql://postgres@127.0.0.1:1/none").acquire()


def counting_job(name: str, calls: list[str], every_s: float = 0.2) -> Job:
    def function(conn: psycopg.Connection, now: dt.datetime) -> None:
        conn.execute("SELECT 1")
        calls.append(name)

    return Job(name, function, IntervalTrigger(seconds=every_s), run_at_start=True)


def test_standby_runs_no_job_until_the_leader_is_gone(
    db_url: str, started: Callable[[SchedulerRunner], None]
) -> None:
    key = lock_key()
    holder = LeaderLock(db_url, key)
    assert holder.acquire()
    calls: list[str] = []
    standby = SchedulerRunner(
        db_url, [counting_job("tick", calls)], retry_s=0.1, check_s=0.1, lock_key=key
    )
    try:
        started(standby)
        time.sleep(0.6)
        assert calls == []
        assert not standby.active.is_set()
    finally:
        holder.release()
    assert wait_for(lambda: len(calls) >= 2)
    assert standby.active.is_set()


def test_leader_that_loses_its_lock_connection_stops_and_waits(
    db_url: str, started: Callable[[SchedulerRunner], None]
) -> None:
    key = lock_key()
    calls: list[str] = []
    leader = SchedulerRunner(
        db_url, [counting_job("tick", calls, 0.05)], retry_s=0.1, check_s=0.05, lock_key=key
    )
    started(leader)
    assert wait_for(lambda: len(calls) >= 1)
    other = LeaderLock(db_url, key)
    try:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (leader.lock.backend_pid,))
        assert wait_for(other.acquire)  # the session's end freed the lock: another replica
        assert wait_for(lambda: not leader.active.is_set())
        stopped_at = len(calls)
        time.sleep(0.4)
        assert len(calls) == stopped_at  # no job while the other replica leads
    finally:
        other.release()
    assert wait_for(leader.active.is_set)  # and it takes over again once free
    assert wait_for(lambda: len(calls) > stopped_at)


def test_a_failing_job_neither_stops_the_scheduler_nor_the_other_jobs(
    db_url: str, started: Callable[[SchedulerRunner], None], caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE alerts, alert_history, outbox RESTART IDENTITY")
    calls: list[str] = []

    def broken(conn: psycopg.Connection, now: dt.datetime) -> None:
        calls.append("broken")
        raise ZeroDivisionError("a bug in a job")

    def score(conn: psycopg.Connection, now: dt.datetime) -> None:
        # a stand-in for signals.scoring.score_now: writes real findings through the lifecycle
        finding = Finding(
            "acct-s", "usage_decline", "", 0.7, Decimal("500"), 60, ("usage down 35%",)
        )
        apply_findings(conn, [finding], now=now, kinds_scored={"usage_decline"}, currency="EUR")
        calls.append("score")

    runner = SchedulerRunner(
        db_url,
        [
            Job("broken", broken, IntervalTrigger(seconds=0.2), run_at_start=True),
            Job("score", score, IntervalTrigger(seconds=0.2), run_at_start=True),
        ],
        retry_s=0.1,
        check_s=0.1,
        lock_key=lock_key(),
    )
    with caplog.at_level("INFO", logger="basewatch.scheduler"):
        started(runner)
        assert wait_for(lambda: calls.count("broken") >= 2 and calls.count("score") >= 2)
    assert "job broken failed after" in caplog.text
    assert "ZeroDivisionError: a bug in a job" in caplog.text
    assert "job score finished in" in caplog.text
    assert re.search(r"job score: next run \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", caplog.text)
    with psycopg.connect(db_url) as conn:
        alerts = conn.execute("SELECT account_id, kind, status FROM alerts").fetchall()
    assert alerts == [("acct-s", "usage_decline", "open")]


def test_production_jobs(db_url: str) -> None:
    names = [j.name for j in default_jobs(Settings(database_url=db_url))]
    assert names[:2] == ["rollups", "deliver"]
    assert "retention" not in names
    with_retention = default_jobs(Settings(database_url=db_url, retention_days=30))
    assert "retention" in [j.name for j in with_retention]
    assert names[-1] == "nrr_report"
    report = default_jobs(Settings(database_url=db_url, nrr_report_hour=4))[-1]
    assert str(report.trigger) == "cron[day='1', hour='4', minute='0']"
    # the digest is always scheduled (held alerts must reach their CSM): weekly by default
    [digest] = [j for j in default_jobs(Settings(database_url=db_url)) if j.name == "digest"]
    assert str(digest.trigger) == "cron[day_of_week='mon', hour='7', minute='0']"
    friday = Settings(database_url=db_url, alert_digest_day="friday", alert_digest_hour=9)
    [digest] = [j for j in default_jobs(friday) if j.name == "digest"]
    assert str(digest.trigger) == "cron[day_of_week='fri', hour='9', minute='0']"
    daily = Settings(database_url=db_url, alert_digest_day="daily")
    [digest] = [j for j in default_jobs(daily) if j.name == "digest"]
    assert str(digest.trigger) == "cron[hour='7', minute='0']"


def test_the_rollup_job_stops_between_steps_once_stopping(db_url: str) -> None:
    """SIGTERM sets ``stopping``: a rollup refresh under way ends at its next step and the
    next run completes it (TimescaleDB: the job leaves the aggregates to the policies)."""
    from signals.rollups import RefreshResult

    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
            " SELECT 'sj-' || a, '2025-01-01'::timestamptz + h * INTERVAL '1 hour', now(),"
            " '{\"load_pct\": 1}' FROM generate_series(1, 3) a, generate_series(1, 30) h"
        )
        conn.commit()
        stopping = threading.Event()
        rollups = default_jobs(Settings(database_url=db_url), stopping)[0]
        assert rollups.name == "rollups"
        stopping.set()
        stopped = rollups.function(conn, dt.datetime.now(dt.UTC))
        if isinstance(stopped, str):
            assert "TimescaleDB" in stopped
            return
        assert isinstance(stopped, RefreshResult)
        assert not stopped.complete
        stopping.clear()
        done = rollups.function(conn, dt.datetime.now(dt.UTC))
        assert isinstance(done, RefreshResult)
        assert done.complete
        row = conn.execute("SELECT count(*) FROM rollup_hourly WHERE asset_id LIKE 'sj-%'")
        assert row.fetchone() == (90,)


def test_monthly_nrr_report_emails_each_recipient_once(db_url: str, tmp_path: Path) -> None:
    """The nrr_report job on 2024-04-01 06:00 UTC (the sample revenue of tests/data) rebuilds
    the ledger, writes March's report and queues one email per recipient; the delivery job
    sends them over SMTP; running both again sends nothing more."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_registry(conn, read_registry_csv([DATA / "nrr_registry.csv"]))
        for kind in ("contracts", "invoices", "fx"):
            import_file(conn, kind, DATA / f"nrr_{kind}.csv")
    recipients = ["cfo@example.test", "head.of.sales@example.test"]
    with running_smtp_server() as smtp:
        settings = Settings(
            database_url=db_url,
            nrr_report_dir=str(tmp_path / "reports"),
            nrr_report_recipients=", ".join(recipients),
            smtp_host=smtp.host,
            smtp_port=smtp.port,
        )
        jobs = {j.name: j for j in default_jobs(settings)}
        report, deliver = jobs["nrr_report"], jobs["deliver"]
        trigger = {f.name: str(f) for f in report.trigger.fields}
        assert (trigger["day"], trigger["hour"], trigger["minute"]) == ("1", "6", "0")
        now = dt.datetime(2024, 4, 1, 6, 0, tzinfo=dt.UTC)
        with psycopg.connect(db_url) as conn:
            run = report.function(conn, now)
        assert isinstance(run, MonthlyRun)
        assert (run.month, run.enqueued, run.recipients) == (dt.date(2024, 3, 1), 2, recipients)
        folder = tmp_path / "reports" / "2024-03"
        csv_names = sorted(p.name for p in folder.glob("*.csv"))
        assert "attribution.csv" in csv_names
        assert (folder / "nrr-2024-03.html").exists()
        with psycopg.connect(db_url) as conn:
            deliver.function(conn, now)
        sent = [m for m in smtp.messages if m["Subject"] == "[basewatch] NRR report 2024-03"]
        assert sorted(str(m["To"]) for m in sent) == recipients
        for message in sent:
            assert message["X-Basewatch-Dedup-Key"] == f"nrr-report:2024-03:{message['To']}"
            body = message.get_body(preferencelist=("plain",))
            assert body is not None
            assert "NRR 2024-03" in body.get_content()
            files = {str(p.get_filename()): p for p in message.iter_attachments()}
            assert sorted(files) == sorted([*csv_names, "nrr-2024-03.html"])
            assert (
                files["headline.csv"].get_payload(decode=True)
                == (folder / "headline.csv").read_bytes()
            )
            page = files["nrr-2024-03.html"].get_payload(decode=True)
            assert page == (folder / "nrr-2024-03.html").read_bytes()

        later = now + dt.timedelta(hours=1)
        with psycopg.connect(db_url) as conn:
            again = report.function(conn, later)
            deliver.function(conn, later)
        assert isinstance(again, MonthlyRun)
        assert again.enqueued == 0
        assert len([m for m in smtp.messages if "NRR report" in str(m["Subject"])]) == 2
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT recipient, sent_at IS NOT NULL FROM outbox"
            " WHERE dedup_key LIKE 'nrr-report:%' ORDER BY recipient"
        ).fetchall()
    assert rows == [(r, True) for r in recipients]


def test_sigterm_stops_the_scheduler_cleanly(db_url: str) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    environ["BASEWATCH_DATABASE_URL"] = db_url
    code = (
        "import logging, sys\n"
        "from core.logsetup import configure_logging\n"
        "from core.settings import Settings\n"
        "from basewatch.scheduler import run_scheduler\n"
        "configure_logging('INFO')\n"
        "sys.exit(run_scheduler(Settings.from_env()))\n"
    )
    lines = []
    with subprocess.Popen(
        [sys.executable, "-c", code], env=environ, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        try:
            for line in process.stderr:
                lines.append(line)
                if "job deliver finished" in line:
                    break
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
            lines += process.stderr.readlines()
        finally:
            if process.poll() is None:
                process.kill()
    text = "".join(lines)
    assert "scheduler lock acquired" in text
    assert "SIGTERM received" in text
    assert "scheduler stopped" in text
    assert "Traceback" not in text
