"""The CLI contract: --json prints one JSON document, exit codes 0 / 1 / 2."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

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
        (
            "signals",
            "backtest",
            "--from",
            "2025-01-01",
            "--to",
            "2025-02-01",
            "--kind",
            "component_due",
        ): "argument --kind: component_due was retired",
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


# Characters a terminal acts on (C0 incl. ESC, CR and BEL, DEL, C1 incl. the one-byte CSI) and
# bidi controls that reorder what is shown; none may reach the terminal raw.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\r\x7f\x9b31m\u202egnp.exe\u2066x\u2069\x00"
RAW_FORBIDDEN = set("\x00\x07\x1b\r\x7f\x9b\u202e\u2066\u2069")


def test_deadletters_list_escapes_control_and_bidi_characters(db_url: str) -> None:
    """Issue 11 item 8: a device's bytes (topic, payload, reason) were printed raw, so a
    payload with ESC[2J cleared the operator's screen. Text output escapes them; --json stays
    valid JSON with the exact strings and no raw control or bidi character either."""
    import hashlib

    import psycopg

    tag = "ctl-" + os.urandom(4).hex()
    topic = f"basewatch/v1/acme/{HOSTILE}/telemetry".replace("\x00", "")  # text: no NUL
    payload = f'{{"ts": 1, "metrics": {{"{HOSTILE}": 1}}}}'.encode()
    reason = f"{tag}: metrics: {HOSTILE.replace(chr(0), '')} is not an identifier"
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO dead_letters (source, topic, payload, payload_sha256, payload_bytes,"
            " reason) VALUES ('mqtt', %s, %s, %s, %s, %s)",
            (topic, payload, hashlib.sha256(payload).digest(), len(payload), reason),
        )

    text = run("deadletters", "list", "--reason", tag, db_url=db_url)
    assert text.returncode == 0, text.stderr
    leaked = {c for c in text.stdout if c in RAW_FORBIDDEN}
    assert not leaked, f"raw characters printed: {sorted(map(hex, map(ord, leaked)))}"
    assert text.stdout.count("\n") == 3, text.stdout  # the header, reason and payload lines
    escaped = "\\x1b[2J\\x1b]0;pwned\\x07\\x0d\\x7f\\x9b31m\\u202egnp.exe"
    assert f"basewatch/v1/acme/{escaped}" in text.stdout
    assert "\\u2066x\\u2069/telemetry" in text.stdout
    assert f"reason: {tag}: metrics: \\x1b[2J" in text.stdout
    assert f'"metrics": {{"{escaped}' in text.stdout  # the payload preview
    assert "\\x00" in text.stdout  # the NUL of the payload

    as_json = run("deadletters", "list", "--reason", tag, "--json", db_url=db_url)
    assert as_json.returncode == 0, as_json.stderr
    assert not {c for c in as_json.stdout if c in RAW_FORBIDDEN}
    assert as_json.stdout.isascii()  # bidi and C1 too: ensure_ascii writes them as \uXXXX
    (row,) = json.loads(as_json.stdout)
    assert (row["topic"], row["reason"], row["payload"]) == (topic, reason, payload.decode())


def test_registry_import_refuses_nul_line_breaks_and_bidi_controls(
    db_url: str, tmp_path: Path
) -> None:
    """Issue 11 item 8: a NUL in a name gave a database error without file:line, and CR/LF and
    bidi controls were stored. Each is now refused with file:line: column:, exit 1, and nothing
    of any file is written."""
    import psycopg

    tag = os.urandom(3).hex()
    accounts = tmp_path / "accounts.csv"
    accounts.write_bytes(
        (
            "account_id,name,industry,region\n"
            f"ok-{tag},Fine GmbH,food,EU\n"
            f"nul-{tag},Acme\x00 AG,food,EU\n"
            f'lf-{tag},"Two\r\nLines",food,EU\n'
            f"bidi-{tag},Invoice\u202egpj.exe,food,EU\n"
            f"esc-{tag},Plain,\x1b[31mred,EU\n"
            f"tab-{tag},Plain,food,E\tU\n"
        ).encode()
    )
    csms = tmp_path / "csms.csv"
    csms.write_text(f"csm_id,name,email\ncsm-{tag},Ann,ann\u2066@example.com\n")
    result = run("registry", "import", str(accounts), str(csms), db_url=db_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    errors = result.stderr.splitlines()[1:]
    refused = "control and bidi characters are not allowed"
    assert errors == [
        f"{accounts}:3: name: NUL (U+0000) at position 5: {refused}",
        # a record spanning lines: the CSV reader's line number is the record's last line
        f"{accounts}:5: name: line feed (U+000A) at position 4: {refused}",
        f"{accounts}:6: name: right-to-left override (U+202E) at position 8: {refused}",
        f"{accounts}:7: industry: escape (U+001B) at position 1: {refused}",
        f"{accounts}:8: region: tab (U+0009) at position 2: {refused}",
        f"{csms}:2: email: left-to-right isolate (U+2066) at position 4: {refused}",
    ], result.stderr
    assert not any(c in result.stderr for c in "\x00\r\x1b\u202e\u2066")
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM accounts WHERE account_id LIKE %s)"
            " + (SELECT count(*) FROM csms WHERE csm_id LIKE %s)",
            (f"%-{tag}", f"%-{tag}"),
        ).fetchone()
    assert row == (0,), "rows were written"


DEPLOY = Path(__file__).parent.parent.parent / "deploy"
NOWHERE = {  # if a command got past the check it would fail here, not touch a real service
    "BASEWATCH_DATABASE_URL": "postgresql://basewatch_app@127.0.0.1:1/none",
    "BASEWATCH_MQTT_PORT": "1",
    "BASEWATCH_API_PORT": "1",
}


def _example_env() -> dict[str, str]:
    """The settings deploy/basewatch.env.example ships (its uncommented KEY=value lines)."""
    lines = (DEPLOY / "basewatch.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _refused(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert all(name in lines[0] for name in names), lines[0]
    assert "placeholder" in lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [["ingest"], ["scheduler"], ["api"], ["db", "migrate"]])
def test_services_refuse_the_example_files_placeholder_secrets(command: list[str]) -> None:
    """Issue 11 item 8: deploy's placeholder passwords (change-me) were accepted. With the
    example environment file as shipped, every service refuses to start, in one line."""
    env = {**_example_env(), "BASEWATCH_MQTT_PORT": "1", "BASEWATCH_API_PORT": "1"}
    line = _refused(run(*command, **env), "BASEWATCH_DATABASE_URL", "BASEWATCH_MQTT_PASSWORD")
    assert "'change-me'" in line


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"BASEWATCH_MQTT_USERNAME": "basewatch-ingest", "BASEWATCH_MQTT_PASSWORD": "changeme"},
         "BASEWATCH_MQTT_PASSWORD"),
        ({"BASEWATCH_DATABASE_URL": "postgresql://basewatch_app:Password@127.0.0.1:1/none"},
         "BASEWATCH_DATABASE_URL"),
        ({"BASEWATCH_DATABASE_URL": "host=127.0.0.1 port=1 dbname=none password=secret"},
         "BASEWATCH_DATABASE_URL"),
        ({"PGPASSWORD": "change_me"}, "PGPASSWORD"),
        ({"BASEWATCH_API_TOKEN": "example-token"}, "BASEWATCH_API_TOKEN"),
        ({"BASEWATCH_DB_APP_ROLE": "basewatch_app", "BASEWATCH_DB_APP_PASSWORD": "<password>"},
         "BASEWATCH_DB_APP_PASSWORD"),
    ],
)  # fmt: skip
def test_each_placeholder_secret_is_refused(env: dict[str, str], name: str) -> None:
    _refused(run("ingest", **{**NOWHERE, **env}), name)


def test_a_real_secret_passes_the_check() -> None:
    env = {
        **NOWHERE,
        "BASEWATCH_DATABASE_URL": "postgresql://basewatch_app:9f3c1e7a2b@127.0.0.1:1/none",
        "BASEWATCH_MQTT_USERNAME": "basewatch-ingest",
        "BASEWATCH_MQTT_PASSWORD": "q8ZyJx2w-LmN4",
    }
    result = run("db", "migrate", **env)
    assert result.returncode == 1
    assert "cannot connect to PostgreSQL" in result.stderr
    assert "placeholder" not in result.stderr


def test_every_command_module_is_registered_the_same_way() -> None:
    """Issue 12: subcommands were added three different ways; now every ``*_commands`` module
    exposes ``register(commands)`` and the CLI calls each once."""
    from basewatch import cli

    modules = {p.stem for p in Path(cli.__file__).parent.glob("*_commands.py")}
    assert {f.__module__.removeprefix("basewatch.") for f in cli.REGISTER} == modules
    assert {f.__name__ for f in cli.REGISTER} == {"register"}
    assert len(cli.REGISTER) == len(modules)
