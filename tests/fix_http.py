"""A threaded HTTP server on a free port that records the POSTs it receives and answers
``500`` to the first ``fail_next(n)`` of them, ``200`` afterwards (a webhook endpoint with an
outage)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON
    status: int  # what the server answered


class WebhookServer:
    """``url(path)`` to post to; ``posts`` every request received; ``accepted`` the 2xx ones."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self._fail = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status = server._answer()
                with server._lock:
                    server.posts.append(
                        Post(self.path, dict(self.headers.items()), json.loads(raw), status)
                    )
                body = b"ok" if status == 200 else b"upstream exploded"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._fail = count

    def _answer(self) -> int:
        with self._lock:
            if self._fail > 0:
                self._fail -= 1
                return 500
            return 200

    @property
    def accepted(self) -> list[Post]:
        with self._lock:
            return [p for p in self.posts if p.status == 200]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def running_webhook_server() -> Iterator[WebhookServer]:
    server = WebhookServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    with running_webhook_server() as server:
        yield server
