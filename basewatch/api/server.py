"""Running the app: uvicorn (its h11 protocol) on a socket bound here, with the API's bounds,
and ``basewatch api``'s signal handling.

- Connections: uvicorn's ``limit_concurrency`` is ``BASEWATCH_API_MAX_CONNECTIONS + 1``
  (uvicorn counts the asking connection too, so N other connections may be held: idle
  keep-alive ones, ones being served and ones waiting for a worker thread). A request beyond
  it is answered at once with 503, ``Retry-After`` and problem details by
  :class:`BoundedProtocol`, which applies uvicorn's test in place of uvicorn's plain-text 503
  (that one has no ``Retry-After``) with two corrections: connections already refused (still
  closing) do not count, and neither do running tasks (an h11 connection runs one request at
  a time, so the connection bound bounds them); uvicorn's own test refused 37 to 40 of 100
  simultaneous clients instead of the 36 beyond 64 while refused connections lingered.
  Refusals count in ``basewatch_api_connections_refused_total``; the warning is logged at most
  every 10 s.
- Worker threads: sync routes run in anyio's thread pool, sized to ``BASEWATCH_API_THREADS``
  by the app's lifespan (``basewatch.api.app``).
- Time: a connection's request (line, headers, body) must arrive within
  ``request_timeout_s`` of the connection or of the previous answer, else the connection is
  closed (a client trickling bytes holds a connection, never a worker thread, and not
  longer than that); an idle keep-alive connection is closed after :data:`KEEP_ALIVE_S`.
- A malformed request (h11 refuses it) is answered 400 with problem details and the security
  headers, then the connection is closed.
- SIGTERM/SIGINT: stop accepting (the listening socket is closed), let the running requests
  finish (uvicorn's graceful shutdown, without a time limit: the statement timeout bounds a
  request's database work), close the pool, exit 0. uvicorn's own signal capture is off (it
  re-raises the signal after the shutdown, which would end the process with -15, not 0).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from basewatch.api.app import create_app, security_headers
from basewatch.api.config import KEEP_ALIVE_S, LISTEN_BACKLOG, RETRY_AFTER_S, ApiConfig
from basewatch.api.context import Api
from basewatch.api.errors import PROBLEM, problem_body
from core.errors import ConfigError
from core.settings import Settings

log = logging.getLogger(__name__)

BUSY = "the API is busy (too many requests at once); retry later"
LINGER_S = 2.0  # a connection refused as malformed is closed after this at the latest


class Refusals:
    """Requests answered 503 at once because too many connections were held."""

    def __init__(self) -> None:
        self.count = 0
        self.last_log = -1e9

    def note(self, limit: int) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last_log >= 10:
            self.last_log = now
            log.warning(
                "busy: %d connections held (BASEWATCH_API_MAX_CONNECTIONS): answering 503", limit
            )


def _raw_headers(content_type: str, length: int, *extra: tuple[str, str]) -> list[Any]:
    pairs = [
        ("Content-Type", content_type),
        ("Content-Length", str(length)),
        *extra,
        ("Connection", "close"),
        *security_headers(content_type),
    ]
    return [(name.encode(), value.encode()) for name, value in pairs]


class BoundedProtocol(H11Protocol):
    """uvicorn's h11 protocol with the API's bounds (see the module docstring); the class
    attributes are set per server by :func:`protocol_for`."""

    request_timeout_s: float = 10.0
    refusals: Refusals = Refusals()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = self.limit_concurrency
        self.limit_concurrency = None  # uvicorn's check and plain answer: ours instead
        self.app = self._guarded(self.app)
        self.deadline: Any = None
        self.refused = False  # this connection was answered 503 busy: it is closing
        self.lingering = False  # answered 400 as malformed: the rest of the request is dropped

    def _guarded(self, app: Any) -> Any:
        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            # uvicorn's test of the connections held, except that connections already
            # refused (closing, their answer still being written) do not count: they would
            # make the API refuse more than the excess while they linger (63 of 64 held, not
            # 64). uvicorn also bounds its running tasks; an h11 connection runs one request
            # at a time, so the connections bound them already (and the tasks of refused
            # connections must not count either)
            limit = self.limit
            held = sum(1 for c in self.connections if not getattr(c, "refused", False))
            if limit is None or held < limit:
                await app(scope, receive, send)
                return
            self.refused = True
            self.refusals.note(limit - 1)
            body = problem_body(503, BUSY)
            headers = _raw_headers(PROBLEM, len(body), ("Retry-After", str(RETRY_AFTER_S)))
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return guarded

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol: bool | None
        # a client may close its side once its request is sent and still read the answer
        # (asyncio would close the whole connection, losing the answer, unless told so); the
        # request deadline and the keep-alive timeout still close a connection left like that
        # close at once when nothing is in flight: a client that closes after its answer
        # (one request per connection) must not stay counted as held until the keep-alive
        # timeout, or a few clients doing so fill BASEWATCH_API_MAX_CONNECTIONS and the rest
        # get 503s (bench/api.py: 20 clients, about 10,000 503s in 15 s before this)
        idle = (self.cycle is None or self.cycle.response_complete) and not (
            self.conn.trailing_data[0]
        )
        if self.lingering or idle:
            self.transport.close()
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_deadline()  # the next request on this connection has its own deadline

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self.deadline = self.loop.call_later(self.request_timeout_s, self._on_deadline)

    def _cancel_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _on_deadline(self) -> None:
        self.deadline = None
        # IDLE: the request line or headers are incomplete; SEND_BODY: the body is
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            log.info(
                "a request did not arrive within %g s: connection closed", self.request_timeout_s
            )
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        body = problem_body(400, "malformed HTTP request")
        event = h11.Response(
            status_code=400, headers=_raw_headers(PROBLEM, len(body)), reason=b"Bad Request"
        )
        with contextlib.suppress(h11.LocalProtocolError):
            self.transport.write(self.conn.send(event))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        self._linger()

    def _linger(self) -> None:
        """Close once the client has closed its side or :data:`LINGER_S` passed, reading and
        dropping the rest of its request meanwhile: closing with unread bytes would reset the
        connection, and the client could lose the answer."""
        self.lingering = True
        self._cancel_deadline()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if not self.lingering:
            super().data_received(data)


def protocol_for(config: ApiConfig, refusals: Refusals) -> type[BoundedProtocol]:
    return type(
        "ApiProtocol",
        (BoundedProtocol,),
        {"request_timeout_s": config.request_timeout_s, "refusals": refusals},
    )


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # run_api handles SIGTERM and SIGINT (see the module docstring)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


class ApiServer:
    """The API on a bound socket: ``serve_forever`` (blocks), ``shutdown`` (from another
    thread or a signal handler: stop after the running requests), ``server_close``."""

    def __init__(self, config: ApiConfig, host: str, port: int) -> None:
        self.config = config
        self.socket = _listen(host, port)
        try:
            self.api = Api(config)
        except BaseException:
            self.socket.close()
            raise
        self.refusals = Refusals()
        self.api.metrics.refused = lambda: self.refusals.count
        self._server = _Uvicorn(
            uvicorn.Config(
                create_app(self.api),
                http=protocol_for(config, self.refusals),
                ws="none",
                lifespan="on",
                limit_concurrency=config.max_connections + 1,
                timeout_keep_alive=KEEP_ALIVE_S,
                backlog=LISTEN_BACKLOG,
                log_config=None,  # the process's logging is basewatch's (core.logs)
                access_log=False,  # basewatch.api.app.Edge logs each request
                server_header=False,  # Edge says Server: basewatch
                proxy_headers=False,
            )
        )
        self._serving = threading.Event()
        self._done = threading.Event()
        self._closed = False

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._done.set()

    def stop(self) -> None:
        """Ask the server to stop (safe in a signal handler)."""
        self._server.should_exit = True

    def shutdown(self) -> None:
        """Stop and wait until ``serve_forever`` has returned."""
        self.stop()
        if self._serving.is_set():
            self._done.wait()

    def server_close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.socket.close()
        self.api.close()


def make_server(config: ApiConfig, host: str, port: int) -> ApiServer:
    """Bind (port 0: any free port) and open the pool; serve with ``serve_forever``, stop
    with ``shutdown`` + ``server_close``."""
    if not 0 <= port <= 65535:
        raise ConfigError("--port", f"must be between 0 and 65535, got {port}")
    return ApiServer(config, host, port)


def run_api(settings: Settings, *, host: str, port: int) -> int:
    """``basewatch api``: serve until SIGTERM or SIGINT; returns the exit code (0)."""
    config = ApiConfig.from_settings(settings)
    server = make_server(config, host, port)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping after the running requests", signal.Signals(signum).name)
        server.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info(
            "api listening on %s (%d threads, at most %d connections held, %d database "
            "connections)",
            server.url,
            config.threads,
            config.max_connections,
            config.db_pool_max,
        )
        server.serve_forever()
    finally:
        server.server_close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("api stopped")
    return 0
