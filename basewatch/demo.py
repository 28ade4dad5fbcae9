"""``basewatch demo`` and ``basewatch simulate``: the simulated fleet through the real pipeline.

The demo migrates a fresh database (``basewatch_demo`` on the configured server), registers the
fleet, starts a private Mosquitto with the project's config (or uses the configured broker) and
an ingester process, waits until the broker confirmed the ingester's subscription (its ready
file, written on the SUBACK), and publishes 24 months of hourly history over MQTT the way a
device gateway uploads its buffer: one message per asset and day holding that day's hourly
readings (QoS 1, a bounded window of unacknowledged messages). Hourly resolution and daily
batches keep the demo to a few minutes here: 150 machines × 24 months are about 2.3 million
readings, which one message per reading would take about ten minutes to carry. It then waits
until everything is committed, stores the ground truth and the commercial records, adds a few
deliberately bad messages to show the dead-letter path, and prints the fleet's story.

It ends with how to open the workspace (issue 15): the command that starts the API on the demo
database, the sign-in address (``BASEWATCH_API_PUBLIC_URL``, else ``BASEWATCH_API_HOST`` and
``BASEWATCH_API_PORT``) and its demo users (:func:`ensure_demo_users`): ``demo-admin`` (admin)
and one csm user per CSM of the fleet, named by the CSM id in lower case. Their passwords are
generated (``basewatch.users.generate_password``), never fixed, and printed once (in
``--json`` mode they are in the document's ``workspace``, not on stdout as text). A second
run on the same database (``--keep``) does not duplicate them: it gives each demo user a new
password and prints that, so every password shown works. A user of that name that is not
the demo's (another role or CSM, or disabled) is left alone and listed without a password.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from basewatch.demo_signals import signals_story
from basewatch.localbroker import LocalBroker
from basewatch.wiring import migrate_database
from core.db import connect, drop_database, with_database
from core.errors import ConfigError, StorageUnavailable
from core.registry import COLUMNS, KINDS, RegistryBatch, import_registry
from core.settings import Settings
from ingest.stats import storage_stats
from simulator.fleet import Fleet, make_fleet, month_start, parse_mix
from simulator.publish import Publisher
from simulator.simulate import SimulationOutput, mqtt_sink, run, write_csv
from simulator.simulate import write_files as write_simulation_files
from simulator.truth import store_ground_truth

DEMO_ADMIN = "demo-admin"
PROGRESS_INTERVAL_S = 3.0
INGESTER_START_TIMEOUT_S = 120.0
BAD_MESSAGES = (
    ("acct-999/ghost-01", b'{"ts": "2026-01-01T00:00:00Z", "metrics": {"load_pct": 50}}'),
    ("{account}/{asset}", b'{"ts": "yesterday", "metrics": {"load_pct": 50}}'),
    ("{account}/{asset}", b"\x00\xffnot json"),
    ("{account}/{asset}", b'{"ts": 1767600000000, "metrics": {"load_pct": NaN}}'),
)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fleet_from_args(args: argparse.Namespace) -> Fleet:
    try:
        mix = parse_mix(args.stories) if args.stories else None
        return make_fleet(
            seed=args.seed, accounts=args.accounts, assets=args.assets, months=args.months, mix=mix
        )
    except ValueError as exc:
        raise ConfigError("--stories/--accounts/--assets", str(exc)) from exc


def register_fleet(url: str, fleet: Fleet) -> None:
    records = fleet.registry_records()
    with connect(url) as conn:
        import_registry(conn, RegistryBatch({kind: records[kind] for kind in KINDS}))
        conn.commit()


def write_registry_csv(path: Path, fleet: Fleet) -> None:
    columns = ("record", *dict.fromkeys(c for kind in KINDS for c in COLUMNS[kind]))
    rows = [
        {"record": kind, **row}
        for kind, records in fleet.registry_records().items()
        for row in records
    ]
    write_csv(path, columns, rows)


class _Throttled:
    """Publishes through a Publisher and reports progress every few seconds."""

    def __init__(self, publisher: Publisher, stored_url: str | None) -> None:
        self.publisher = publisher
        self.stored_url = stored_url
        self._last = time.monotonic()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.publisher.publish(topic, payload)
        if time.monotonic() - self._last >= PROGRESS_INTERVAL_S:
            self._last = time.monotonic()
            stored = f", {_stored(self.stored_url)[0]:,} readings stored" if self.stored_url else ""
            _progress(f"  published {self.publisher.acked:,} messages{stored}")


def simulate_command(settings: Settings, args: argparse.Namespace) -> int:
    """Write the simulated fleet to files, or publish it to the configured broker."""
    from basewatch.output import emit

    fleet = fleet_from_args(args)
    if args.out:
        output = write_simulation_files(fleet, args.out, progress=_progress)
        write_registry_csv(args.out / "registry.csv", fleet)
        where = str(args.out)
    else:
        if not args.no_register:
            register_fleet(settings.database_url, fleet)
        with Publisher(
            settings.mqtt_host,
            settings.mqtt_port,
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            window=1000,
            max_payload_bytes=settings.ingest_max_payload_bytes,
        ) as publisher:
            output = run(
                fleet,
                mqtt_sink(_Throttled(publisher, None), settings.topic_prefix),
                progress=_progress,
            )
            _wait_answered(publisher)
            if publisher.unrouted:
                _progress(
                    f"warning: the broker had no subscriber for {publisher.unrouted:,} messages "
                    "and dropped them (is an ingester subscribed?)"
                )
        where = f"mqtt://{settings.mqtt_host}:{settings.mqtt_port}/{settings.topic_prefix}"
        if args.truth_out:
            write_csv(
                args.truth_out,
                ("kind", "account_id", "asset_id", "component", "time", "value", "detail"),
                output.truth,
            )
    document = {
        "accounts": len(fleet.accounts),
        "assets": len(fleet.assets),
        "readings": output.readings,
        "events": output.events,
        "contracts": len(output.contracts),
        "invoice_lines": len(output.invoices),
        "to": where,
    }
    emit(
        args,
        document,
        lambda: (
            f"simulated {output.readings:,} readings and {output.events:,} "
            f"events of {len(fleet.assets)} compressors at {len(fleet.accounts)} accounts "
            f"-> {where}"
        ),
    )
    return 0


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.output import emit

    url = with_database(settings.database_url, args.database)
    demo_settings = settings.replace(database_url=url)
    fleet = fleet_from_args(args)
    started = time.monotonic()
    _progress(
        f"demo: {len(fleet.accounts)} accounts, {len(fleet.assets)} compressors, "
        f"{fleet.months} months of hourly telemetry into database {args.database}"
    )
    if not args.keep:
        drop_database(url)
    report = migrate_database(demo_settings)
    register_fleet(url, fleet)
    with ExitStack() as stack:
        if args.broker == "private":
            broker = stack.enter_context(LocalBroker())
            host, port = broker.host, broker.port
            _progress(
                f"demo: private Mosquitto on {host}:{port} (the project's config without its "
                "logins: anonymous, no username or password, loopback only); it stops once the "
                "upload is stored"
            )
        else:
            host, port = settings.mqtt_host, settings.mqtt_port
        ready_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="basewatch-")))
        ingester = _start_ingester(url, host, port, settings, ready_dir / "ingest.ready")
        stack.callback(_stop, ingester)
        publish_started = time.monotonic()
        with Publisher(
            host,
            port,
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            window=1000,
            max_payload_bytes=settings.ingest_max_payload_bytes,
        ) as publisher:
            output = run(
                fleet,
                mqtt_sink(_Throttled(publisher, url), settings.topic_prefix),
                progress=_progress,
            )
            _publish_bad(publisher, fleet, settings.topic_prefix)
            _wait_answered(publisher)
            if publisher.unrouted:
                raise StorageUnavailable(
                    f"the broker had no subscriber for {publisher.unrouted:,} messages and "
                    "dropped them: the ingester was not subscribed"
                )
            messages = publisher.acked
        _wait_stored(url, output, ingester)
        pipeline_s = time.monotonic() - publish_started
    with connect(url) as conn:
        store_ground_truth(conn, output.truth)
    out_dir = Path(args.out or "out/demo")
    _write_commercial(out_dir, output)
    _import_commercial(url, out_dir, settings.reporting_currency)
    signals: dict[str, Any] = {"text": "Signals: not replayed (--signal-months 0)."}
    if args.signal_months > 0:
        fleet_end = month_start(fleet.start, fleet.months)
        signals = signals_story(url, demo_settings, fleet_end, args.signal_months, _progress)
    revenue = _revenue_story(url, out_dir, settings)
    summary = _summary(
        url,
        fleet,
        output,
        report.timescale,
        messages,
        pipeline_s,
        time.monotonic() - started,
        out_dir,
    )
    summary["signals"] = {k: v for k, v in signals.items() if k != "text"}
    summary["revenue"] = {k: v for k, v in revenue.items() if k != "text"}
    with connect(url) as conn:
        users = ensure_demo_users(conn, fleet.csms, now=dt.datetime.now(dt.UTC))
    summary["workspace"] = workspace(settings, url, users)
    emit(
        args,
        summary,
        lambda: "\n\n".join(
            (
                _render(summary),
                str(signals["text"]),
                str(revenue["text"]),
                render_workspace(summary["workspace"]),
            )
        ),
    )
    return 0


def ensure_demo_users(
    conn: psycopg.Connection[TupleRow], csms: list[dict[str, str]], *, now: dt.datetime
) -> list[dict[str, Any]]:
    """The demo's users, ``demo-admin`` and one csm user per CSM (``csm_id``, ``name``), each
    with a new generated password: created when missing, their password reset when they
    exist (a second demo run on the same database). A user of that name with another role or
    CSM, or disabled, is left alone (``password`` None). Audited like ``basewatch users``;
    commits. Returns username, role, csm_id, name, password and what was done (``status``)."""
    from basewatch.users import (
        Actor,
        create_user,
        generate_password,
        get_user,
        record,
        set_password,
    )
    from core.errors import NotFound

    actor = Actor(None, "basewatch demo")
    wanted: list[tuple[str, str, str | None, str]] = [(DEMO_ADMIN, "admin", None, "Demo admin")] + [
        (c["csm_id"].lower(), "csm", c["csm_id"], c["name"]) for c in csms
    ]
    out = []
    with conn.transaction():
        for username, role, csm_id, name in wanted:
            password: str | None = generate_password()
            try:
                existing = get_user(conn, username)
            except NotFound:
                assert password is not None
                create_user(conn, username, role, password, csm_id=csm_id, display_name=name)
                status, action = "created", "user.create"
            else:
                if (existing.role, existing.csm_id, existing.disabled) != (role, csm_id, False):
                    password, status, action = None, "not the demo's user: left alone", ""
                else:
                    assert password is not None
                    set_password(conn, username, password, now=now)
                    status, action = "password reset", "user.reset_password"
            if action:
                details = {"role": role, "csm_id": csm_id, "demo": True}
                record(conn, actor, action, f"user:{username}", "cli", details, now=now)
            out.append(
                {
                    "username": username,
                    "role": role,
                    "csm_id": csm_id,
                    "name": name,
                    "password": password,
                    "status": status,
                }
            )
    return out


def signin_url(settings: Settings) -> str:
    """Where a browser signs in: ``BASEWATCH_API_PUBLIC_URL``, else the API's host and port
    (127.0.0.1 when it listens on every interface)."""
    base = settings.api_public_url.strip().rstrip("/")
    if not base:
        host = settings.api_host
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - every interface: loopback reaches it
            host = "127.0.0.1"
        base = f"http://{'[' + host + ']' if ':' in host else host}:{settings.api_port}"
    return f"{base}/signin"


def workspace(settings: Settings, url: str, users: list[dict[str, Any]]) -> dict[str, Any]:
    """How to open the workspace on the demo database: the command, the address, the users
    (the database URL's password, if any, is not printed: it is the reader's own)."""
    params = conninfo_to_dict(url)
    if params.get("password"):
        params["password"] = "YOUR-DATABASE-PASSWORD"  # noqa: S105 - a placeholder
    return {
        "start_api": f"BASEWATCH_DATABASE_URL={shlex.quote(make_conninfo('', **params))} "
        "basewatch api",
        "signin_url": signin_url(settings),
        "users": users,
        "note": "demo users with passwords generated for this run, shown once; "
        "`basewatch users reset-password USERNAME` gives a new one",
    }


def render_workspace(ws: dict[str, Any]) -> str:
    lines = [
        "Open the workspace",
        f"  start the API:  {ws['start_api']}",
        f"  then sign in:   {ws['signin_url']}",
        "  demo users (passwords generated for this run and shown once; "
        "`basewatch users reset-password USERNAME` gives a new one):",
    ]
    for u in ws["users"]:
        who = u["role"] + (f" of {u['csm_id']} ({u['name']})" if u["csm_id"] else "")
        lines.append(
            f"    {u['username']:<16} {u['password'] or '(' + u['status'] + ')':<22} {who}"
        )
    return "\n".join(lines)


def _import_commercial(url: str, out_dir: Path, currency: str) -> None:
    """Load the fleet's contracts, invoices and rates like an ERP export."""
    from nrr.imports import import_file

    with connect(url) as conn:
        for kind in ("fx", "contracts", "invoices"):
            import_file(conn, kind, out_dir / f"{kind}.csv", currency)


def _revenue_story(url: str, out_dir: Path, settings: Settings) -> dict[str, Any]:
    """Rebuild the MRR ledger from the imported contracts, invoices and rates and write the
    monthly NRR report of the last complete month."""
    from core.months import format_month
    from nrr.attribution import summary_line
    from nrr.headline import headline
    from nrr.ledger import rebuild
    from nrr.report import build_report, write_report

    currency = settings.reporting_currency
    with connect(url) as conn:
        rebuild(conn, currency, full=True)
        window = settings.attribution_window_days
        top = headline(conn, currency, None, attribution_window_days=window)
        report = build_report(conn, currency, top.month, attribution_window_days=window)
    written = write_report(report, out_dir / "nrr" / format_month(top.month))
    return {
        "headline": top.document(),
        "report_html": str(written.html),
        "text": f"{top.text()}\n  {summary_line(top.attribution, currency)}\n"
        f"  report: {written.html}",
    }


def _write_commercial(out_dir: Path, output: SimulationOutput) -> None:
    from simulator.commercial import CONTRACT_COLUMNS, FX_COLUMNS, INVOICE_COLUMNS

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "contracts.csv", CONTRACT_COLUMNS, output.contracts)
    write_csv(out_dir / "invoices.csv", INVOICE_COLUMNS, output.invoices)
    write_csv(out_dir / "fx.csv", FX_COLUMNS, output.fx)


def _start_ingester(
    url: str, host: str, port: int, settings: Settings, ready_file: Path
) -> subprocess.Popen[bytes]:
    """Start ``basewatch ingest`` and return once the broker confirmed its subscription.

    Messages published before the SUBACK have no subscriber and are dropped by the broker, so
    the demo waits for the ingester's ready file (written on the SUBACK) rather than for a
    fixed time: a busy machine can take seconds to start a Python process."""
    env = dict(
        os.environ,
        BASEWATCH_DATABASE_URL=url,
        BASEWATCH_MQTT_HOST=host,
        BASEWATCH_MQTT_PORT=str(port),
        BASEWATCH_MQTT_CLIENT_ID="basewatch-demo-ingest",
        BASEWATCH_LOG_LEVEL="WARNING",
        BASEWATCH_TOPIC_PREFIX=settings.topic_prefix,
        BASEWATCH_INGEST_BATCH_SIZE="200",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "basewatch", "ingest", "--ready-file", str(ready_file)], env=env
    )
    deadline = time.monotonic() + INGESTER_START_TIMEOUT_S
    while not ready_file.exists():
        if process.poll() is not None:
            raise StorageUnavailable("the ingester exited at start (see the lines above)")
        if time.monotonic() > deadline:
            _stop(process)
            raise StorageUnavailable(
                f"the ingester did not subscribe at {host}:{port} within "
                f"{INGESTER_START_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.05)
    return process


def _wait_answered(publisher: Publisher) -> None:
    """Every message acknowledged, or the error that says why not."""
    if not publisher.wait_all_acked():
        raise StorageUnavailable(
            f"the broker answered {publisher.answered:,} of {publisher.sent:,} messages in time"
        )
    publisher.raise_for_rejections()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _publish_bad(publisher: Publisher, fleet: Fleet, prefix: str) -> None:
    first = fleet.assets[0]
    for where, payload in BAD_MESSAGES:
        path = where.format(account=first.account_id, asset=first.asset_id)
        publisher.publish(f"{prefix}/{path}/telemetry", payload)


def _stored(url: str | None) -> tuple[int, int, int]:
    from ingest.stats import stored_counts

    if url is None:
        return 0, 0, 0
    try:
        with connect(url) as conn:
            return stored_counts(conn)
    except StorageUnavailable:
        return 0, 0, 0


def _wait_stored(url: str, output: SimulationOutput, ingester: subprocess.Popen[bytes]) -> None:
    """Wait until every reading and event is a row and every bad message a dead letter."""
    deadline = time.monotonic() + 600
    expected = (output.readings, output.events, len(BAD_MESSAGES))
    while time.monotonic() < deadline:
        stored = _stored(url)
        if all(s >= e for s, e in zip(stored, expected, strict=True)):
            return
        if ingester.poll() is not None:
            raise StorageUnavailable("the ingester stopped before storing everything")
        time.sleep(0.5)
    raise StorageUnavailable(
        f"stored {_stored(url)} of {expected} (readings, events, dead letters) in time"
    )


def _summary(
    url: str,
    fleet: Fleet,
    output: SimulationOutput,
    timescale: bool,
    messages: int,
    pipeline_s: float,
    total_s: float,
    out_dir: Path,
) -> dict[str, Any]:
    from ingest.deadletters import dead_letter_reasons

    with connect(url) as conn:
        stats = storage_stats(conn)
        dead = dead_letter_reasons(conn)
        monthly = conn.execute(
            "SELECT a.account_id, date_trunc('month', v.day)::date, sum(v.volume_m3)"
            " FROM usage_daily_between('-infinity', 'infinity') v JOIN assets a USING (asset_id)"
            " GROUP BY 1, 2"
        ).fetchall()
    months = [month_start(fleet.start, m).date() for m in range(fleet.months)]
    volumes: dict[str, dict[dt.date, float]] = {}
    for account_id, month, volume in monthly:
        volumes.setdefault(account_id, {})[month] = float(volume)
    truth = Counter((str(t["account_id"]), str(t["kind"])) for t in output.truth)
    accounts = []
    for account in fleet.accounts:
        machines = sum(1 for a in fleet.assets if a.account_id == account.account_id)
        accounts.append(
            {
                "account_id": account.account_id,
                "name": account.name,
                "story": account.story,
                "machines": machines,
                "failures": truth[(account.account_id, "failure")],
                "third_party_replacements": truth[(account.account_id, "third_party_replacement")],
                "silent_machines": truth[(account.account_id, "silent")],
                "churned": truth[(account.account_id, "churn")] > 0,
                "expansions": truth[(account.account_id, "expansion")],
                "monthly_m3": [
                    round(volumes.get(account.account_id, {}).get(m, 0.0)) for m in months
                ],
            }
        )
    return {
        "storage": "TimescaleDB" if timescale else "plain PostgreSQL",
        "fleet": {
            "accounts": len(fleet.accounts),
            "assets": len(fleet.assets),
            "months": fleet.months,
            "start": fleet.start.isoformat(),
            "stories": dict(Counter(a.story for a in fleet.accounts)),
        },
        "mqtt_messages": messages,
        "readings_simulated": output.readings,
        "seconds_publish_to_commit": round(pipeline_s, 1),
        "readings_per_second": round(output.readings / pipeline_s) if pipeline_s else None,
        "seconds_total": round(total_s, 1),
        "stats": stats,
        "accounts": accounts,
        "dead_letters": [{"topic": t, "reason": r} for t, r in dead],
        "commercial_files": str(out_dir),
        "contracts": len(output.contracts),
        "invoice_lines": len(output.invoices),
    }


def _trend(values: list[int]) -> str:
    if len(values) < 6 or not values[:3] or sum(values[:3]) == 0:
        return "-"
    first, last = sum(values[:3]) / 3, sum(values[-3:]) / 3
    return f"{(last / first - 1) * 100:+.0f}%"


def _render(summary: dict[str, Any]) -> str:
    stats = summary["stats"]
    t = stats["telemetry"]
    fleet = summary["fleet"]
    lines = [
        "",
        f"basewatch demo - {fleet['assets']} compressors at {fleet['accounts']} accounts, "
        f"{fleet['months']} months from {fleet['start'][:10]}, stored in {summary['storage']}",
        f"  {summary['readings_simulated']:,} hourly readings in {summary['mqtt_messages']:,} MQTT "
        f"messages (QoS 1), committed in {summary['seconds_publish_to_commit']} s "
        f"({summary['readings_per_second']:,} readings/s end to end)",
        f"  telemetry: {t['rows']:,} readings, {t['values']:,} values, {t['first_time'][:10]} .. "
        f"{t['last_time'][:10]}; events: {stats['events']['rows']:,}",
        "",
        "  The fleet's stories (ground truth stored in table ground_truth):",
        "  account   story          machines  failures  3rd-party  silent  volume trend  outcome",
    ]
    for a in summary["accounts"]:
        outcome = (
            "churned"
            if a["churned"]
            else (f"{a['expansions']} expansion(s)" if a["expansions"] else "")
        )
        lines.append(
            f"  {a['account_id']:<9} {a['story']:<14} {a['machines']:>8} "
            f"{a['failures']:>9} {a['third_party_replacements']:>10} "
            f"{a['silent_machines']:>7} {_trend(a['monthly_m3']):>13}  {outcome}"
        )
    lines += ["", f"  dead letters: {len(summary['dead_letters'])} (deliberately bad messages)"]
    lines += [f"    {d['topic']}: {d['reason']}" for d in summary["dead_letters"]]
    lines += [
        "",
        f"  {summary['contracts']} contracts and {summary['invoice_lines']:,} invoice "
        f"lines written to {summary['commercial_files']}/",
    ]
    return "\n".join(lines)
