"""A private Mosquitto broker on a free loopback port, configured from the project's production
config (``deploy/mosquitto/mosquitto.conf``) minus listeners, authentication, TLS and file paths.

The demo and the tests use it so that they run against the same queueing and persistence
settings as production, without touching a broker already on this machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from core.errors import ConfigError

log = logging.getLogger(__name__)

PRODUCTION_CONFIG = (
    Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "mosquitto.conf"
)
# Options that only make sense on the production host (ports, users, certificates, paths).
DROPPED_OPTIONS = frozenset(
    {
        "listener",
        "password_file",
        "acl_file",
        "allow_anonymous",
        "cafile",
        "certfile",
        "keyfile",
        "require_certificate",
        "use_identity_as_username",
        "persistence_location",
        "log_dest",
        "pid_file",
        "port",
        "bind_address",
        "capath",
        "crlfile",
        "tls_version",
        "ciphers",
        "ciphers_tls1.3",
        "dhparamfile",
        "psk_file",
        "psk_hint",
        "socket_domain",
        "protocol",
        "mount_point",
        "http_dir",
        "use_subject_as_username",
        "use_username_as_clientid",
        "user",
    }
)
# Used when the production config is not next to the code (an installed package).
FALLBACK_CONFIG = """\
per_listener_settings false
persistence true
autosave_interval 30
set_tcp_nodelay true
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 0
persistent_client_expiration 14d
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_config(port: int, data_dir: Path, source: Path | None = None) -> str:
    """The private broker's config text."""
    path = source or PRODUCTION_CONFIG
    base = path.read_text() if path.exists() else FALLBACK_CONFIG
    kept = []
    for line in base.splitlines():
        words = line.split()
        if words and not words[0].startswith("#") and words[0] in DROPPED_OPTIONS:
            continue
        kept.append(line)
    if os.geteuid() == 0:
        # as root, Mosquitto switches to the mosquitto user, who cannot write our temp folder
        kept.append("user root")
    kept += [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        f"persistence_location {data_dir}/",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    return "\n".join(kept) + "\n"


class LocalBroker:
    """Context manager: start Mosquitto, yield, stop it. ``restart()`` keeps its persistence."""

    def __init__(self, port: int | None = None, binary: str = "mosquitto") -> None:
        found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin")
        if found is None:
            raise ConfigError(
                "mosquitto",
                "the Mosquitto broker is not installed "
                "(apt-get install mosquitto), or point BASEWATCH_MQTT_HOST at a "
                "broker",
            )
        self.binary = found
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="basewatch-mqtt-"))
        self._config = self._dir / "mosquitto.conf"
        (self._dir / "data").mkdir()
        self._config.write_text(broker_config(self.port, self._dir / "data"))
        self._log = self._dir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalBroker:
        log_file = self._log.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self._config)], stdout=log_file, stderr=log_file
        )
        log_file.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(
                    "mosquitto", f"the broker exited at start: {self._log.read_text()[-500:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise ConfigError("mosquitto", f"the broker did not listen on port {self.port}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker; a graceful stop saves its persistence file first."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
