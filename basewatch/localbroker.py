"""A private Mosquitto broker on a free loopback port, configured from the project's production
config (``deploy/mosquitto/mosquitto.conf``) minus listeners, authentication, TLS and file paths.

The demo and the tests use it so that they run against the same queueing and persistence
settings as production, without touching a broker already on this machine.

``LocalBroker(secured=True)`` keeps the production authentication and authorisation instead:
the dynamic-security plugin (its path on this machine, its file in the broker's temporary
folder, initialised with an ``admin`` login by ``mosquitto_ctrl dynsec init``), anonymous
logins refused, and the production listeners' ``use_username_as_clientid`` on its own
listener. Its users and roles are then made with ``deploy/mosquitto/mqtt-users`` as in
production; the tests use it to attack the broker the way a device could.
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
        "plugin",
        "plugin_opt_config_file",
    }
)
# Listener options of the production listeners that a secured broker puts on its own listener.
SECURED_LISTENER_OPTIONS = frozenset({"use_username_as_clientid"})
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
ADMIN_USER = "admin"
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


def find_dynsec_plugin() -> Path | None:
    """The dynamic-security plugin of the installed Mosquitto, if any."""
    for folder in ("/usr/lib", "/usr/local/lib", "/usr/lib64"):
        for pattern in (DYNSEC_PLUGIN, f"*/{DYNSEC_PLUGIN}", f"mosquitto/{DYNSEC_PLUGIN}"):
            for found in sorted(Path(folder).glob(pattern)):
                return found
    return None


def broker_config(
    port: int,
    data_dir: Path,
    source: Path | None = None,
    *,
    secured: bool = False,
    plugin: Path | None = None,
) -> str:
    """The private broker's config text: open to anyone on loopback, or ``secured`` with the
    production config's plugin (``plugin`` is its path here) and listener options."""
    path = source or PRODUCTION_CONFIG
    base = path.read_text() if path.exists() else FALLBACK_CONFIG
    kept = []
    listener_options: list[str] = []
    for line in base.splitlines():
        words = line.split()
        option = words[0] if words and not words[0].startswith("#") else ""
        if secured and option == "plugin":
            kept.append(f"plugin {plugin}")
        elif secured and option == "plugin_opt_config_file":
            kept.append(f"plugin_opt_config_file {data_dir}/dynamic-security.json")
        elif secured and option in SECURED_LISTENER_OPTIONS:
            if line.strip() not in listener_options:
                listener_options.append(line.strip())
        elif option not in DROPPED_OPTIONS:
            kept.append(line)
    if os.geteuid() == 0:
        # as root, Mosquitto switches to the mosquitto user, who cannot write our temp folder
        kept.append("user root")
    kept += [
        f"listener {port} 127.0.0.1",
        *listener_options,
        f"allow_anonymous {'false' if secured else 'true'}",
        f"persistence_location {data_dir}/",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    return "\n".join(kept) + "\n"


class LocalBroker:
    """Context manager: start Mosquitto, yield, stop it. ``stop()`` then ``start()`` keeps its
    persistence."""

    def __init__(
        self,
        port: int | None = None,
        binary: str = "mosquitto",
        *,
        secured: bool = False,
        admin_password: str = "",
    ) -> None:
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
        self.secured = secured
        self.admin_user = ADMIN_USER
        self.admin_password = admin_password
        plugin = None
        if secured:
            plugin = find_dynsec_plugin()
            if plugin is None:
                raise ConfigError("mosquitto", f"{DYNSEC_PLUGIN} is not installed")
            if not admin_password:
                raise ConfigError("mosquitto", "a secured broker needs an admin password")
            self._init_dynsec(self._dir / "data" / "dynamic-security.json")
        self._config.write_text(
            broker_config(self.port, self._dir / "data", secured=secured, plugin=plugin)
        )
        self._log = self._dir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def _init_dynsec(self, path: Path) -> None:
        ctrl = shutil.which("mosquitto_ctrl")
        if ctrl is None:
            raise ConfigError("mosquitto", "mosquitto_ctrl is not installed")
        subprocess.run(
            [ctrl, "dynsec", "init", str(path), self.admin_user, self.admin_password],
            check=True,
            capture_output=True,
        )

    def log_text(self) -> str:
        """What the broker logged so far (errors and warnings)."""
        return self._log.read_text(errors="replace") if self._log.exists() else ""

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
