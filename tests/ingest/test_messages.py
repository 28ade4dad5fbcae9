"""Decoding and routing without a database: what becomes a telemetry row, an event row or a
dead letter, and why."""

from __future__ import annotations

import datetime as dt
import json

from ingest.decode import Limits
from ingest.messages import decode_message, route

NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
OWNERS = {"m1": "a1", "m2": "a2"}


def test_route_merges_a_reading_sent_twice_and_keeps_events() -> None:
    t = "2026-03-01T11:00:00Z"
    first = decode_message(
        "bw/a1/m1/telemetry",
        json.dumps({"ts": t, "metrics": {"pressure_bar": 7.1}}).encode(),
        prefix="bw",
        limits=Limits(),
        received_at=NOW,
    )
    again = decode_message(
        "bw/a1/m1/telemetry",
        json.dumps([{"ts": t, "metrics": {"load_pct": 80}}]).encode(),
        prefix="bw",
        limits=Limits(),
        received_at=NOW,
    )
    event = decode_message(
        "bw/a1/m1/event",
        json.dumps({"ts": t, "kind": "failure", "component": "oil_filter"}).encode(),
        prefix="bw",
        limits=Limits(),
        received_at=NOW,
    )
    routed = route([first, again, event], OWNERS)
    when = dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC)
    assert list(routed.rows) == [("m1", when)]
    assert routed.rows[("m1", when)][4] == {"pressure_bar": 7.1, "load_pct": 80.0}
    assert routed.values() == 2
    assert routed.names == {"pressure_bar", "load_pct"}
    assert [(e[0], e[2], e[4]) for e in routed.events] == [("m1", "failure", "oil_filter")]
    assert routed.dead == []


def test_route_dead_letters_with_the_reason() -> None:
    ok = {"ts": "2026-03-01T11:00:00Z", "metrics": {"x": 1}}
    bad_topic = decode_message(
        "elsewhere/a1/m1/telemetry", b"{}", prefix="bw", limits=Limits(), received_at=NOW
    )
    unknown = decode_message(
        "bw/a1/m9/telemetry", json.dumps(ok).encode(), prefix="bw", limits=Limits(), received_at=NOW
    )
    stolen = decode_message(
        "bw/a1/m2/telemetry", json.dumps(ok).encode(), prefix="bw", limits=Limits(), received_at=NOW
    )
    partly = decode_message(
        "bw/a1/m1/telemetry",
        json.dumps([ok, {"ts": "soon", "metrics": {"x": 2}}]).encode(),
        prefix="bw",
        limits=Limits(),
        received_at=NOW,
    )
    routed = route([bad_topic, unknown, stolen, partly], OWNERS)
    reasons = [reason for _, reason in routed.dead]
    assert bad_topic.target is None
    assert reasons[0] == bad_topic.topic_error != ""
    assert reasons[1].startswith("unknown asset 'm9'")
    assert reasons[2].startswith("asset 'm2' belongs to account 'a2', not to the topic's")
    assert reasons[3].startswith("1 of 2 items rejected: ")
    assert len(routed.rows) == 1  # the valid item of the partly bad message is kept
