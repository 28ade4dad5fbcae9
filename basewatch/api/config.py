"""What ``basewatch api`` needs from the settings (:class:`ApiConfig`) and the bounds that are
not settings (timeouts, body size, list size), each with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError
from core.settings import Settings

STATEMENT_TIMEOUT_S = 30  # every API database session's statement_timeout
MAX_BODY_BYTES = 64 * 1024  # a larger request body is a 413
MAX_LIST_LIMIT = 1000  # the largest ?limit= of a list
MAX_SNOOZE_HOURS = 24 * 366
REQUEST_TIMEOUT_S = 10  # the whole request (line, headers, body) must arrive within this
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
RETRY_AFTER_S = 5  # the Retry-After of every 503
HEALTHZ_WAIT_S = 2  # /healthz and /readyz wait at most this long for a database connection
RECONNECT_TIMEOUT_S = 30  # the pool gives up a connection attempt after this
LISTEN_BACKLOG = 128
APPLICATION_NAME = "basewatch-api"  # the pool's PostgreSQL application_name


@dataclass(frozen=True)
class ApiConfig:
    """What the API needs from the settings. Built by :meth:`from_settings`, so each value's
    default lives once, in ``core.settings.Settings``; only the two bounds that are not
    settings (statement and request timeouts) have their defaults here."""

    database_url: str
    token: str
    reporting_currency: str
    attribution_window_days: int
    db_pool_max: int
    db_pool_timeout_s: float
    threads: int
    max_connections: int
    public_url: str = ""  # https://...: the session cookie is Secure
    statement_timeout_s: int = STATEMENT_TIMEOUT_S
    request_timeout_s: float = REQUEST_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiConfig:
        from basewatch.currency import reporting_currency

        if any(c.isspace() for c in settings.api_token):
            raise ConfigError("BASEWATCH_API_TOKEN", "must not contain spaces")
        return cls(
            database_url=settings.database_url,
            token=settings.api_token,
            reporting_currency=reporting_currency(settings),
            attribution_window_days=settings.attribution_window_days,
            db_pool_max=settings.api_db_pool_max,
            db_pool_timeout_s=settings.api_db_pool_timeout_s,
            threads=settings.api_threads,
            max_connections=settings.api_max_connections,
            public_url=settings.api_public_url,
        )

    @property
    def secure_cookie(self) -> bool:
        return self.public_url.lower().startswith("https://")
