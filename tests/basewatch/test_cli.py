"""The CLI contract: --json prints one JSON document, exit codes 0 / 1 / 2."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

DATA = Path(__file__).parent.parent / "data"


def run(*args: str, db_url: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    if db_url:
        environ["BASEWATCH_DATABASE_URL"] = db_url
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "basewatch", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_wrong_usage_exits_2() -> None:
    assert run("db", "frobnicate").returncode == 2
    assert run("deadletters", "list", "--limit", "zero").returncode == 2


def test_unreachable_database_is_one_clear_line_and_exit_1() -> None:
    result = run("db", "stats", "--json", db_url="postgresql://postgres@127.0.0.1:1/none")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/none" in lines[0]


def test_bad_setting_names_the_variable() -> None:
    result = run("db", "stats", BASEWATCH_MQTT_PORT="x")
    assert result.returncode == 1
    assert "BASEWATCH_MQTT_PORT" in result.stderr


def test_db_stats_json_reports_counts_and_span(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO telemetry (asset_id, time, received_at, metrics) VALUES"
            " ('st-1', '2025-02-03 04:00+00', now(), '{\"x\": 1}'),"
            " ('st-1', '2025-02-05 06:00+00', now(), '{\"x\": 2, \"y\": 3}')"
        )
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM telemetry), (SELECT count(*) FROM asset_events),"
            " (SELECT count(*) FROM dead_letters), (SELECT min(time) FROM telemetry),"
            " (SELECT max(time) FROM telemetry)"
        ).fetchone()
    assert counts is not None
    result = run("db", "stats", "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["telemetry"]["rows"] == counts[0] >= 2
    assert stats["events"]["rows"] == counts[1]
    assert stats["dead_letters"]["rows"] == counts[2]
    first = dt.datetime.fromisoformat(stats["telemetry"]["first_time"])
    last = dt.datetime.fromisoformat(stats["telemetry"]["last_time"])
    assert (first, last) == (counts[3], counts[4])


def test_registry_import_reports_bad_lines_and_imports_good_files(
    db_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "accounts.csv"
    bad.write_text("account_id,name\nok,Fine\n,Missing id\n")
    result = run("registry", "import", str(bad), db_url=db_url)
    assert result.returncode == 1
    assert f"{bad}:3: account_id: required" in result.stderr

    result = run("registry", "import", "--json", str(DATA / "registry_mixed.csv"), db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "imported": True,
        "records": {"csm": 1, "account": 1, "asset": 1, "component": 1},
    }


def test_config_json_masks_secrets() -> None:
    result = run(
        "config",
        "--json",
        BASEWATCH_MQTT_USERNAME="u",
        BASEWATCH_MQTT_PASSWORD="hunter2",
    )
    assert result.returncode == 0
    assert json.loads(result.stdout)["BASEWATCH_MQTT_PASSWORD"] == "***"
    assert "hunter2" not in result.stdout


def test_fleet_options_out_of_range_are_usage_errors_naming_the_option(tmp_path: Path) -> None:
    cases = {
        ("--months", "1"): "--months",
        ("--months", "0"): "--months",
        ("--accounts", "0"): "--accounts",
        ("--accounts", "5", "--assets", "4"): "--assets",
        ("--stories", "steady=0"): "--stories",
        ("--stories", "nonsense=1"): "--stories",
    }
    for command in ("simulate", "demo"):
        for options, named in cases.items():
            result = run(command, *options, "--out", str(tmp_path / "never"))
            assert result.returncode == 2, (command, options, result.stderr)
            assert f"argument {named}:" in result.stderr, (command, options, result.stderr)
    assert not (tmp_path / "never").exists()


def test_simulate_a_four_month_fleet(tmp_path: Path) -> None:
    """``--months 4`` crashed with "empty range for randrange()" (seed 1, 40 accounts)."""
    result = run(
        "simulate", "--months", "4", "--assets", "40", "--json", "--out", str(tmp_path / "out")
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["accounts"] == 40
    assert document["readings"] > 0
