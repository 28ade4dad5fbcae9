"""The work the scheduler runs periodically, and the settings-derived values it shares with
the commands and the API: one home for each, so that ``scheduler``, the ``*_commands``
modules and ``api`` all call down into this module and never into each other.

``basewatch.scheduler`` only schedules (APScheduler triggers, the leader lock); each of its
jobs is a call of a function here with the settings bound:

==================  ==========================================================================
function            what
==================  ==========================================================================
refresh_rollups     ``signals.rollups.refresh_rollups`` on plain PostgreSQL, in committed
                    steps that ``stop`` can end (TimescaleDB: its policies refresh the
                    continuous aggregates, nothing to do)
score               ``signals.scoring.score_now`` with ``BASEWATCH_ALERT_CLEAR_HOURS``,
                    ``BASEWATCH_ALERT_COOLDOWN_DAYS`` and the delivery gate
                    (``BASEWATCH_ALERT_MIN_PRECISION``, ``BASEWATCH_ALERT_WEEKLY_BUDGET``,
                    the stored measured precision: ``signals.routing``); the messages
                    link to ``BASEWATCH_API_PUBLIC_URL``
retrain             ``signals.scoring.retrain_models`` (stored models)
deliver_alerts      ``signals.delivery.deliver_due`` with the delivery settings (also
                    ``basewatch alerts deliver``)
digest              ``signals.digest.enqueue_digests``: weekly (``daily`` with
                    ``BASEWATCH_ALERT_DIGEST_DAY=daily``), to CSMs with held alerts, and to
                    every CSM with active alerts when ``BASEWATCH_ALERT_DIGEST`` is on,
                    linking to ``BASEWATCH_API_PUBLIC_URL``
delete_expired      ``ingest.retention.delete_expired`` on plain PostgreSQL (TimescaleDB has a
                    retention policy)
monthly_report      incremental ledger rebuild, the previous month's report under
                    ``BASEWATCH_NRR_REPORT_DIR/YYYY-MM``, and one email per
                    ``BASEWATCH_NRR_REPORT_RECIPIENTS`` address through the alerts' outbox
                    (``signals.delivery``), the HTML page and the CSVs attached
==================  ==========================================================================

The composition root may use both nrr and signals; nrr itself never sees the outbox.
Settings come in as arguments; nothing here keeps state between calls.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

    from nrr.report import Report, WrittenReport
    from signals.catalogue import PriceBook
    from signals.delivery import DeliveryResult, OutboxMessage, Transport
    from signals.rollups import RefreshResult

log = logging.getLogger(__name__)


def report_dir(settings: Settings, month: dt.date) -> Path:
    """Where a month's report goes by default: ``BASEWATCH_NRR_REPORT_DIR/YYYY-MM``."""
    from core.months import format_month

    return Path(settings.nrr_report_dir) / format_month(month)


# -- the monthly report by email ----------------------------------------------------------------


def report_emails(
    report: Report, written: WrittenReport, recipients: list[str]
) -> list[OutboxMessage]:
    """One outbox email per recipient: the headline as text, the HTML page and every CSV
    attached; ``dedup_key`` ``nrr-report:<YYYY-MM>:<recipient>``, so a month is sent once."""
    from core.months import format_month
    from signals.delivery import OutboxMessage, attachment

    month = format_month(report.month)
    files = [attachment(written.html.name, "text/html", written.html.read_bytes())]
    files += [attachment(p.name, "text/csv", p.read_bytes()) for p in written.csv_files]
    body = (
        f"{report.headline.text()}\n\n"
        f"Attached: the report {written.html.name} (a self-contained page: open it in a browser)"
        f" and its figures as CSV ({', '.join(p.name for p in written.csv_files)}).\n"
    )
    return [
        OutboxMessage(
            "email",
            recipient,
            f"[basewatch] NRR report {month}",
            body,
            f"nrr-report:{month}:{recipient}",
            payload={"attachments": files},
        )
        for recipient in recipients
    ]


def enqueue_report(
    conn: psycopg.Connection[TupleRow],
    report: Report,
    written: WrittenReport,
    recipients: list[str],
    now: dt.datetime,
) -> int:
    """Put the report's emails in the alerts' outbox (one transaction); returns the rows added
    (0 for a recipient who already has this month's report queued or sent)."""
    from signals.delivery import enqueue

    with conn.transaction():
        return enqueue(conn, report_emails(report, written, recipients), now=now)


@dataclass(frozen=True)
class MonthlyRun:
    """What one run of the scheduled monthly report did."""

    month: dt.date
    written: WrittenReport
    recipients: list[str]
    enqueued: int

    def document(self) -> dict[str, Any]:
        from core.months import format_month

        return {
            "month": format_month(self.month),
            **self.written.document(),
            "recipients": self.recipients,
            "emails_enqueued": self.enqueued,
        }


def monthly_report(
    conn: psycopg.Connection[TupleRow], settings: Settings, now: dt.datetime
) -> MonthlyRun:
    """The ``nrr_report`` job: bring the ledger up to date (incremental rebuild), write the
    previous month's report under ``BASEWATCH_NRR_REPORT_DIR/YYYY-MM`` and, when
    ``BASEWATCH_NRR_REPORT_RECIPIENTS`` is set, enqueue it by email (once per month and
    recipient; the delivery job sends it)."""
    from basewatch.currency import reporting_currency
    from core.months import format_month, previous_complete_month
    from nrr.ledger import rebuild
    from nrr.report import build_report, write_report

    currency = reporting_currency(settings)
    month = previous_complete_month(now.astimezone(dt.UTC).date())
    rebuild(conn, currency, through=month)
    report = build_report(
        conn, currency, month, attribution_window_days=settings.attribution_window_days
    )
    if not conn.autocommit:
        conn.commit()  # end the read transaction before the outbox's own
    written = write_report(report, report_dir(settings, month))
    recipients = settings.report_recipients()
    enqueued = enqueue_report(conn, report, written, recipients, now) if recipients else 0
    log.info(
        "nrr report %s written to %s; %d of %d emails enqueued",
        format_month(month),
        written.html,
        enqueued,
        len(recipients),
    )
    return MonthlyRun(month, written, recipients, enqueued)


# -- the signals' jobs ----------------------------------------------------------------------------


def refresh_rollups(
    conn: psycopg.Connection[TupleRow], stop: Callable[[], bool]
) -> RefreshResult | str:
    """Bring the rollups up to date on plain PostgreSQL; ``stop`` ends a long refresh between
    two committed steps (the next run resumes). With TimescaleDB there is nothing to do."""
    from signals import rollups

    if rollups.uses_continuous_aggregates(conn):
        return "continuous aggregates: refreshed by TimescaleDB's policies"
    return rollups.refresh_rollups(conn, stop=stop)


def score(
    conn: psycopg.Connection[TupleRow], settings: Settings, now: dt.datetime, prices: PriceBook
) -> int:
    """Score as of ``now`` and apply the findings to the alerts; returns the alerts opened."""
    from signals.scoring import score_now

    return score_now(
        conn,
        now,
        clear_after=dt.timedelta(hours=settings.alert_clear_hours),
        cooldown=dt.timedelta(days=settings.alert_cooldown_days),
        prices=prices,
        min_precision=settings.alert_min_precision,
        weekly_budget=settings.alert_weekly_budget,
        public_url=settings.api_public_url,
    )


def retrain(conn: psycopg.Connection[TupleRow], now: dt.datetime) -> dict[str, bool]:
    """Train every model on the data until ``now`` and store it."""
    from signals.scoring import retrain_models

    return retrain_models(conn, now)


def deliver_alerts(
    conn: psycopg.Connection[TupleRow],
    settings: Settings,
    now: dt.datetime,
    transports: Transport,
) -> DeliveryResult:
    """Send the outbox messages that are due through ``transports``
    (``basewatch.wiring.delivery_transports``), with the delivery settings."""
    from basewatch.wiring import email_max_age
    from signals.delivery import deliver_due

    return deliver_due(
        conn,
        transports,
        now=now,
        max_attempts=settings.alert_max_attempts,
        concurrency=settings.delivery_concurrency,
        email_max_age=email_max_age(settings),
    )


def digest(conn: psycopg.Connection[TupleRow], settings: Settings, now: dt.datetime) -> int:
    """Enqueue this period's digest (``BASEWATCH_ALERT_DIGEST_DAY``: a weekday for the weekly
    digest, ``daily``) for every CSM with held alerts, and with ``BASEWATCH_ALERT_DIGEST`` for
    every CSM with active alerts."""
    from basewatch.currency import reporting_currency
    from signals.digest import enqueue_digests

    return enqueue_digests(
        conn,
        now=now,
        currency=reporting_currency(settings),
        period="day" if settings.alert_digest_day == "daily" else "week",
        everyone=settings.alert_digest,
        public_url=settings.api_public_url,
    )


# -- ingest's job ---------------------------------------------------------------------------------


def delete_expired(conn: psycopg.Connection[TupleRow], settings: Settings) -> int:
    """Delete telemetry older than ``BASEWATCH_RETENTION_DAYS`` on plain PostgreSQL; returns
    the rows deleted (0 with TimescaleDB: the hypertable's retention policy does it)."""
    from core.migrate import timescale_in_use
    from ingest.retention import delete_expired as delete_expired_telemetry

    if timescale_in_use(conn):
        return 0
    days = settings.retention_days
    deleted = delete_expired_telemetry(conn, days)
    log.info("retention: %d telemetry rows older than %d days deleted", deleted, days)
    return deleted
