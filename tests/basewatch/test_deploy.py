"""The deploy files' secrets and database roles (issue 11 item 8): Compose cannot start with a
secret unset, and only ``migrate`` connects as the database owner. (No Docker here: the compose
file is checked as text; tests/basewatch/test_cli.py runs the services on the example
environment file and sees them refuse its placeholders.)"""

from __future__ import annotations

import re
from pathlib import Path

COMPOSE = (Path(__file__).parent.parent.parent / "deploy" / "compose.yaml").read_text()
SECRETS = ("POSTGRES_PASSWORD", "BASEWATCH_DB_APP_PASSWORD", "BASEWATCH_MQTT_PASSWORD")


def _settings_lines() -> list[tuple[str, str]]:
    """(key, value) of every ``KEY: value`` line (comments start with ``#``: never matched)."""
    found = re.findall(r"^\s+([A-Z][A-Z0-9_]+):\s*(.+?)\s*$", COMPOSE, flags=re.MULTILINE)
    return [(key, value) for key, value in found]


def test_every_secret_is_required_from_the_dot_env_file() -> None:
    lines = _settings_lines()
    secret_lines = [
        (key, value)
        for key, value in lines
        if key == "PGPASSWORD" or key.endswith(("_PASSWORD", "_TOKEN"))
    ]
    assert {key for key, _ in secret_lines} >= {*SECRETS, "PGPASSWORD"}
    for key, value in secret_lines:
        match = re.fullmatch(r"\$\{([A-Z0-9_]+):\?[^}]+\}", value)
        assert match, f"{key}: {value} is not a required ${{VAR:?message}}"
        assert match.group(1) in SECRETS, value
    for name in SECRETS:  # every use of the variable, not only the lines above
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", COMPOSE)
        assert uses, name
        assert all(use.startswith(":?") for use in uses), (name, uses)


def test_only_migrate_connects_as_the_owner() -> None:
    urls = [value for key, value in _settings_lines() if key == "BASEWATCH_DATABASE_URL"]
    assert urls == [
        "postgresql://basewatch_app@timescaledb:5432/basewatch",  # the services' anchor
        "postgresql://postgres@timescaledb:5432/basewatch",  # migrate
    ]
    migrate = COMPOSE[COMPOSE.index("\n  migrate:") : COMPOSE.index("\n  ingest-1:")]
    assert "BASEWATCH_DATABASE_URL: postgresql://postgres@" in migrate
    assert "PGPASSWORD: ${POSTGRES_PASSWORD:?" in migrate
    assert "BASEWATCH_DB_APP_ROLE: basewatch_app" in migrate
    assert COMPOSE.count("${POSTGRES_PASSWORD") == 2  # the server's, and migrate's
