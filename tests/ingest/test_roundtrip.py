"""Round trip through the real broker and the real ``basewatch ingest`` process."""

from __future__ import annotations

import datetime as dt
import json

import psycopg

from basewatch.localbroker import LocalBroker
from simulator.publish import Publisher
from tests.fix_ingest import IngesterProcess, register, wait_for

T0_MS = int(dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC).timestamp() * 1000)


def test_telemetry_and_events_are_stored_with_values_and_times(
    db_url: str, broker: LocalBroker, prefix: str
) -> None:
    register(db_url, [("acme", "c1"), ("acme", "c2")])
    with IngesterProcess(db_url, broker, prefix), Publisher(broker.host, broker.port) as pub:
        pub.publish(
            f"{prefix}/acme/c1/telemetry",
            json.dumps(
                {"ts": T0_MS, "seq": 7, "metrics": {"load_pct": 81.5, "pressure_bar": 7.2}}
            ).encode(),
        )
        batch = [
            {"ts": "2026-01-05T08:01:00Z", "metrics": {"load_pct": 80}},
            {"ts": "2026-01-05T10:02:00+02:00", "metrics": {"load_pct": 79.25}},
        ]
        pub.publish(f"{prefix}/acme/c2/telemetry", json.dumps(batch).encode())
        event = {
            "ts": "2026-01-05T09:00:00Z",
            "kind": "component_replaced",
            "component": "oil_filter",
            "service_order": "SO-1",
        }
        pub.publish(f"{prefix}/acme/c2/event", json.dumps(event).encode())
        assert pub.wait_all_acked()
        assert wait_for(db_url, "SELECT count(*) FROM telemetry", 3) == 3
        assert wait_for(db_url, "SELECT count(*) FROM asset_events", 1) == 1

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT asset_id, time, seq, metrics FROM telemetry ORDER BY asset_id, time"
        ).fetchall()
        events = conn.execute(
            "SELECT asset_id, time, kind, component, detail FROM asset_events"
        ).fetchall()
    t0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    assert rows == [
        ("c1", t0, 7, {"load_pct": 81.5, "pressure_bar": 7.2}),
        ("c2", t0 + dt.timedelta(minutes=1), None, {"load_pct": 80}),
        ("c2", t0 + dt.timedelta(minutes=2), None, {"load_pct": 79.25}),
    ]
    assert events == [
        (
            "c2",
            dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC),
            "component_replaced",
            "oil_filter",
            {"service_order": "SO-1"},
        )
    ]


def test_unknown_and_cross_account_assets_are_dead_lettered(
    db_url: str, broker: LocalBroker, prefix: str
) -> None:
    register(db_url, [("north", "n1"), ("south", "s1")])
    payload = json.dumps({"ts": T0_MS, "metrics": {"load_pct": 1}}).encode()
    with IngesterProcess(db_url, broker, prefix), Publisher(broker.host, broker.port) as pub:
        pub.publish(f"{prefix}/north/s1/telemetry", payload)  # s1 belongs to south
        pub.publish(f"{prefix}/north/ghost/telemetry", payload)  # never registered
        pub.publish(f"{prefix}/north/n1/telemetry", payload)  # valid
        assert pub.wait_all_acked()
        assert wait_for(db_url, "SELECT count(*) FROM telemetry WHERE asset_id = 'n1'", 1) == 1
        query = "SELECT count(*) FROM dead_letters WHERE topic LIKE %s"
        assert wait_for(db_url, query, 2, params=(f"{prefix}/%",)) == 2
    with psycopg.connect(db_url) as conn:
        reasons: dict[str, str] = dict(
            conn.execute(
                "SELECT topic, reason FROM dead_letters WHERE topic LIKE %s", (f"{prefix}/%",)
            ).fetchall()
        )
        assert conn.execute(
            "SELECT count(*) FROM telemetry WHERE asset_id IN ('s1', 'ghost')"
        ).fetchone() == (0,)
    assert "belongs to account 'south'" in reasons[f"{prefix}/north/s1/telemetry"]
    assert "unknown asset 'ghost'" in reasons[f"{prefix}/north/ghost/telemetry"]


def test_auto_register_creates_unknown_assets_but_not_across_accounts(
    db_url: str, broker: LocalBroker, prefix: str
) -> None:
    register(db_url, [("owner", "taken")])
    payload = json.dumps({"ts": T0_MS, "metrics": {"load_pct": 1}}).encode()
    env = {"BASEWATCH_AUTO_REGISTER": "true"}
    with (
        IngesterProcess(db_url, broker, prefix, extra_env=env),
        Publisher(broker.host, broker.port) as pub,
    ):
        pub.publish(f"{prefix}/newcomer/fresh-1/telemetry", payload)
        pub.publish(f"{prefix}/newcomer/taken/telemetry", payload)
        assert pub.wait_all_acked()
        assert wait_for(db_url, "SELECT count(*) FROM telemetry WHERE asset_id = 'fresh-1'", 1)
        query = "SELECT count(*) FROM dead_letters WHERE topic = %s"
        assert wait_for(db_url, query, 1, params=(f"{prefix}/newcomer/taken/telemetry",)) == 1
    with psycopg.connect(db_url) as conn:
        owner = conn.execute(
            "SELECT account_id, auto_registered FROM assets WHERE asset_id = 'fresh-1'"
        ).fetchone()
    assert owner == ("newcomer", True)
