"""Test session set-up: real PostgreSQL and Mosquitto, never mocks.

The services must be up before the suite starts (``scripts/test`` starts them when it can);
if PostgreSQL is unreachable the whole run stops with a message that says what to do, rather
than skipping everything.
"""

from __future__ import annotations

import pytest

from tests.fix_broker import broker, prefix  # noqa: F401 - fixtures
from tests.fix_db import TEST_SERVER_URL, db_url, server_problem, template_url  # noqa: F401 - fixtures


def pytest_sessionstart(session: pytest.Session) -> None:
    problem = server_problem(TEST_SERVER_URL)
    if problem:
        pytest.exit(
            f"PostgreSQL is not reachable at {TEST_SERVER_URL} ({problem}). Start it with "
            "'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start' or "
            "set BASEWATCH_TEST_DATABASE_URL.",
            returncode=1,
        )
