"""A progress line at least every few seconds during long work (the demo's replay).

:class:`Heartbeat` prints through the caller's ``progress`` function. The work says what it is
doing with :meth:`Heartbeat.status` (a function giving the current status line) and prints its
own lines with :meth:`Heartbeat.say`; a daemon thread prints the current status whenever
``interval_s`` passed without a line, so a single long step (a model training, a rollup
refresh) never leaves the user more than ``interval_s`` without news.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

INTERVAL_S = 10.0


def duration(seconds: float) -> str:
    """``45 s``, ``2 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Heartbeat:
    """Prints ``status()`` whenever ``interval_s`` passed without a line (see the docstring)."""

    def __init__(self, progress: Callable[[str], None], interval_s: float = INTERVAL_S) -> None:
        self._progress = progress
        self._interval = interval_s
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._status: Callable[[], str] = lambda: "working"
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def status(self, status: Callable[[], str]) -> None:
        """What the work is doing now (called from the heartbeat thread: keep it cheap)."""
        with self._lock:
            self._status = status

    def say(self, text: str) -> None:
        """Print ``text`` now."""
        with self._lock:
            self._progress(text)
            self._last = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last line."""
        with self._lock:
            return time.monotonic() - self._last

    def _run(self) -> None:
        while not self._done.wait(min(1.0, self._interval / 4)):
            with self._lock:
                if time.monotonic() - self._last >= self._interval:
                    self._progress(self._status())
                    self._last = time.monotonic()
