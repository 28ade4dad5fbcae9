"""The CLI contract: --json prints one JSON document, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_usage_errors_exit_2_with_a_line_naming_the_option() -> None:
    """Issue 14 item 17: ``deadletters replay`` without ids and ``api --port 99999`` ended
    with exit 1 (a failure to fix) instead of 2 (wrong usage)."""
    cases = {
        ("deadletters", "replay"): "argument ID: name the dead letter ids to replay, or pass --all",
        ("deadletters", "replay", "3", "--all"): "argument --all:",
        ("api", "--port", "99999"): "argument --port: must be between 0 and 65535",
        ("api", "--port", "http"): "argument --port: expected a port number",
        ("simulate", "--months", "1"): "argument --months: must be at least 2",
        ("import", "telemetry", "x.csv", "--time-origin", "yesterday"): "argument --time-origin:",
        ("import", "events", "x.csv", "--rename", "ts"): "argument --rename: expected OLD=NEW",
        ("signals", "backtest", "--from", "2025-02-01", "--to", "2025-01-01"): "argument --to:",
        ("signals", "backtest", "--from", "2025-01-01", "--to", "2025-02-01", "--kind", "x"): (
            "argument --kind: unknown signal kind(s) x"
        ),
    }
    for argv, named in cases.items():
        # an unreachable database: the usage is refused before anything is tried
        result = run(*argv, db_url="postgresql://postgres@127.0.0.1:1/none")
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stdout == ""
        last = result.stderr.strip().splitlines()[-1]
        words = 2 if argv[0] in ("deadletters", "import", "signals") else 1
        assert last.startswith(f"basewatch {' '.join(argv[:words])}: error: "), last
        assert named in last, (argv, last)


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "basewatch 0.1.0"


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
    result = run("db", "stats", "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["telemetry"]["rows"] >= 0
    assert {"first_time", "last_time"} <= stats["telemetry"].keys()
    assert stats["events"]["rows"] >= 0
    assert stats["dead_letters"]["rows"] >= 0


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
