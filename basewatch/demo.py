"""``basewatch demo`` and ``basewatch simulate``: a simulated fleet through the real pipeline.

The demo migrates a fresh database (``basewatch_demo`` on the configured server), registers the
fleet, starts a private Mosquitto with the project's config and an ingester process, publishes
the fleet's history over MQTT with device timestamps as fast as the pipeline takes it (QoS 1,
a bounded window of unacknowledged messages), waits until everything is committed and prints
what was stored. A few deliberately bad messages show the dead-letter path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from basewatch.localbroker import LocalBroker
from basewatch.wiring import migrate_database
from core.db import connect, drop_database, with_database
from core.errors import StorageUnavailable
from core.registry import KINDS, RegistryBatch, import_registry
from core.settings import Settings
from ingest.publish import Publisher
from ingest.simulate import Fleet, make_fleet, telemetry
from ingest.stats import rows_per_asset, storage_stats
from ingest.topics import device_topic

UTC = dt.UTC
PROGRESS_INTERVAL_S = 2.0
BAD_MESSAGES = (
    (
        "acct-999/ghost-01",
        b'{"ts": "2026-01-01T00:00:00Z", "metrics": {"load_pct": 50}}',
        "an asset nobody registered",
    ),
    (
        "{account}/{asset}",
        b'{"ts": "yesterday", "metrics": {"load_pct": 50}}',
        "a timestamp that is not RFC 3339",
    ),
    ("{account}/{asset}", b"\x00\xffnot json", "bytes that are not JSON"),
)


def _fleet(args: argparse.Namespace) -> Fleet:
    return make_fleet(seed=args.seed, accounts=args.accounts, assets=args.assets)


def _window(args: argparse.Namespace) -> tuple[dt.datetime, dt.datetime]:
    end = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return end - dt.timedelta(days=args.days), end


def _messages(fleet: Fleet, args: argparse.Namespace, prefix: str) -> Iterator[tuple[str, bytes]]:
    start, end = _window(args)
    for spec, time_, metrics in telemetry(fleet, start, end, args.interval_s, args.seed):
        payload = {"ts": time_.isoformat().replace("+00:00", "Z"), "metrics": metrics}
        yield device_topic(prefix, spec.account_id, spec.asset_id), json.dumps(payload).encode()
    for spec in fleet.assets[:: max(1, len(fleet.assets) // 5)]:
        event = {
            "ts": (end - dt.timedelta(hours=30)).isoformat(),
            "kind": "service",
            "component": "oil_filter",
            "service_order": f"SO-{spec.asset_id}",
        }
        yield (
            device_topic(prefix, spec.account_id, spec.asset_id, "event"),
            json.dumps(event).encode(),
        )


def _register(url: str, fleet: Fleet) -> None:
    records = fleet.registry_records()
    batch = RegistryBatch({kind: records[kind] for kind in KINDS})
    with connect(url) as conn:
        import_registry(conn, batch)
        conn.commit()


def _write_registry_csv(path: Path, fleet: Fleet) -> None:
    import csv

    from core.registry import COLUMNS

    columns = ["record", *dict.fromkeys(c for kind in KINDS for c in COLUMNS[kind])]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for kind, rows in fleet.registry_records().items():
            for row in rows:
                writer.writerow(
                    {"record": kind, **{k: ("" if v is None else v) for k, v in row.items()}}
                )


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def simulate_command(settings: Settings, args: argparse.Namespace) -> int:
    """Publish a simulated fleet to the configured broker (registering it first)."""
    fleet = _fleet(args)
    if args.registry_csv:
        _write_registry_csv(args.registry_csv, fleet)
    if not args.no_register:
        _register(settings.database_url, fleet)
    published = _publish(
        fleet,
        args,
        settings.mqtt_host,
        settings.mqtt_port,
        settings.topic_prefix,
        settings,
        stored=None,
    )
    document = {
        "accounts": len(fleet.accounts),
        "assets": len(fleet.assets),
        "published": published,
    }
    from basewatch.cli import emit

    emit(
        args,
        document,
        lambda: (
            f"published {published:,} messages for {len(fleet.assets)} "
            f"assets of {len(fleet.accounts)} accounts"
        ),
    )
    return 0


def _publish(
    fleet: Fleet,
    args: argparse.Namespace,
    host: str,
    port: int,
    prefix: str,
    settings: Settings,
    stored: str | None,
) -> int:
    total = len(fleet.assets) * int(args.days * 86400 / args.interval_s)
    last = time.monotonic()
    with Publisher(
        host,
        port,
        client_id="",
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        window=2000,
    ) as publisher:
        for topic, payload in _messages(fleet, args, prefix):
            publisher.publish(topic, payload)
            if time.monotonic() - last >= PROGRESS_INTERVAL_S:
                last = time.monotonic()
                suffix = f", {_stored(stored):,} stored" if stored else ""
                _progress(f"  published {publisher.acked:,}/~{total:,} messages{suffix}")
        if not publisher.wait_all_acked():
            raise StorageUnavailable("the broker did not acknowledge every message")
        return publisher.acked


def _stored(url: str | None) -> int:
    if url is None:
        return 0
    try:
        with connect(url) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM telemetry) + "
                "(SELECT count(*) FROM asset_events) + "
                "(SELECT count(*) FROM dead_letters)"
            ).fetchone()
    except StorageUnavailable:
        return 0
    return int(str(row[0])) if row else 0


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    url = with_database(settings.database_url, args.database)
    demo_settings = settings.replace(database_url=url)
    fleet = _fleet(args)
    started = time.monotonic()
    _progress(
        f"demo: database {args.database}, {len(fleet.accounts)} accounts, "
        f"{len(fleet.assets)} compressors, {args.days} days every {args.interval_s} s"
    )
    if not args.keep:
        drop_database(url)
    report = migrate_database(demo_settings)
    _register(url, fleet)
    with ExitStack() as stack:
        if args.broker == "private":
            broker = stack.enter_context(LocalBroker())
            host, port = broker.host, broker.port
        else:
            host, port = settings.mqtt_host, settings.mqtt_port
        ingester = _start_ingester(url, host, port, settings)
        stack.callback(_stop, ingester)
        publish_started = time.monotonic()
        published = _publish(fleet, args, host, port, settings.topic_prefix, settings, url)
        bad = _publish_bad(fleet, host, port, settings)
        _wait_stored(url, published + bad, ingester)
        elapsed = time.monotonic() - publish_started
    summary = _summary(
        url, fleet, report.timescale, published, bad, elapsed, time.monotonic() - started
    )
    from basewatch.cli import emit

    emit(args, summary, lambda: _render(summary))
    return 0


def _start_ingester(url: str, host: str, port: int, settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        BASEWATCH_DATABASE_URL=url,
        BASEWATCH_MQTT_HOST=host,
        BASEWATCH_MQTT_PORT=str(port),
        BASEWATCH_MQTT_CLIENT_ID="basewatch-demo-ingest",
        BASEWATCH_LOG_LEVEL="WARNING",
        BASEWATCH_TOPIC_PREFIX=settings.topic_prefix,
    )
    process = subprocess.Popen([sys.executable, "-m", "basewatch", "ingest"], env=env)
    time.sleep(1.0)  # let it subscribe before the first publish (its session keeps the rest)
    if process.poll() is not None:
        raise StorageUnavailable("the ingester exited at start (see the lines above)")
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _publish_bad(fleet: Fleet, host: str, port: int, settings: Settings) -> int:
    first = fleet.assets[0]
    with Publisher(host, port) as publisher:
        for where, payload, _why in BAD_MESSAGES:
            path = where.format(account=first.account_id, asset=first.asset_id)
            publisher.publish(f"{settings.topic_prefix}/{path}/telemetry", payload)
        publisher.wait_all_acked()
        return publisher.acked


def _wait_stored(url: str, expected: int, ingester: subprocess.Popen[bytes]) -> None:
    """Wait until every published message is a row or a dead letter."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if _stored(url) >= expected:
            return
        if ingester.poll() is not None:
            raise StorageUnavailable("the ingester stopped before storing everything")
        time.sleep(0.5)
    raise StorageUnavailable(f"only {_stored(url)} of {expected} messages were stored in time")


def _summary(
    url: str,
    fleet: Fleet,
    timescale: bool,
    published: int,
    bad: int,
    elapsed_s: float,
    total_s: float,
) -> dict[str, Any]:
    with connect(url) as conn:
        stats = storage_stats(conn)
        per_asset = rows_per_asset(conn)
        dead = conn.execute("SELECT topic, reason FROM dead_letters ORDER BY id").fetchall()
    accounts: dict[str, dict[str, Any]] = {}
    for row in per_asset:
        entry = accounts.setdefault(row["account_id"], {"assets": 0, "rows": 0})
        entry["assets"] += 1
        entry["rows"] += row["rows"]
    return {
        "storage": "TimescaleDB" if timescale else "plain PostgreSQL",
        "published_messages": published + bad,
        "seconds_publish_to_commit": round(elapsed_s, 1),
        "messages_per_second": round((published + bad) / elapsed_s) if elapsed_s else None,
        "seconds_total": round(total_s, 1),
        "stats": stats,
        "accounts": accounts,
        "assets": per_asset,
        "dead_letters": [{"topic": t, "reason": r} for t, r in dead],
        "fleet": {"accounts": len(fleet.accounts), "assets": len(fleet.assets)},
    }


def _render(summary: dict[str, Any]) -> str:
    stats = summary["stats"]
    t = stats["telemetry"]
    lines = [
        "",
        f"basewatch demo - {summary['fleet']['assets']} compressors of "
        f"{summary['fleet']['accounts']} accounts, stored in {summary['storage']}",
        f"  {summary['published_messages']:,} messages published over MQTT (QoS 1) and "
        f"committed in {summary['seconds_publish_to_commit']} s "
        f"({summary['messages_per_second']:,} msg/s end to end)",
        f"  telemetry: {t['rows']:,} readings, {t['values']:,} values, {t['metric_names']} "
        f"metrics, {t['first_time']} .. {t['last_time']}",
        f"  events:    {stats['events']['rows']:,}",
        "",
        "  account        assets   readings",
    ]
    for account_id, entry in summary["accounts"].items():
        lines.append(f"  {account_id:<14} {entry['assets']:>6} {entry['rows']:>10,}")
    lines += ["", "  asset                 readings  first .. last"]
    lines += [
        f"  {a['asset_id']:<20} {a['rows']:>9,}  {a['first_time']} .. {a['last_time']}"
        for a in summary["assets"]
    ]
    lines += ["", f"  dead letters: {len(summary['dead_letters'])} (deliberately bad messages)"]
    lines += [f"    {d['topic']}: {d['reason']}" for d in summary["dead_letters"]]
    return "\n".join(lines)
