"""``basewatch scheduler``: the periodic jobs, run by exactly one active replica.

Only the scheduling lives here: when each job runs, and the lock that lets one replica run
them. What a job does is a function of ``basewatch.jobs`` (shared with the commands that run
the same work by hand), called with the settings bound. Jobs (UTC):

==============  =====================  =========================================================
job             when                   ``basewatch.jobs`` function
==============  =====================  =========================================================
rollups         every 15 min, at start ``refresh_rollups``: plain PostgreSQL, in committed
                                       steps; SIGTERM stops it between two, the next run
                                       resumes (TimescaleDB: its policies refresh the
                                       continuous aggregates, the job does nothing)
score           hourly at :05          ``score``: scores and applies the findings
                                       (``signals.alerts.apply_findings``)
deliver         every minute, at start ``deliver_alerts``
digest          weekly on              ``digest``: always scheduled, so that alerts held for
                ``BASEWATCH_ALERT_     the digest reach their CSM; to every CSM with active
                DIGEST_DAY`` (monday;  alerts when ``BASEWATCH_ALERT_DIGEST`` is on
                ``daily``: every day)
                at the digest hour
retrain         nightly at 02:30       ``retrain`` (stored models)
retention       daily at 03:15         ``delete_expired`` on plain PostgreSQL when
                                       ``BASEWATCH_RETENTION_DAYS`` > 0 (TimescaleDB has a policy)
nrr_report      the 1st of each month  ``monthly_report``: incremental ledger rebuild, last
                at the report hour     month's report (HTML + CSV) under
                (``BASEWATCH_NRR_      ``BASEWATCH_NRR_REPORT_DIR``, emails to
                REPORT_HOUR``, 6:00)   ``BASEWATCH_NRR_REPORT_RECIPIENTS`` through the outbox
                                       (dedup key ``nrr-report:<YYYY-MM>:<recipient>``)
==============  =====================  =========================================================

Scoring uses ``BASEWATCH_ALERT_CLEAR_HOURS``, ``BASEWATCH_ALERT_COOLDOWN_DAYS``,
``BASEWATCH_ALERT_MIN_PRECISION``, ``BASEWATCH_ALERT_WEEKLY_BUDGET``, ``BASEWATCH_PRICE_BOOK``
and ``BASEWATCH_RENEWAL_WINDOW_DAYS``. Tests pass their own
:class:`Job` list.

**One active scheduler.** A replica takes a PostgreSQL session advisory lock
(``pg_try_advisory_lock``) on a dedicated connection it keeps open; the others log that they
wait and retry every ``retry_s`` seconds. The leader checks its lock connection every
``check_s`` seconds; when it is gone (the server restarted, the network dropped, the session
was terminated) it stops its jobs, lets the running ones finish, and goes back to waiting.
Between the loss of the session and the check another replica may already run jobs, and a
running job is not interrupted: each job is safe against a concurrent twin on its own
(rollups and scoring passes take transaction advisory locks, delivery takes rows with
``SKIP LOCKED``). The lock connection uses TCP keepalives and ``tcp_user_timeout`` so a silent
network failure is noticed in about 30 s rather than the kernel's default of hours.

APScheduler 3's ``BackgroundScheduler`` runs the jobs on a thread pool while the main thread
holds the lock and watches it (a ``BlockingScheduler`` would leave no thread to watch the lock
from). Every job has ``max_instances=1`` and ``coalesce=True`` (never overlaps itself, runs
once after missed times), opens its own connection, logs its duration at INFO and catches and
logs its own exceptions. SIGTERM and SIGINT stop the scheduler after the running jobs finish.

Metrics (``BASEWATCH_METRICS_PORT``, 0: off): the scheduler serves Prometheus metrics on that
port (``basewatch.metrics``): each job run is reported to ``on_job`` (name, seconds, whether
it succeeded), and the outbox backlog is read at scrape time.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from basewatch import jobs
from basewatch.wiring import delivery_transports, signal_prices
from core.db import connect
from core.errors import BasewatchError
from core.settings import Settings

log = logging.getLogger(__name__)

LOCK_KEY = 7_420_240_003  # one active scheduler (migrations use ...001, rollups ...002)
RETRY_S = 30.0
CHECK_S = 10.0
_LOCK_CONNECTION = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",  # ms
}

JobFunction = Callable[[psycopg.Connection[TupleRow], dt.datetime], object]


@dataclass(frozen=True)
class Job:
    """A periodic job: ``function(conn, now)`` on ``trigger`` (an APScheduler trigger)."""

    name: str
    function: JobFunction
    trigger: Any
    run_at_start: bool = False


class LeaderLock:
    """A PostgreSQL session advisory lock held on its own connection."""

    def __init__(self, url: str, key: int = LOCK_KEY) -> None:
        self.url = url
        self.key = key
        self._conn: psycopg.Connection[TupleRow] | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server process holding (or trying) the lock, for operators and tests."""
        return self._conn.info.backend_pid if self._conn is not None else None

    def acquire(self) -> bool:
        """Try once; True when this process holds the lock."""
        try:
            if self._conn is None or self._conn.closed:
                params = {**conninfo_to_dict(self.url), **_LOCK_CONNECTION}
                self._conn = connect(
                    make_conninfo("", **params),
                    autocommit=True,
                    application_name="basewatch-scheduler-lock",
                )
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except (BasewatchError, psycopg.Error) as exc:
            log.warning("scheduler lock: %s", str(exc).strip().splitlines()[0])
            self._close()
            return False
        return bool(row and row[0])

    def held(self) -> bool:
        """True while the lock connection is alive (the session, and so the lock, lives)."""
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error as exc:
            log.warning("scheduler lock connection lost: %s", str(exc).strip().splitlines()[0])
            self._close()
            return False
        return True

    def release(self) -> None:
        """Give the lock up (closing the session releases it in any case)."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except psycopg.Error:
                log.debug("scheduler lock: unlock failed; closing the session releases it")
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


class SchedulerRunner:
    """Waits for the leader lock, runs ``jobs`` while it holds it, until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        jobs: Sequence[Job],
        *,
        retry_s: float = RETRY_S,
        check_s: float = CHECK_S,
        lock_key: int = LOCK_KEY,
        on_job: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self.url = url
        self.on_job = on_job  # after each run: job name, seconds, True when it succeeded
        self.jobs = list(jobs)
        self.retry_s = retry_s
        self.check_s = check_s
        self.lock = LeaderLock(url, lock_key)
        self.active = threading.Event()  # set while this replica runs jobs (or finishes them)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Block until :meth:`stop`: wait for the lock, lead, and wait again if it is lost."""
        waiting_said = False
        try:
            while not self._stop.is_set():
                if not self.lock.acquire():
                    if not waiting_said:
                        log.info(
                            "another scheduler is active; waiting for the lock "
                            "(retrying every %.0f s)",
                            self.retry_s,
                        )
                        waiting_said = True
                    self._stop.wait(self.retry_s)
                    continue
                waiting_said = False
                self._lead()
        finally:
            self.lock.release()
        log.info("scheduler stopped")

    def _lead(self) -> None:
        scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        for job in self.jobs:
            extra = {"next_run_time": dt.datetime.now(dt.UTC)} if job.run_at_start else {}
            scheduler.add_job(
                self._run_job, job.trigger, args=(job,), id=job.name, name=job.name, **extra
            )
        scheduler.start()
        self.active.set()
        log.info("scheduler lock acquired: running %s", ", ".join(j.name for j in self.jobs))
        for scheduled in scheduler.get_jobs():
            log.info("job %s: next run %s", scheduled.id, _when(scheduled.next_run_time))
        try:
            while not self._stop.wait(self.check_s):
                if not self.lock.held():
                    log.warning("scheduler lock lost: stopping the jobs, then waiting for it")
                    break
        finally:
            try:
                scheduler.shutdown(wait=True)  # lets the running jobs finish
            finally:
                self.active.clear()

    def _run_job(self, job: Job) -> None:
        started = time.monotonic()
        ok = False
        try:
            with connect(self.url, application_name=f"basewatch-scheduler-{job.name}") as conn:
                job.function(conn, dt.datetime.now(dt.UTC))
        except BasewatchError as exc:
            log.error("job %s failed after %.1f s: %s", job.name, time.monotonic() - started, exc)
        except Exception:
            log.exception("job %s failed after %.1f s", job.name, time.monotonic() - started)
        else:
            ok = True
            log.info("job %s finished in %.1f s", job.name, time.monotonic() - started)
        if self.on_job is not None:
            self.on_job(job.name, time.monotonic() - started, ok)


def _when(at: dt.datetime | None) -> str:
    return "never (paused)" if at is None else f"{at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


# -- the production jobs ----------------------------------------------------------------------


def digest_trigger(settings: Settings) -> CronTrigger:
    """The digest's time: ``BASEWATCH_ALERT_DIGEST_HOUR`` UTC on ``BASEWATCH_ALERT_DIGEST_DAY``
    (a weekday, or every day for ``daily``)."""
    day = settings.alert_digest_day
    if day == "daily":
        return CronTrigger(hour=settings.alert_digest_hour, minute=0, timezone=dt.UTC)
    return CronTrigger(
        day_of_week=day[:3], hour=settings.alert_digest_hour, minute=0, timezone=dt.UTC
    )


def default_jobs(settings: Settings, stopping: threading.Event | None = None) -> list[Job]:
    """The production job list (see the module docstring): the functions of
    ``basewatch.jobs`` with the settings bound. ``stopping`` (set on SIGTERM) ends a long
    rollup refresh between two of its committed steps; the next run resumes it."""
    prices = signal_prices(settings)
    transports = delivery_transports(settings)
    stop = stopping.is_set if stopping is not None else threading.Event().is_set

    def rollups(conn: psycopg.Connection[TupleRow], now: dt.datetime) -> object:
        return jobs.refresh_rollups(conn, stop)

    def deliver(conn: psycopg.Connection[TupleRow], now: dt.datetime) -> object:
        return jobs.deliver_alerts(conn, settings, now, transports)

    def score(conn: psycopg.Connection[TupleRow], now: dt.datetime) -> object:
        return jobs.score(conn, settings, now, prices)

    def digest(conn: psycopg.Connection[TupleRow], now: dt.datetime) -> object:
        return jobs.digest(conn, settings, now)

    def retention(conn: psycopg.Connection[TupleRow], now: dt.datetime) -> object:
        return jobs.delete_expired(conn, settings)

    def nrr_report(conn: psycopg.Connection[TupleRow], now: dt.datetime) -> object:
        return jobs.monthly_report(conn, settings, now)

    scheduled = [
        Job("rollups", rollups, IntervalTrigger(minutes=15), run_at_start=True),
        Job("deliver", deliver, IntervalTrigger(minutes=1), run_at_start=True),
        Job("score", score, CronTrigger(minute=5)),
        Job("retrain", jobs.retrain, CronTrigger(hour=2, minute=30)),
    ]
    scheduled.append(Job("digest", digest, digest_trigger(settings)))
    if settings.retention_days > 0:
        scheduled.append(Job("retention", retention, CronTrigger(hour=3, minute=15)))
    scheduled.append(
        Job("nrr_report", nrr_report, CronTrigger(day=1, hour=settings.nrr_report_hour, minute=0))
    )
    return scheduled


def run_scheduler(settings: Settings, jobs: Sequence[Job] | None = None) -> int:
    """``basewatch scheduler``: run until SIGTERM or SIGINT; returns the exit code (0)."""
    logging.getLogger("apscheduler").setLevel(
        max(logging.WARNING, logging.getLogger().getEffectiveLevel())
    )
    stopping = threading.Event()
    runner = SchedulerRunner(
        settings.database_url, default_jobs(settings, stopping) if jobs is None else jobs
    )
    metrics = None
    if settings.metrics_port:
        from basewatch.metrics import MetricsServer, scheduler_registry

        registry, job_metrics = scheduler_registry(
            settings.database_url, [j.name for j in runner.jobs], runner.active
        )
        runner.on_job = job_metrics.observe
        metrics = MetricsServer(registry, settings.metrics_host, settings.metrics_port, "scheduler")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping after the running jobs", signal.Signals(signum).name)
        stopping.set()
        runner.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        runner.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if metrics is not None:
            metrics.close()
    return 0
