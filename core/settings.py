"""The one typed settings object, read from ``BASEWATCH_*`` environment variables.

Nothing reads the environment at import time: the composition root calls
:func:`Settings.from_env` once and passes the frozen result (or parts of it) down.
A bad value fails fast with a :class:`~core.errors.ConfigError` naming the variable.
Every field is documented in the README's configuration reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError

ENV_PREFIX = "BASEWATCH_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_EMAIL = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def _parse_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(name, f"must be between {minimum} and {maximum}, got {value}")
    return value


def _setting(
    default: Any,
    *,
    minimum: int = 0,
    maximum: int = 2**31 - 1,
    choices: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    """Declare a settings field; the bounds and choices are checked by ``from_env``."""
    return field(
        default=default,
        metadata={"minimum": minimum, "maximum": maximum, "choices": choices, "secret": secret},
    )


def _default_client_id(username: str, password: str) -> str:
    """``basewatch-ingest-<hostname>``, and with a password a suffix derived from it, so that
    the id is stable across restarts but cannot be guessed without the password."""
    host = socket.gethostname()
    if not password:
        return f"basewatch-ingest-{host}"
    digest = hmac.new(
        password.encode(), f"basewatch-ingest\0{username}\0{host}".encode(), hashlib.sha256
    ).hexdigest()
    return f"basewatch-ingest-{host}-{digest[:16]}"


@dataclass(frozen=True)
class Settings:
    """Configuration of every basewatch process (units in the names)."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/basewatch"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = _setting(1883, minimum=1, maximum=65535)
    mqtt_username: str = ""
    mqtt_password: str = _setting("", secret=True)
    mqtt_tls: bool = False
    mqtt_ca_file: str = ""
    mqtt_cert_file: str = ""
    mqtt_key_file: str = ""
    mqtt_client_id: str = ""
    mqtt_share_group: str = "basewatch"
    mqtt_keepalive_s: int = _setting(30, minimum=5, maximum=3600)
    mqtt_session_expiry_s: int = _setting(86400, minimum=1, maximum=2**32 - 1)
    mqtt_receive_maximum: int = _setting(10000, minimum=1, maximum=65535)
    topic_prefix: str = "basewatch/v1"
    auto_register: bool = False
    ingest_batch_size: int = _setting(2000, minimum=1, maximum=100_000)
    ingest_batch_age_ms: int = _setting(200, minimum=1, maximum=60_000)
    ingest_processes: int = _setting(1, minimum=1, maximum=64)
    ingest_max_payload_bytes: int = _setting(1_048_576, minimum=64, maximum=268_435_456)
    ingest_max_batch_items: int = _setting(10_000, minimum=1, maximum=1_000_000)
    ingest_max_metrics: int = _setting(500, minimum=1, maximum=100_000)
    ingest_max_future_s: int = _setting(600, minimum=0, maximum=10 * 365 * 86400)
    ingest_max_past_days: int = _setting(3650, minimum=1, maximum=100 * 365)
    # payload bytes received and not yet committed; reading pauses at the bound (backpressure)
    ingest_max_pending_bytes: int = _setting(64 * 1024 * 1024, minimum=65_536, maximum=2**31 - 1)
    # bytes of a dead letter's payload stored (its full size and sha256 are kept beside)
    ingest_dead_letter_payload_bytes: int = _setting(16_384, minimum=0, maximum=268_435_456)
    # MQTT dead letters stored per topic and minute by each ingester (0: no limit); the rest
    # are counted in a summary dead letter
    ingest_dead_letters_per_minute: int = _setting(60, minimum=0, maximum=1_000_000)
    timescale: str = _setting("auto", choices=("auto", "on", "off"))
    retention_days: int = _setting(0, minimum=0, maximum=100 * 365)
    compress_after_days: int = _setting(7, minimum=1, maximum=100 * 365)
    log_level: str = _setting("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    reporting_currency: str = "EUR"
    attribution_window_days: int = _setting(90, minimum=1, maximum=3650)
    nrr_report_hour: int = _setting(6, minimum=0, maximum=23)  # UTC, on the 1st of the month
    nrr_report_dir: str = "reports"
    nrr_report_recipients: str = ""  # comma-separated email addresses; empty: no email
    smtp_host: str = ""  # empty: email delivery off (outbox rows wait)
    smtp_port: int = _setting(25, minimum=1, maximum=65535)
    smtp_sender: str = "basewatch@localhost"
    smtp_username: str = ""
    smtp_password: str = _setting("", secret=True)
    smtp_starttls: bool = False
    smtp_timeout_s: int = _setting(30, minimum=1, maximum=600)  # overall, per email
    webhook_timeout_s: int = _setting(10, minimum=1, maximum=600)  # overall, per delivery
    delivery_concurrency: int = _setting(4, minimum=1, maximum=64)  # destinations at once
    alert_clear_hours: int = _setting(48, minimum=1, maximum=24 * 365)
    alert_cooldown_days: int = _setting(7, minimum=0, maximum=365)
    alert_max_attempts: int = _setting(8, minimum=1, maximum=100)
    # unsent alert emails older than this are given up (0: never); see signals.delivery
    alert_email_max_age_hours: int = _setting(72, minimum=0, maximum=24 * 3650)
    alert_digest: bool = False
    alert_digest_hour: int = _setting(7, minimum=0, maximum=23)
    renewal_window_days: int = _setting(90, minimum=1, maximum=3650)
    price_book: str = ""  # overrides of signals' price book: "name=value,..." (see the README)
    api_host: str = "127.0.0.1"  # `basewatch api` listens here (0.0.0.0: every interface)
    api_port: int = _setting(8080, minimum=1, maximum=65535)
    api_token: str = _setting("", secret=True)  # empty: the API and CSM pages are open

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``BASEWATCH_*`` variables (unset ones take their default)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            name = ENV_PREFIX + spec.name.upper()
            if name in env:
                values[spec.name] = _convert(spec, name, env[name])
        settings = cls(**values)
        settings.validate()
        return settings

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """``BASEWATCH_*`` variables that name no setting (likely typos, worth a warning)."""
        env = os.environ if environ is None else environ
        known = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(cls)}
        return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)

    def validate(self) -> None:
        """Check the relations between fields that single values cannot express."""
        if (
            not self.topic_prefix
            or self.topic_prefix.startswith("/")
            or any(c in self.topic_prefix for c in "+#")
            or self.topic_prefix.endswith("/")
        ):
            raise ConfigError(
                "BASEWATCH_TOPIC_PREFIX",
                f"must be a topic path without wildcards, got {self.topic_prefix!r}",
            )
        if bool(self.mqtt_cert_file) != bool(self.mqtt_key_file):
            raise ConfigError(
                "BASEWATCH_MQTT_CERT_FILE", "a client certificate needs BASEWATCH_MQTT_KEY_FILE too"
            )
        if self.mqtt_password and not self.mqtt_username:
            raise ConfigError("BASEWATCH_MQTT_USERNAME", "a password is set without a username")
        if self.smtp_password and not self.smtp_username:
            raise ConfigError("BASEWATCH_SMTP_USERNAME", "a password is set without a username")
        for address in self.report_recipients():
            if not _EMAIL.fullmatch(address):
                raise ConfigError(
                    "BASEWATCH_NRR_REPORT_RECIPIENTS", f"{address!r} is not an email address"
                )

    def report_recipients(self) -> list[str]:
        """``BASEWATCH_NRR_REPORT_RECIPIENTS`` as a list (empty items dropped)."""
        return [a.strip() for a in self.nrr_report_recipients.split(",") if a.strip()]

    def effective_client_id(self, index: int = 0) -> str:
        """The MQTT client id of ingester process ``index``; stable across restarts. Unset, it
        is derived from the host name, the username and the password (not guessable)."""
        base = self.mqtt_client_id or _default_client_id(self.mqtt_username, self.mqtt_password)
        return base if index == 0 else f"{base}-{index}"

    def effective_username(self, index: int = 0) -> str:
        """The MQTT username of ingester process ``index``: process n > 0 of ``--processes``
        logs in as ``<username>-<n>``, for a broker that uses the username as client id (the
        shipped Mosquitto config): one broker user per simultaneous connection."""
        if not self.mqtt_username or index == 0:
            return self.mqtt_username
        return f"{self.mqtt_username}-{index}"

    def public(self) -> dict[str, Any]:
        """All settings with secrets masked, for ``basewatch config``."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.metadata.get("secret") and value:
                value = "***"
            out[ENV_PREFIX + spec.name.upper()] = value
        out[ENV_PREFIX + "DATABASE_URL"] = _mask_url(self.database_url)
        return out

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated."""
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings


def _convert(spec: dataclasses.Field[Any], name: str, raw: str) -> Any:
    meta = spec.metadata
    default = spec.default
    if isinstance(default, bool):
        return _parse_bool(name, raw)
    if isinstance(default, int):
        return _parse_int(name, raw, meta.get("minimum", 0), meta.get("maximum", 2**31 - 1))
    value = raw.strip()
    choices = meta.get("choices", ())
    if choices:
        normalised = value.upper() if choices[0].isupper() else value.lower()
        if normalised not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
        return normalised
    return _parse_str(name, value)


def _parse_str(name: str, value: str) -> str:
    if "\n" in value:
        raise ConfigError(name, "must be a single line")
    return value


def _mask_url(url: str) -> str:
    """Hide a password in a libpq URI (``postgresql://user:secret@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, at, hostpart = rest.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}://{userinfo}{at}{hostpart}"
