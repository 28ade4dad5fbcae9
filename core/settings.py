"""The one typed settings object, read from ``BASEWATCH_*`` environment variables.

Nothing reads the environment at import time: the composition root calls
:func:`Settings.from_env` once and passes the frozen result (or parts of it) down.
A bad value fails fast with a :class:`~core.errors.ConfigError` naming the variable.
:meth:`Settings.refuse_placeholder_secrets` is a separate check, run by the long-running
services and ``db migrate`` only (``basewatch config`` and the tests may show example values):
a secret left at a documented placeholder such as ``change-me`` stops them with one line.
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

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.errors import ConfigError

ENV_PREFIX = "BASEWATCH_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_EMAIL = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # core.roles.ROLE_NAME
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


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
    # libpq network bounds, added to every connection unless the URL sets them (core.db)
    db_connect_timeout_s: int = _setting(10, minimum=2, maximum=3600)
    db_keepalives_idle_s: int = _setting(30, minimum=1, maximum=86400)
    db_keepalives_interval_s: int = _setting(10, minimum=1, maximum=3600)
    db_keepalives_count: int = _setting(3, minimum=1, maximum=100)
    db_tcp_user_timeout_s: int = _setting(30, minimum=0, maximum=86400)  # 0: system default
    # `db migrate` creates this least-privilege role for the services (empty: none; core.roles)
    db_app_role: str = ""
    db_app_password: str = _setting("", secret=True)  # set on the role by every `db migrate`
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
    # longest a batch write may take before its connection is dropped and the batch retried
    # (a hung database link or server; 0: no bound)
    ingest_write_timeout_s: int = _setting(60, minimum=0, maximum=86400)
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
    # off: the digest goes only to CSMs with alerts held for it; on: to every CSM with alerts
    alert_digest: bool = False
    alert_digest_hour: int = _setting(7, minimum=0, maximum=23)
    alert_digest_day: str = _setting("monday", choices=(*WEEKDAYS, "daily"))
    # an alert of a kind whose measured precision is below this goes to the digest
    alert_min_precision: float = _setting(0.5, minimum=0, maximum=1)
    alert_weekly_budget: int = _setting(2, minimum=0, maximum=1000)  # immediate alerts per CSM
    renewal_window_days: int = _setting(90, minimum=1, maximum=3650)
    price_book: str = ""  # overrides of signals' price book: "name=value,..." (see the README)
    api_host: str = "127.0.0.1"  # `basewatch api` listens here (0.0.0.0: every interface)
    api_port: int = _setting(8080, minimum=1, maximum=65535)
    # deprecated shared service token (acts as admin, "by" required); empty: off. Users sign
    # in or send a personal token instead (basewatch users ...)
    api_token: str = _setting("", secret=True)
    # the URL browsers reach the API at; https://... makes the session cookie Secure
    api_public_url: str = ""
    api_db_pool_max: int = _setting(8, minimum=1, maximum=1000)  # database connections, at most
    api_db_pool_timeout_s: int = _setting(5, minimum=1, maximum=300)  # wait for one, then 503
    api_threads: int = _setting(16, minimum=1, maximum=1000)  # requests handled at once
    # connections held at once (handled or waiting for a thread); more are answered 503
    api_max_connections: int = _setting(64, minimum=1, maximum=100_000)
    # Prometheus /metrics of `basewatch ingest` (process n on port + n) and `basewatch
    # scheduler`, each on its own port (0: off); the API serves /metrics on its own port
    metrics_port: int = _setting(0, minimum=0, maximum=65535)
    metrics_host: str = "127.0.0.1"  # where those listen (0.0.0.0: every interface)

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
        if self.db_app_role and not _ROLE.fullmatch(self.db_app_role):
            raise ConfigError(
                "BASEWATCH_DB_APP_ROLE",
                f"{self.db_app_role!r} is not a role name basewatch manages "
                "([a-z_][a-z0-9_]*, up to 63 characters)",
            )
        if self.db_app_password and not self.db_app_role:
            raise ConfigError("BASEWATCH_DB_APP_ROLE", "a password is set without a role")
        if self.mqtt_password and not self.mqtt_username:
            raise ConfigError("BASEWATCH_MQTT_USERNAME", "a password is set without a username")
        if self.smtp_password and not self.smtp_username:
            raise ConfigError("BASEWATCH_SMTP_USERNAME", "a password is set without a username")
        if self.api_max_connections < self.api_threads:
            raise ConfigError(
                "BASEWATCH_API_MAX_CONNECTIONS",
                f"must be at least BASEWATCH_API_THREADS ({self.api_threads}), "
                f"got {self.api_max_connections}",
            )
        for address in self.report_recipients():
            if not _EMAIL.fullmatch(address):
                raise ConfigError(
                    "BASEWATCH_NRR_REPORT_RECIPIENTS", f"{address!r} is not an email address"
                )

    def refuse_placeholder_secrets(self, environ: Mapping[str, str] | None = None) -> None:
        """Raise :class:`ConfigError` naming every secret that holds a placeholder (such as
        ``change-me`` from ``deploy/basewatch.env.example``): the password of
        ``BASEWATCH_DATABASE_URL``, libpq's ``PGPASSWORD``, the MQTT, SMTP and database role
        passwords and the API token. The long-running services and ``db migrate`` call this
        before they connect anywhere; an empty secret is "not set", not a placeholder."""
        env = os.environ if environ is None else environ
        found = [
            (name, value)
            for name, value in (
                ("BASEWATCH_DATABASE_URL", _url_password(self.database_url)),
                ("PGPASSWORD", env.get("PGPASSWORD", "")),
                *(
                    (ENV_PREFIX + spec.name.upper(), getattr(self, spec.name))
                    for spec in dataclasses.fields(self)
                    if spec.metadata.get("secret")
                ),
            )
            if is_placeholder(value)
        ]
        if found:
            names = ", ".join(name for name, _ in found)
            values = ", ".join(repr(value) for _, value in found)
            if len(found) > 1:
                message = f"{values} are placeholders, not secrets: set real ones"
            elif found[0][0] == "BASEWATCH_DATABASE_URL":
                message = f"its password {values} is a placeholder, not a secret: set a real one"
            else:
                message = f"{values} is a placeholder, not a secret: set a real one"
            raise ConfigError(names, message + " (e.g. openssl rand -hex 24)")

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
    if isinstance(default, float):
        return _parse_float(name, raw, meta.get("minimum", 0), meta.get("maximum", 2**31 - 1))
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


def _parse_float(name: str, raw: str, minimum: float, maximum: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(name, f"must be between {minimum} and {maximum}, got {raw!r}")
    return value


def _parse_str(name: str, value: str) -> str:
    if "\n" in value:
        raise ConfigError(name, "must be a single line")
    return value


# Values that stand for "put your secret here" in examples and documentation (compared with
# case and punctuation removed), and words that no generated secret contains by chance.
_PLACEHOLDERS = frozenset(
    {
        "changeme", "changeit", "change", "replaceme", "password", "passw0rd", "passwd",
        "secret", "example", "default", "placeholder", "todo", "fixme", "tbd", "admin", "test",
        "token", "apitoken", "postgres", "basewatch", "letmein", "qwerty", "123456", "12345678",
        "yourpassword", "yoursecret", "yourtoken", "mypassword", "mysecret", "secretpassword",
    }
)  # fmt: skip
_PLACEHOLDER_WORDS = ("changeme", "replaceme", "example", "placeholder")


def is_placeholder(value: str) -> bool:
    """True when ``value`` is a known placeholder secret (``change-me``, ``CHANGEME``,
    ``<password>``, ``xxxx``, ``example-token`` ...); an empty value is not one."""
    text = value.strip()
    if not text:
        return False
    if text.startswith("<") and text.endswith(">"):
        return True
    plain = re.sub(r"[^a-z0-9]", "", text.lower())
    return (
        plain in _PLACEHOLDERS
        or any(word in plain for word in _PLACEHOLDER_WORDS)
        or (bool(plain) and set(plain) <= {"x"})
    )


def _url_password(url: str) -> str:
    """The password a libpq URI or conninfo string carries (empty when none or unparsable)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return str(conninfo_to_dict(url).get("password") or "")
    except ProgrammingError:
        return ""


def _mask_url(url: str) -> str:
    """Hide the password of a libpq connection string in every form libpq reads: a URI's
    ``user:secret@``, its ``?password=`` parameter, or a conninfo ``password=secret``. libpq's
    own parser (psycopg's ``conninfo_to_dict``) decides whether there is one; a string it cannot
    parse is not shown at all."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(not a valid connection string; not shown)"
    if not params.get("password"):
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:  # conninfo form: written again with the password masked
        return make_conninfo("", **{**params, "password": "***"})
    authority, slash, tail = rest.partition("/")
    if "?" in authority and not slash:
        authority, _, query = authority.partition("?")
        tail, slash = "?" + query, ""
    userinfo, at, hostpart = authority.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    tail = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}://{userinfo}{at}{hostpart}{slash}{tail}"
