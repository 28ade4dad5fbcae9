"""``basewatch demo`` end to end on a small fleet, with an ingester that is slow to start.

On a busy machine the demo lost whole accounts: it waited a fixed second for its ingester
before publishing, and what it published before the ingester's SUBSCRIBE reached the broker had
no subscriber and was dropped. The demo must publish only after the ingester's SUBACK, in both
broker modes. The slow start is real: every ``basewatch ingest`` process of the demo sleeps
before it runs (a ``sitecustomize`` on its PYTHONPATH), as a loaded machine would make it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from basewatch.localbroker import LocalBroker
from core.db import drop_database, with_database
from tests.fix_db import TEST_SERVER_URL

INGESTER_START_DELAY_S = 4.0  # well over the 1 s the demo used to wait

SLOW_INGESTER = f"""\
import sys, time
if "ingest" in sys.argv:
    time.sleep({INGESTER_START_DELAY_S})
"""


def run_demo(tmp_path: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_INGESTER)
    database = f"bwtest_demo_{uuid.uuid4().hex[:8]}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    environ.update(
        BASEWATCH_DATABASE_URL=TEST_SERVER_URL,
        BASEWATCH_TIMESCALE="off",
        PYTHONPATH=str(tmp_path / "site"),
        **env,
    )
    fleet = ("--accounts", "2", "--assets", "3", "--months", "2", "--signal-months", "0")
    where = ("--database", database, "--out", str(tmp_path / "out"))
    try:
        return subprocess.run(
            [sys.executable, "-m", "basewatch", "demo", "--json", *fleet, *where, *extra],
            env=environ,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        drop_database(with_database(TEST_SERVER_URL, database))


def assert_everything_stored(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["readings_simulated"] > 0
    assert summary["stats"]["telemetry"]["rows"] == summary["readings_simulated"]
    assert len(summary["dead_letters"]) == 4  # the deliberately bad messages
    # how to open the workspace: in the JSON document, not as text on stdout
    workspace = summary["workspace"]
    assert workspace["signin_url"].endswith("/signin")
    assert "basewatch api" in workspace["start_api"]
    users = {u["username"]: u for u in workspace["users"]}
    assert users["demo-admin"]["role"] == "admin"
    assert sorted(u["csm_id"] for u in users.values() if u["role"] == "csm") == ["csm-01"]
    assert all(len(u["password"]) >= 12 for u in users.values())
    assert "Open the workspace" not in result.stdout


def test_demo_waits_for_the_ingesters_subscription_with_a_private_broker(tmp_path: Path) -> None:
    assert_everything_stored(run_demo(tmp_path, "--broker", "private"))


def test_demo_waits_for_the_ingesters_subscription_with_the_configured_broker(
    tmp_path: Path, broker: LocalBroker
) -> None:
    result = run_demo(
        tmp_path,
        "--broker",
        "configured",
        BASEWATCH_MQTT_HOST=broker.host,
        BASEWATCH_MQTT_PORT=str(broker.port),
        BASEWATCH_TOPIC_PREFIX=f"bwtest/{uuid.uuid4().hex[:10]}",
    )
    assert_everything_stored(result)
