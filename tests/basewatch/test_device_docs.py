"""The README's device integration section works as written (issue 14 item 17): its
``mosquitto_pub`` line, run against a broker set up like the demo's private one (anonymous,
loopback) with a real ``basewatch ingest``, stores the reading; its metric table names the
metrics the signals read, in the units the simulator (the reference machine) reports."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import psycopg

from basewatch.localbroker import LocalBroker, broker_config
from signals.catalogue import INDICATORS
from simulator.physics import METRICS
from tests.fix_ingest import IngesterProcess, register, wait_for, wait_subscribed

README = (Path(__file__).parent.parent.parent / "README.md").read_text()
SECTION = README.split("## Device integration\n", 1)[1].split("\n## ", 1)[0]


def _publish_line() -> list[str]:
    [line] = [line for line in SECTION.splitlines() if line.startswith("mosquitto_pub ")]
    return shlex.split(line)


def test_the_readme_mosquitto_pub_line_stores_a_reading_through_a_demo_like_broker(
    db_url: str, broker: LocalBroker, tmp_path: Path
) -> None:
    # the demo's private broker: anonymous logins, as the README says
    config = broker_config(1883, tmp_path)
    assert "allow_anonymous true" in config
    assert "anonymous, no username or password" in SECTION
    argv = _publish_line()
    assert "-u" not in argv
    assert "-P" not in argv
    topic = argv[argv.index("-t") + 1]
    payload = json.loads(argv[argv.index("-m") + 1])
    # the JSON example above the commands is the same reading
    [example] = re.findall(r"```json\n(.*?)```", SECTION, re.S)
    assert json.loads(example) == payload
    prefix, account_id, asset_id, kind = topic.rsplit("/", 3)
    assert (prefix, kind) == ("basewatch/v1", "telemetry")
    register(db_url, [(account_id, asset_id), (account_id, "probe-01")])
    argv[argv.index("-h") + 1] = broker.host
    argv[argv.index("-p") + 1] = str(broker.port)
    with IngesterProcess(db_url, broker, prefix):
        wait_subscribed(db_url, broker, prefix, (account_id, "probe-01"))
        published = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert published.returncode == 0, published.stderr
        stored = wait_for(
            db_url, "SELECT count(*) FROM telemetry WHERE asset_id = %s", 1, params=(asset_id,)
        )
    assert stored == 1
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT time, metrics FROM telemetry WHERE asset_id = %s", (asset_id,)
        ).fetchone()
    assert row is not None
    assert row[0].isoformat() == "2026-01-05T08:30:00+00:00"
    assert row[1] == payload["metrics"]


def test_the_metric_table_names_what_the_signals_read_in_the_reference_units() -> None:
    table = [line for line in SECTION.splitlines() if line.startswith("| `")]
    documented = {
        name for line in table for name in re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])
    }
    # every metric the rule signals and indicators read by name
    read_by_signals = {
        "flow_m3_min", "load_pct", "pressure_bar", "power_kw", "energy_kwh", "running_hours",
        *(indicator.metric for indicator in INDICATORS.values()),
    }  # fmt: skip
    assert read_by_signals <= documented
    # and every name is one the reference machine (the simulator) reports
    assert documented <= set(METRICS)
    for metric in documented:
        assert any(f"`{metric}`" in line for line in table)
