"""An in-process SMTP server (aiosmtpd) on a free port that records the messages it accepts
and can refuse the first ones with a temporary error, as a real server under load does.

``refuse_next(n, at="DATA")`` makes the next ``n`` transactions fail with ``451`` at DATA (or
at RCPT); later ones are accepted. ``messages`` holds the accepted ones, parsed.
"""

from __future__ import annotations

import contextlib
import email
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from basewatch.localbroker import free_port

REFUSAL = "451 4.3.0 Temporary failure, try again later"


class RecordingHandler:
    """aiosmtpd handler: records accepted messages, refuses on request."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refused = 0  # transactions refused so far
        self._refuse = {"RCPT": 0, "DATA": 0}
        self._lock = threading.Lock()

    def refuse_next(self, count: int, at: str = "DATA") -> None:
        with self._lock:
            self._refuse[at] = count

    def _take_refusal(self, stage: str) -> bool:
        with self._lock:
            if self._refuse[stage] > 0:
                self._refuse[stage] -= 1
                self.refused += 1
                return True
            return False

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self._take_refusal("RCPT"):
            return REFUSAL
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._take_refusal("DATA"):
            return REFUSAL
        message = email.message_from_bytes(envelope.content, policy=default)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpServer:
    """A running recording server: ``host``, ``port``, ``handler``."""

    def __init__(self) -> None:
        self.handler = RecordingHandler()
        self.host = "127.0.0.1"
        self.port = free_port()
        self._controller = Controller(self.handler, hostname=self.host, port=self.port)

    @property
    def messages(self) -> list[EmailMessage]:
        return list(self.handler.messages)

    def refuse_next(self, count: int, at: str = "DATA") -> None:
        self.handler.refuse_next(count, at)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@contextlib.contextmanager
def running_smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server
