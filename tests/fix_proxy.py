"""A small threaded TCP proxy for fault tests: put it between a process and a real service
(PostgreSQL by default) and cut the link at will.

``stop()`` is an outage: the listener closes (new connections are refused) and every open
connection is closed on both sides, so the client sees its server vanish mid-conversation.
``start()`` listens again on the same port. ``hold_requests()`` stops forwarding the client's
bytes to the server (they wait in the kernel buffers and are lost at ``stop()``) while the
server's bytes still reach the client: with MQTT in between, the client keeps receiving and
its acknowledgements never arrive. ``hang()`` is a hung link: nothing is forwarded in either
direction and nothing is closed (new connections are accepted and hang too) until ``resume()``;
as with any user-space proxy, the kernel still acknowledges the bytes it buffers, so TCP
keepalives and ``tcp_user_timeout`` see a live peer and only an application deadline notices.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from basewatch.localbroker import free_port

_CHUNK = 65536
_POLL_S = 0.05


class TcpProxy:
    """Forwards connections from ``127.0.0.1:<port>`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.accepted = 0  # connections forwarded since creation
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._holding = threading.Event()
        self._hung = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._links: list[tuple[socket.socket, socket.socket, threading.Thread]] = []

    @classmethod
    def to_database(cls, url: str) -> TcpProxy:
        """A proxy to the server ``url`` names (its host and port, 127.0.0.1:5432 by default),
        so the outage tests follow ``BASEWATCH_TEST_DATABASE_URL``."""
        params = conninfo_to_dict(url)
        host = str(params.get("hostaddr") or params.get("host") or "127.0.0.1")
        if host.startswith("/"):
            host = "127.0.0.1"  # a socket directory: the same server on loopback
        return cls(host, int(str(params.get("port") or 5432)))

    # -- control ------------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Listen (again) on ``self.port``."""
        if self._running.is_set():
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        self._holding.clear()
        self._hung.clear()
        self._running.set()
        self._acceptor = threading.Thread(
            target=self._accept_loop, args=(listener,), name="proxy-accept", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """An outage: stop listening and close every open connection, both ends."""
        self._running.clear()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)  # it closes the listener
            self._acceptor = None
        self._listener = None
        with self._lock:
            links, self._links = self._links, []
        for client, upstream, _thread in links:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):  # already closed by its thread
                    sock.shutdown(socket.SHUT_RDWR)
        for _client, _upstream, thread in links:
            thread.join(timeout=5)

    def hold_requests(self) -> None:
        """Stop forwarding client → server bytes (server → client still flows)."""
        self._holding.set()

    def release_requests(self) -> None:
        self._holding.clear()

    def hang(self) -> None:
        """Stop forwarding in both directions without closing anything (see the module doc)."""
        self._hung.set()

    def resume(self) -> None:
        """Forward again what waited and what follows."""
        self._hung.clear()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for _c, _u, thread in self._links if thread.is_alive())

    def database_url(self, url: str) -> str:
        """``url`` (libpq URI or conninfo) redirected through this proxy."""
        params = conninfo_to_dict(url)
        params["host"] = self.host
        params["port"] = str(self.port)
        params.pop("hostaddr", None)
        return make_conninfo("", **params)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- threads ------------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while self._running.is_set():
                readable, _, _ = select.select([listener], [], [], _POLL_S)
                if not readable:
                    continue
                try:
                    client, _addr = listener.accept()
                except OSError:
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()  # the target is down: so are we, for this client
                    continue
                for sock in (client, upstream):
                    sock.settimeout(None)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                thread = threading.Thread(
                    target=self._pump, args=(client, upstream), name="proxy-link", daemon=True
                )
                with self._lock:
                    if not self._running.is_set():
                        client.close()
                        upstream.close()
                        break
                    self._links.append((client, upstream, thread))
                    self.accepted += 1
                thread.start()
        finally:
            listener.close()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                if self._hung.is_set():
                    if not self._running.is_set():
                        return  # stop() while hung
                    time.sleep(_POLL_S)
                    continue
                watched = [upstream] if self._holding.is_set() else [client, upstream]
                readable, _, _ = select.select(watched, [], [], _POLL_S)
                for source in readable:
                    data = source.recv(_CHUNK)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
        except (OSError, ValueError):
            return  # closed by stop() or by either peer
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
