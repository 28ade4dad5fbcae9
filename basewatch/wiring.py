"""Builds each part's configuration from the one Settings object.

Each function reads the ``Settings`` fields it needs and returns what a part takes as
arguments; no part keeps a copy of the settings' defaults (the alert delivery settings were a
second dataclass, ``AlertConfig``, re-declaring 13 of them: they are read here instead).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

from basewatch.currency import reporting_currency
from core.db import connect, ensure_database
from core.migrate import MigrationReport, migrate
from core.roles import RoleReport, ensure_app_role
from core.settings import Settings
from ingest.consumer import ConsumerConfig
from ingest.decode import Limits
from ingest.retention import apply_timescale_policies
from ingest.store import DeadLetterPolicy
from signals import rollups
from signals.catalogue import PriceBook
from signals.delivery import SmtpTransport, Transports, WebhookTransport

PACKAGES = ("core", "ingest", "signals", "nrr", "simulator", "basewatch")


def decode_limits(settings: Settings) -> Limits:
    return Limits(
        max_payload_bytes=settings.ingest_max_payload_bytes,
        max_items=settings.ingest_max_batch_items,
        max_metrics=settings.ingest_max_metrics,
        max_future_s=settings.ingest_max_future_s,
        max_past_days=settings.ingest_max_past_days,
    )


def consumer_config(settings: Settings, index: int = 0) -> ConsumerConfig:
    return ConsumerConfig(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=settings.effective_client_id(index),
        topic_prefix=settings.topic_prefix,
        share_group=settings.mqtt_share_group,
        username=settings.effective_username(index),
        password=settings.mqtt_password,
        tls=settings.mqtt_tls,
        ca_file=settings.mqtt_ca_file,
        cert_file=settings.mqtt_cert_file,
        key_file=settings.mqtt_key_file,
        keepalive_s=settings.mqtt_keepalive_s,
        session_expiry_s=settings.mqtt_session_expiry_s,
        receive_maximum=settings.mqtt_receive_maximum,
        batch_size=settings.ingest_batch_size,
        batch_age_ms=settings.ingest_batch_age_ms,
        max_pending_bytes=settings.ingest_max_pending_bytes,
        limits=decode_limits(settings),
    )


def dead_letter_policy(settings: Settings) -> DeadLetterPolicy:
    return DeadLetterPolicy(
        payload_bytes=settings.ingest_dead_letter_payload_bytes,
        per_topic_per_minute=settings.ingest_dead_letters_per_minute,
    )


def delivery_transports(settings: Settings) -> Transports:
    """The alert delivery's transports: webhooks always, email when ``BASEWATCH_SMTP_HOST`` is
    set (else email rows wait in the outbox)."""
    webhook = WebhookTransport(timeout=settings.webhook_timeout_s)
    if not settings.smtp_host:
        return Transports(webhook)
    smtp = SmtpTransport(
        settings.smtp_host,
        settings.smtp_port,
        sender=settings.smtp_sender,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        timeout=settings.smtp_timeout_s,
    )
    return Transports(smtp, webhook)


def email_max_age(settings: Settings) -> dt.timedelta | None:
    """Age at which an unsent alert email expires (``BASEWATCH_ALERT_EMAIL_MAX_AGE_HOURS``;
    None, never, for 0)."""
    hours = settings.alert_email_max_age_hours
    return dt.timedelta(hours=hours) if hours > 0 else None


@dataclass(frozen=True)
class MigrateResult:
    """What ``db migrate`` did: the migrations, and the services' role when one is configured."""

    migrations: MigrationReport
    app_role: RoleReport | None

    @property
    def applied(self) -> list[str]:
        return self.migrations.applied

    @property
    def timescale(self) -> bool:
        return self.migrations.timescale


def migrate_database(settings: Settings) -> MigrateResult:
    """Create the database if needed, apply every package's migrations, then the storage
    policies that come from settings (TimescaleDB compression and retention), then, with
    ``BASEWATCH_DB_APP_ROLE``, the services' least-privilege role and its grants."""
    ensure_database(settings.database_url)
    with connect(settings.database_url, autocommit=True) as conn:
        report = migrate(conn, PACKAGES, settings.timescale)
        if report.timescale:
            apply_timescale_policies(
                conn,
                retention_days=settings.retention_days,
                compress_after_days=settings.compress_after_days,
            )
            rollups.apply_timescale_policies(conn, settings.compress_after_days)
        role = None
        if settings.db_app_role:
            role = ensure_app_role(conn, settings.db_app_role, settings.db_app_password)
    return MigrateResult(report, role)


def open_database(settings: Settings) -> psycopg.Connection[TupleRow]:
    """A connection to a migrated database (autocommit off)."""
    return connect(settings.database_url)


def signal_prices(settings: Settings) -> PriceBook:
    """The signals' price book: ``BASEWATCH_PRICE_BOOK`` over the defaults, with
    ``BASEWATCH_RENEWAL_WINDOW_DAYS`` and the reporting currency the values and texts are in;
    raises ConfigError for a bad price book or currency."""
    return dataclasses.replace(
        PriceBook.parse(settings.price_book),
        renewal_window_days=settings.renewal_window_days,
        currency=reporting_currency(settings),
    )
