"""service_due counts running hours from the last replacement on record (an event), and the
simulator registers each component's real installation hours."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg.types.json import Jsonb

from signals.catalogue import PriceBook
from signals.wear_findings import wear_findings
from simulator.fleet import COMPONENT_LIVES_H, initial_wear_share, installed_at_hours, make_fleet
from simulator.physics import simulate_account
from tests.fix_db import needs_rollup_tables

AS_OF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
PER_DAY = 20.0  # running hours a day


def _machine(conn: psycopg.Connection) -> None:
    needs_rollup_tables(conn)
    conn.execute("INSERT INTO accounts (account_id, name) VALUES ('acc', 'Acc')")
    conn.execute("INSERT INTO assets (asset_id, account_id) VALUES ('m1', 'acc')")
    conn.execute(
        "INSERT INTO components (asset_id, kind, rated_life_hours, installed_at_running_hours)"
        " VALUES ('m1', 'inlet_valve', 1500, 0)"
    )
    for day in range(70, 0, -1):
        start = AS_OF - dt.timedelta(days=day)
        hours = 10_000.0 - day * PER_DAY
        stats = {"running_hours": [hours, hours, hours, hours, 1]}
        conn.execute(
            "INSERT INTO rollup_daily (asset_id, bucket, samples, stats) VALUES ('m1', %s, 24, %s)",
            (start, Jsonb(stats)),
        )
        for hour in range(24):
            at = hours + PER_DAY * hour / 24
            conn.execute(
                "INSERT INTO rollup_hourly (asset_id, bucket, samples, stats)"
                " VALUES ('m1', %s, 1, %s)",
                (start + dt.timedelta(hours=hour), Jsonb({"running_hours": [at, at, at, at, 1]})),
            )


def test_a_replacement_event_restarts_the_rated_life(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        _machine(conn)
        # installed at 0 and 10,000 h on the counter: the record is missing, no finding
        assert wear_findings(conn, AS_OF, PriceBook()) == []
        # replaced 60 days ago at 8,799 h (the last complete hour before): 1,181 of 1,500 h
        # used at 9,980 h, 319 h = 16 days at 20 h a day left
        replaced = AS_OF - dt.timedelta(days=60)
        conn.execute(
            "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
            " VALUES ('m1', %s, 'component_replaced', 'inlet_valve', %s)",
            (replaced, replaced),
        )
        (finding,) = wear_findings(conn, AS_OF, PriceBook())
        assert finding.kind == "service_due"
        assert finding.subject == "m1/inlet_valve"
        assert finding.figures["hours_left"] == pytest.approx(1500 - (9980 - 8799.17), abs=0.1)
        assert finding.figures["days_left"] == pytest.approx(16.0, abs=0.1)
        # the promise, with its horizon: the component is replaced within its days left
        assert finding.horizon_days == 15
        assert finding.reasons[0].startswith(
            "promise: inlet_valve of m1 reaches its rated limit and is replaced within 15 days"
        ), finding.reasons
        # scored before the replacement, the event is not known yet: no record, no finding
        assert wear_findings(conn, replaced - dt.timedelta(days=1), PriceBook()) == []


def test_the_simulator_registers_the_hours_of_the_last_replacement() -> None:
    end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    fleet = make_fleet(seed=5, accounts=2, assets=4, months=2, end=end)
    used = [a for a in fleet.assets if a.age_hours > 0]
    assert used
    for asset in used:
        for component, life in COMPONENT_LIVES_H.items():
            expected = asset.age_hours - 1.0 - initial_wear_share(asset.asset_id, component) * life
            assert installed_at_hours(asset, component) == pytest.approx(max(expected, 0), abs=0.1)
    records = fleet.registry_records()["component"]
    assert any(float(str(r["installed_at_running_hours"])) > 0 for r in records)
    history = simulate_account(fleet, fleet.accounts[0])
    assert history.assets


def test_an_overdue_component_says_by_how_much_not_zero_hours_left(db_url: str) -> None:
    """Issue 14 item 10: an overdue component read "about 0 running hours left" while its
    own figures said -3,181 h."""
    with psycopg.connect(db_url) as conn:
        conn.execute("TRUNCATE accounts, assets, components, asset_events CASCADE")
        conn.execute("TRUNCATE rollup_daily, rollup_hourly")
        _machine(conn)
        # installed at 8,000 h: 1,980 of 1,500 h used at 9,980 h, 480 h (24 days) overdue
        conn.execute(
            "UPDATE components SET installed_at_running_hours = 8000 WHERE asset_id = 'm1'"
        )
        (finding,) = wear_findings(conn, AS_OF, PriceBook())
        assert finding.figures["hours_left"] == pytest.approx(-480.0, abs=0.1)
        (reason,) = finding.reasons
        assert reason.startswith(
            "promise: inlet_valve of m1 is past its rated limit and is replaced within 1 day "
            "(a service or parts sale; by us or by a third party): overdue by 480 running hours "
            "(± 150) by rated life, ≈ 24 days at 20.0 h/day"
        ), reason
        assert finding.overdue
        assert finding.score == 1.0


def test_the_horizon_comes_from_the_fleets_replacement_lags(db_url: str) -> None:
    """Ten replacements on record, five 100 h and five 140 h after the one before (lags 0
    and +40 h on a 100 h rated life): the promise covers the replacement lag the fleet shows,
    not the hours left to the rated limit."""
    with psycopg.connect(db_url) as conn:
        conn.execute("TRUNCATE accounts, assets, components, asset_events CASCADE")
        conn.execute("TRUNCATE rollup_daily, rollup_hourly")
        _machine(conn)
        conn.execute("UPDATE components SET rated_life_hours = 100 WHERE asset_id = 'm1'")
        # replaced at the starts of days 66, 59, 54, ... 11, 6 before AS_OF: gaps of 7 and 5
        # days alternately (140 h and 100 h at 20 h a day); the first (from 0 h) is no record
        for day in (66, 59, 54, 47, 42, 35, 30, 23, 18, 11, 6):
            at = AS_OF - dt.timedelta(days=day)
            conn.execute(
                "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
                " VALUES ('m1', %s, 'component_replaced', 'inlet_valve', %s)",
                (at, at),
            )
        # in service since 9,879.17 h (the last hour before day 6), 100.83 h at 9,980 h: lag
        # +0.83 h. Kaplan-Meier over five replaced at 0, itself running at 0.83 and five
        # replaced at +40: S(0.83) = 6/11, S(40) = 0, so 80 % of its like are replaced by +40
        # h, 39.17 running hours from now: 2 days at 20 h a day
        (finding,) = wear_findings(conn, AS_OF, PriceBook())
        assert finding.subject == "m1/inlet_valve"
        assert finding.figures["horizon_running_hours"] == pytest.approx(39.2, abs=0.1)
        assert finding.figures["replaced_share_by_now"] == pytest.approx(5 / 11, abs=1e-3)
        assert finding.horizon_days == 2
        assert finding.score == pytest.approx(0.8)
        assert finding.overdue
        (reason,) = finding.reasons
        assert reason.startswith(
            "promise: inlet_valve of m1 is replaced within 2 days (a service or parts sale; by "
            "us or by a third party): rated life (100 h) passed 1 running hours ago; this fleet "
            "usually replaces it between 0 h after and 40 h after that (middle 80 % of 10 "
            "replacements on record); of such parts still in service at this age it replaced "
            "80% within 39 running hours (≈ 2 days at 20.0 h/day)"
        ), reason
        # a day earlier, at lag -19 h, none of the ten was replaced that early: no promise yet
        assert wear_findings(conn, AS_OF - dt.timedelta(days=1), PriceBook()) == []


def test_a_part_bought_elsewhere_dates_the_age_after_the_window_too(db_url: str) -> None:
    """A filter replaced elsewhere 65 days ago (its differential pressure dropped back, no
    event) is 1,280 running hours old, not as old as its registry figure, although the reset
    is older than the 60 days of history the wear estimate reads: a third-party account's
    new filter was alerted as overdue again once its reset left that window."""
    with psycopg.connect(db_url) as conn:
        conn.execute("TRUNCATE accounts, assets, components, asset_events CASCADE")
        conn.execute("TRUNCATE rollup_daily, rollup_hourly")
        _machine(conn)
        conn.execute(
            "INSERT INTO components (asset_id, kind, rated_life_hours, installed_at_running_hours)"
            " VALUES ('m1', 'air_filter', 1500, 8000)"
        )
        # 60 mbar until day 66 before AS_OF, 20 mbar from day 65 (flat: no trend)
        conn.execute(
            "UPDATE rollup_daily SET stats = stats || jsonb_build_object('air_filter_dp_mbar',"
            " jsonb_build_array(v, v, v, v, 24)) FROM (SELECT bucket AS b, CASE WHEN bucket <"
            " %(reset)s THEN 60.0 ELSE 20.0 END AS v FROM rollup_daily) x WHERE bucket = x.b",
            {"reset": AS_OF - dt.timedelta(days=65)},
        )
        # reset on the day the counter read 10,000 - 65 × 20 = 8,700 h: 9,980 - 8,700 = 1,280
        # of 1,500 h used, 220 h (11 days) left - not 1,980 h used and 480 h overdue
        (finding,) = wear_findings(conn, AS_OF, PriceBook())
        assert finding.subject == "m1/air_filter"
        assert finding.figures["hours_left"] == pytest.approx(220.0, abs=0.1)
        assert not finding.overdue
        # a replacement on record after the reset (at 9,000 h) counts from itself
        at = AS_OF - dt.timedelta(days=50)
        conn.execute(
            "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
            " VALUES ('m1', %s, 'component_replaced', 'air_filter', %s)",
            (at, at),
        )
        (finding,) = wear_findings(conn, AS_OF, PriceBook())
        assert finding.figures["hours_left"] == pytest.approx(1500 - (9980 - 8999.17), abs=0.1)
