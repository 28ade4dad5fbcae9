"""Each signal fires on a simulated account with its story and stays silent on steady ones.

A small fleet (one or two accounts per story, 12 months) is simulated, its telemetry and events
written to the database, the rollups refreshed, and the accounts scored every two weeks.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import psycopg
import pytest

from signals.findings import Finding
from signals.rollups import refresh_rollups
from signals.scoring import score
from simulator.fleet import STORIES, Fleet, make_fleet, month_start
from tests.signals.fix_fleet import load_fleet as _load

END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def fired(db_url: str) -> tuple[Fleet, dict[str, set[str]]]:
    mix = dict.fromkeys(STORIES, 1.0)
    fleet = make_fleet(seed=3, accounts=12, assets=24, months=12, end=END, mix=mix)
    _load(db_url, fleet)
    kinds: dict[str, set[str]] = defaultdict(set)
    with psycopg.connect(db_url) as conn:
        as_of = month_start(fleet.start, 4)
        while as_of <= END:
            for finding in score(conn, as_of):
                kinds[finding.account_id].add(finding.kind)
            as_of += dt.timedelta(days=14)
    return fleet, kinds


def _by_story(fleet: Fleet, kinds: dict[str, set[str]], story: str) -> list[set[str]]:
    return [kinds[a.account_id] for a in fleet.accounts if a.story == story]


def test_declining_accounts_show_decline_or_silence(
    fired: tuple[Fleet, dict[str, set[str]]],
) -> None:
    fleet, kinds = fired
    for found in _by_story(fleet, kinds, "declining"):
        assert found & {"usage_decline", "silent_assets"}, found


def test_growing_accounts_saturate_and_grow(fired: tuple[Fleet, dict[str, set[str]]]) -> None:
    fleet, kinds = fired
    for found in _by_story(fleet, kinds, "growing"):
        assert "capacity_saturation" in found, found


def test_leaky_accounts_get_an_efficiency_upgrade(fired: tuple[Fleet, dict[str, set[str]]]) -> None:
    fleet, kinds = fired
    for found in _by_story(fleet, kinds, "leaky"):
        assert "efficiency_upgrade" in found, found


def test_heat_recovery_candidates_are_found(fired: tuple[Fleet, dict[str, set[str]]]) -> None:
    fleet, kinds = fired
    assert all("heat_recovery" in found for found in _by_story(fleet, kinds, "heat_recovery"))


def test_steady_accounts_raise_no_risk_or_expansion(
    fired: tuple[Fleet, dict[str, set[str]]],
) -> None:
    fleet, kinds = fired
    quiet = {
        "usage_decline",
        "silent_assets",
        "capacity_saturation",
        "usage_growth",
        "third_party_parts",
        "heat_recovery",
    }
    for account in fleet.accounts:
        if account.story == "steady":
            assert not kinds[account.account_id] & quiet, (account, kinds[account.account_id])


def test_third_party_buyers_are_flagged(fired: tuple[Fleet, dict[str, set[str]]]) -> None:
    fleet, kinds = fired
    for found in _by_story(fleet, kinds, "third_party"):
        assert "third_party_parts" in found, found


def test_components_come_due_somewhere_in_the_fleet(
    fired: tuple[Fleet, dict[str, set[str]]],
) -> None:
    _, kinds = fired
    assert any("service_due" in found for found in kinds.values())


def _summary(findings: list[Finding]) -> list[tuple[object, ...]]:
    # sums over rows are not bit-for-bit reproducible in PostgreSQL (order of aggregation)
    return sorted(
        (f.account_id, f.kind, f.subject, round(f.score, 6), f.value, f.horizon_days)
        for f in findings
    )


def test_scoring_reads_nothing_after_as_of(
    db_url: str, fired: tuple[Fleet, dict[str, set[str]]]
) -> None:
    fleet, _ = fired
    as_of = month_start(fleet.start, 8)
    with psycopg.connect(db_url) as conn:
        before = _summary(score(conn, as_of))
        # the future changes completely: every machine at full load, no filters, no flow
        conn.execute(
            "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
            " SELECT asset_id, time + INTERVAL '1 minute', received_at,"
            ' \'{"load_pct": 100, "flow_m3_min": 0, "air_filter_dp_mbar": 500}\'::jsonb'
            " FROM telemetry WHERE time >= %s",
            (as_of,),
        )
        conn.commit()
        refresh_rollups(conn)
        after = _summary(score(conn, as_of))
    assert after == before


def test_price_book_overrides_and_errors() -> None:
    from decimal import Decimal

    from core.errors import ConfigError
    from signals.catalogue import PriceBook

    book = PriceBook.parse(" heat_recovery_module=700, price_per_m3 = 0.025 ,")
    assert book.heat_recovery_module == Decimal(700)
    assert book.price_per_m3 == Decimal("0.025")
    assert book.vsd_upgrade == PriceBook().vsd_upgrade
    assert PriceBook.parse("") == PriceBook()
    for bad in ("heat_recovery=700", "vsd_upgrade", "vsd_upgrade=-1", "vsd_upgrade=lots"):
        with pytest.raises(ConfigError, match="BASEWATCH_PRICE_BOOK"):
            PriceBook.parse(bad)
