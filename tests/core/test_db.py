"""Network bounds of every connection (issue 11 item 8: a hung database link blocked the
ingester for as long as it lasted): libpq's TCP keepalives, ``tcp_user_timeout`` and
``connect_timeout`` are on the real socket, and ``deadline`` cuts a call off a hung link."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from core import db
from core.errors import StorageUnavailable
from tests.fix_db import TEST_SERVER_URL
from tests.fix_proxy import TcpProxy


@pytest.fixture
def bounds() -> Iterator[db.NetworkTimeouts]:
    """Distinctive values, so the test sees they come from here; the default restored."""
    before = db.network_timeouts()
    chosen = db.NetworkTimeouts(
        connect_timeout_s=3,
        keepalives_idle_s=41,
        keepalives_interval_s=7,
        keepalives_count=4,
        tcp_user_timeout_s=23,
    )
    db.configure(chosen)
    yield chosen
    db.configure(before)


def _tcp_url() -> str:
    host = str(conninfo_to_dict(TEST_SERVER_URL).get("host") or "")
    if host.startswith("/") or not host:
        pytest.skip("the test server is reached over a Unix socket: no TCP options")
    return TEST_SERVER_URL


def _socket_options(conn: psycopg.Connection[TupleRow]) -> dict[str, int]:
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return {
            "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "TCP_KEEPIDLE": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "TCP_KEEPINTVL": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "TCP_KEEPCNT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "TCP_USER_TIMEOUT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.close()


def test_connections_carry_keepalives_and_user_timeout(bounds: db.NetworkTimeouts) -> None:
    with db.connect(_tcp_url()) as conn:
        options = _socket_options(conn)
    assert options == {
        "SO_KEEPALIVE": 1,
        "TCP_KEEPIDLE": 41,
        "TCP_KEEPINTVL": 7,
        "TCP_KEEPCNT": 4,
        "TCP_USER_TIMEOUT": 23_000,
    }
    pool = db.make_pool(_tcp_url(), min_size=1, max_size=1)
    try:
        with pool.connection() as conn:
            assert _socket_options(conn)["TCP_USER_TIMEOUT"] == 23_000
    finally:
        pool.close()


def test_the_connection_string_wins_over_the_settings(bounds: db.NetworkTimeouts) -> None:
    params = conninfo_to_dict(_tcp_url())
    url = make_conninfo("", **params, keepalives_idle="77", tcp_user_timeout="5000")
    with db.connect(url) as conn:
        options = _socket_options(conn)
    assert (options["TCP_KEEPIDLE"], options["TCP_USER_TIMEOUT"]) == (77, 5000)
    assert options["TCP_KEEPINTVL"] == 7  # the rest still from the settings


def test_connect_through_a_hung_link_gives_up_after_connect_timeout(
    bounds: db.NetworkTimeouts,
) -> None:
    """TCP connects (the proxy accepts) but the startup exchange never gets an answer."""
    with TcpProxy.to_database(TEST_SERVER_URL) as link:
        link.hang()
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="cannot connect to PostgreSQL"):
            db.connect(link.database_url(TEST_SERVER_URL)).close()
        took = time.monotonic() - started
        link.resume()
    assert bounds.connect_timeout_s - 0.5 <= took < bounds.connect_timeout_s + 3, took


def test_deadline_cuts_a_query_off_a_hung_link_and_the_next_connection_works() -> None:
    with TcpProxy.to_database(TEST_SERVER_URL) as link:
        url = link.database_url(TEST_SERVER_URL)
        conn = db.connect(url)
        conn.execute("SELECT 1")
        link.hang()
        started = time.monotonic()
        with (
            pytest.raises(db.DeadlineExceeded, match=r"no answer from PostgreSQL within 1\.5 s"),
            db.deadline(conn, 1.5, "probe"),
        ):
            conn.execute("SELECT 2")
        took = time.monotonic() - started
        assert 1.4 <= took < 4, took
        assert conn.broken or conn.closed
        conn.close()
        link.resume()
        with db.connect(url) as again, db.deadline(again, 1.5, "probe"):
            assert again.execute("SELECT 3").fetchone() == (3,)


def test_deadline_does_nothing_to_a_call_that_finishes_in_time() -> None:
    with db.connect(TEST_SERVER_URL) as conn:
        with db.deadline(conn, 0.5, "quick"):
            conn.execute("SELECT 1")
        time.sleep(0.8)  # past the deadline: the timer was cancelled, the socket is whole
        assert conn.execute("SELECT 2").fetchone() == (2,)
