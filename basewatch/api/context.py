"""The API's state shared by every request (:class:`Api`): its configuration, the one bounded
database pool, the request metrics and the migrations the code expects. Built once by the
server (``basewatch.api.server``) and handed to the app factory; routes and pages reach it as
``request.app.state.api``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from basewatch.api.config import APPLICATION_NAME, RECONNECT_TIMEOUT_S, ApiConfig
from basewatch.metrics import ApiMetrics, expected_migrations
from basewatch.web import Conn
from core.db import Pool, make_pool

log = logging.getLogger(__name__)


class Api:
    """Owns the database pool (opened here without waiting for the database: it connects in
    the background and requests answer 503 until it can; :meth:`close`)."""

    def __init__(self, config: ApiConfig) -> None:
        from basewatch.wiring import PACKAGES

        self.config = config
        self.warned_service_token = False
        timeout = f"{config.statement_timeout_s}s"

        def configure(conn: Conn) -> None:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (timeout,))
            conn.commit()

        self.pool: Pool = make_pool(
            config.database_url,
            min_size=1,
            max_size=config.db_pool_max,
            application_name=APPLICATION_NAME,
            timeout_s=config.db_pool_timeout_s,
            configure=configure,
            check=True,
            reconnect_timeout_s=RECONNECT_TIMEOUT_S,
            wait=False,
        )
        self.metrics = ApiMetrics()
        self.migrations = expected_migrations(PACKAGES)

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def database(self, timeout_s: float | None = None) -> Iterator[Conn]:
        """A pooled connection for one request: committed on success, rolled back on error.
        Waits up to ``timeout_s`` (default: the pool's timeout) for a free one, else
        ``PoolTimeout`` (a 503)."""
        with self.pool.connection(timeout=timeout_s) as conn:
            yield conn
