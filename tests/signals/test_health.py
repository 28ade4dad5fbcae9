"""Account health: the churn classifier, its weighted fallback and the renewal_risk signal.

A simulated fleet (steady and declining accounts mostly, 18 months) is written to the database:
its contracts (as ``basewatch import contracts`` would store them), its service events, and its
telemetry as one reading per machine and day (the day's mean of every gauge, the day's last
value of every counter). Health reads only daily rollups, events and contracts, so daily
readings give it the same figures as hourly ones at a fraction of the loading time.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from decimal import Decimal

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from core.contracts import Contract
from core.errors import ConfigError
from core.registry import KINDS, RegistryBatch, import_registry
from signals import health
from signals.catalogue import PriceBook
from signals.findings import Finding
from signals.rollups import refresh_rollups
from simulator.commercial import contracts_for
from simulator.fleet import Fleet, make_fleet, month_start
from simulator.physics import METRICS, simulate_account

END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
COUNTERS = ("energy_kwh", "running_hours", "loaded_hours", "starts")
MIX = {"steady": 0.45, "declining": 0.4, "third_party": 0.15}


def _daily_rows(history: object) -> list[tuple[str, dt.datetime, dict[str, float]]]:
    rows = []
    for asset in history.assets:  # type: ignore[attr-defined]
        days = asset.epoch_s // 86400
        for day in np.unique(days[asset.reporting]):
            hours = (days == day) & asset.reporting
            metrics = {
                m: float(
                    asset.metrics[m][hours][-1] if m in COUNTERS else asset.metrics[m][hours].mean()
                )
                for m in METRICS
            }
            when = dt.datetime.fromtimestamp(int(day) * 86400 + 43200, dt.UTC)
            rows.append((asset.asset.asset_id, when, metrics))
    return rows


def _load(conn: psycopg.Connection, fleet: Fleet) -> None:
    records = fleet.registry_records()
    import_registry(conn, RegistryBatch({k: records[k] for k in KINDS}))
    with conn.cursor() as cur:
        for account in fleet.accounts:
            history = simulate_account(fleet, account)
            with cur.copy(
                "COPY telemetry (asset_id, time, received_at, metrics) FROM STDIN"
            ) as copy:
                for asset_id, when, metrics in _daily_rows(history):
                    copy.write_row((asset_id, when, when, Jsonb(metrics)))
            for asset in history.assets:
                for event in asset.events:
                    cur.execute(
                        "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (event.asset_id, event.time, event.kind, event.component, event.time),
                    )
            for contract in contracts_for(fleet, account, history.monthly_volume_m3):
                row = {k: (v if v != "" else None) for k, v in contract.row().items()}
                cur.execute(
                    "INSERT INTO contracts (contract_id, account_id, product_line, kind, currency,"
                    " start_date, end_date, billing_period, fee, unit_price, unit,"
                    " monthly_minimum, renewal, notice_days, term_months) VALUES (%(contract_id)s,"
                    " %(account_id)s, %(product_line)s, %(kind)s, %(currency)s, %(start_date)s,"
                    " %(end_date)s, %(billing_period)s, %(fee)s, %(unit_price)s, %(unit)s,"
                    " %(monthly_minimum)s, %(renewal)s, %(notice_days)s, %(term_months)s)",
                    row,
                )
    conn.commit()
    refresh_rollups(conn)
    conn.commit()


@pytest.fixture(scope="module")
def fleet(db_url: str) -> Fleet:
    made = make_fleet(seed=7, accounts=30, assets=45, months=18, end=END, mix=MIX)
    with psycopg.connect(db_url) as conn:
        _load(conn, made)
    return made


def _month(fleet: Fleet, m: int) -> dt.datetime:
    return month_start(fleet.start, m)


def test_training_is_reproducible_and_ranks_churners_higher(db_url: str, fleet: Fleet) -> None:
    with psycopg.connect(db_url) as conn:
        first = health.train(conn, END)
        second = health.train(conn, END)
        assert isinstance(first, health.HealthModel)
        assert isinstance(second, health.HealthModel)
        history, times, churns = health.labelled_history(conn, END)
        snaps = health.snapshots(conn, times)
    x = np.array([s.vector() for s in snaps])
    p1 = first.fitted[health.PRIMARY_HORIZON].probability(x)
    p2 = second.fitted[health.PRIMARY_HORIZON].probability(x)
    assert np.array_equal(p1, p2)
    assert first.summary == second.summary
    assert ((p1 >= 0) & (p1 <= 1)).all()
    followed = np.array(
        [health._churned(churns[s.account_id], s.as_of, health.PRIMARY_HORIZON) for s in snaps]
    )
    assert followed.sum() == history.churn_examples >= health.MIN_CHURN_EXAMPLES
    assert p1[followed].mean() > 2 * p1[~followed].mean()


def test_declining_account_near_renewal_gets_renewal_risk_steady_does_not(
    db_url: str, fleet: Fleet
) -> None:
    declining = {a.account_id: a for a in fleet.accounts if a.story == "declining"}
    steady = {a.account_id for a in fleet.accounts if a.story == "steady"}
    flagged: dict[str, list[Finding]] = {}
    steady_in_window = set()
    with psycopg.connect(db_url) as conn:
        for m in range(8, fleet.months):
            as_of = _month(fleet, m)
            model = health.train(conn, as_of)
            found = health.findings(conn, as_of, PriceBook(), model)
            health.record_latest(conn, as_of)
            for f in found:
                assert f.kind == "renewal_risk"
                assert f.family == "risk"
                flagged.setdefault(f.account_id, []).append(f)
            for h in health.assess(conn, as_of, model):
                if h.account_id in steady and h.snapshot.values["days_to_renewal"] <= 90:
                    steady_in_window.add(h.account_id)
    assert steady_in_window, "no steady account came up for renewal: the test would prove nothing"
    assert not set(flagged) & steady, {a: flagged[a][0].reasons for a in set(flagged) & steady}
    churning = [
        a for a in declining.values() if a.churn_month is not None and 10 <= a.churn_month <= 17
    ]
    assert churning
    for account in churning:
        flagged_for = flagged.get(account.account_id)
        assert flagged_for, account
        first = flagged_for[0]
        assert first.value > Decimal(0)
        assert 1 <= first.horizon_days <= 90
        assert "in " in first.reasons[0]
        assert "days" in first.reasons[0]
        assert any("%" in r or "machines silent" in r for r in first.reasons[2:]), first.reasons
        assert "MRR at stake" in first.reasons[-1]


def test_too_little_churn_history_falls_back_to_the_weighted_score(
    db_url: str, fleet: Fleet
) -> None:
    first_churn = min(a.churn_month for a in fleet.accounts if a.churn_month is not None)
    as_of = _month(fleet, first_churn - 2)
    with psycopg.connect(db_url) as conn:
        history, _, _ = health.labelled_history(conn, as_of)
        assert not history.enough
        assert health.train(conn, as_of) is None
        conn.execute("DELETE FROM account_health WHERE as_of = %s", (as_of,))
        found = health.findings(conn, as_of, PriceBook(), None)
        query = "SELECT count(*) FROM account_health WHERE as_of = %s"
        assert conn.execute(query, (as_of,)).fetchone() == (0,)  # findings write nothing
        assert health.record_latest(conn, as_of) == len(health.assess(conn, as_of, None))
        rows = conn.execute(
            "SELECT account_id, method, probability, factors FROM account_health WHERE as_of = %s",
            (as_of,),
        ).fetchall()
    active = {a.account_id for a in fleet.accounts if a.start_month <= first_churn - 2}
    assert {r[0] for r in rows} == active
    assert {r[1] for r in rows} == {"weighted"}
    churner = next(a for a in fleet.accounts if a.churn_month == first_churn)
    risky = [f for f in found if f.account_id == churner.account_id]
    assert risky, found
    assert any(
        r.startswith("churn risk")
        and f"weighted score: too little churn history to train ({history.churns} churns" in r
        for r in risky[0].reasons
    ), risky[0].reasons
    weights = health.weighted_factors(_features(rows, churner.account_id))
    assert risky[0].score == pytest.approx(sum(c for _, c in weights.values()), abs=1e-3)


def _features(rows: list[tuple[object, ...]], account_id: str) -> dict[str, float]:
    factors = next(r[3] for r in rows if r[0] == account_id)
    assert isinstance(factors, dict)
    return {k: float(v) for k, v in factors["features"].items()}


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    environ["BASEWATCH_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "basewatch", "signals", "health", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_lists_the_latest_health_of_each_account(db_url: str, fleet: Fleet) -> None:
    with psycopg.connect(db_url) as conn:
        latest = conn.execute(
            "SELECT DISTINCT ON (account_id) account_id, probability, method FROM account_health"
            " ORDER BY account_id, as_of DESC"
        ).fetchall()
    assert latest
    result = _cli(db_url, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert {r["account_id"]: (r["probability"], r["method"]) for r in listed} == {
        a: (round(p, 4), m) for a, p, m in latest
    }
    assert [r["probability"] for r in listed] == sorted(
        (r["probability"] for r in listed), reverse=True
    )
    one = _cli(db_url, "--json", "--account", latest[0][0])
    assert one.returncode == 0
    assert [r["account_id"] for r in json.loads(one.stdout)] == [latest[0][0]]
    unknown = _cli(db_url, "--account", "no-such-account")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert len(unknown.stderr.strip().splitlines()) == 1
    refreshed = _cli(db_url, "--json", "--refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    # the data ended more than 48 h ago: accounts with a contract at its end are scored as of
    # the end, by the weighted score (no model is stored); churned ones keep their last record
    with psycopg.connect(db_url) as conn:
        end = health.data_end(conn)
    assert end is not None
    end_rows = [r for r in json.loads(refreshed.stdout) if r["as_of"] == end.isoformat()]
    assert {r["account_id"] for r in end_rows} >= {
        a.account_id for a in fleet.accounts if a.churn_month is None
    }
    assert {r["method"] for r in end_rows} == {"weighted"}
    text = _cli(db_url)
    assert text.returncode == 0
    assert latest[0][0] in text.stdout


def test_the_model_trained_until_t_ignores_data_after_t(db_url: str, fleet: Fleet) -> None:
    cut = _month(fleet, 16)
    with psycopg.connect(db_url) as conn:
        before = health.train(conn, cut)
        assert isinstance(before, health.HealthModel)
        scored_before = {h.account_id: h.probability for h in health.assess(conn, cut, before)}
        later = cut + dt.timedelta(days=20)
        later_before = {s.account_id: s.values for s in health.snapshots(conn, [later])}
        # the future changes completely: machines report at full load without flow, filters
        # reset without service, every account signs a new contract and churns in between
        conn.execute(
            "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
            " SELECT asset_id, time + INTERVAL '1 hour', received_at,"
            ' \'{"load_pct": 100, "flow_m3_min": 0, "air_filter_dp_mbar": 0}\'::jsonb'
            " FROM telemetry WHERE time >= %s",
            (cut,),
        )
        conn.execute(
            "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
            " SELECT asset_id, %s + INTERVAL '3 days', 'service', 'air_filter', now()"
            " FROM assets",
            (cut,),
        )
        conn.execute(
            "INSERT INTO contracts (contract_id, account_id, product_line, kind, currency,"
            " start_date, end_date, billing_period, fee, renewal, notice_days)"
            " SELECT 'future-' || account_id, account_id, 'monitoring', 'addon', 'EUR',"
            " %s::date + 40, %s::date + 70, 'month', 99, 'manual', 30 FROM accounts",
            (cut, cut),
        )
        conn.commit()
        refresh_rollups(conn)
        conn.commit()
        after = health.train(conn, cut)
        assert isinstance(after, health.HealthModel)
        scored_after = {h.account_id: h.probability for h in health.assess(conn, cut, after)}
        later_after = {s.account_id: s.values for s in health.snapshots(conn, [later])}
    # the inserted data is material: it changes what is seen after the cut
    assert later_after != later_before
    assert after.summary == before.summary
    assert scored_after.keys() == scored_before.keys()
    for account_id, p in scored_before.items():
        assert scored_after[account_id] == pytest.approx(p, abs=1e-9)


def test_refresh_of_a_fleet_whose_data_ended_scores_as_of_the_end_and_says_so(
    db_url: str, fleet: Fleet
) -> None:
    """Issue 14 item 9: ``signals health --refresh`` on a fleet whose data ended days ago
    marked every machine silent and every account at risk, and printed the weighted
    fallback as "% within 90 days", which it is not."""
    with psycopg.connect(db_url) as conn:
        end = health.data_end(conn)
    assert end is not None
    assert end.date() == dt.date(2025, 12, 31)  # the end of the last reading's hour
    text = _cli(db_url, "--refresh")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"no machine has reported since {end:%Y-%m-%d %H:%M} UTC (")
    assert "scored as of the end of the data, not now" in lines[0]
    assert "% within" not in text.stdout  # no model: the weighted score is not a probability
    assert "not a probability" in lines[1]
    assert "risk score 0." in text.stdout

    document = _cli(db_url, "--refresh", "--json")
    assert document.returncode == 0, document.stderr
    assert "scored as of the end of the data" in document.stderr
    rows = [r for r in json.loads(document.stdout) if r["as_of"] == end.isoformat()]
    assert len(rows) >= 10
    assert {r["measure"] for r in rows} == {"weighted risk score in [0, 1] (not a probability)"}
    # as of now every machine was silent for 48 h and more, and every account at risk
    silent = [r for r in rows if any("silent for more than 48 h" in f for f in r["top_factors"])]
    assert len(silent) < len(rows) / 2, silent


@pytest.fixture(scope="module")
def story(db_url: str, fleet: Fleet) -> tuple[dict[str, object], list[tuple[float, str]]]:
    """The demo's signals replay over the last month of the fleet, with its progress lines
    and when each was printed (the first and last entries: the call's start and end)."""
    from basewatch.demo_signals import signals_story
    from core.settings import Settings

    with psycopg.connect(db_url) as conn:
        conn.execute("TRUNCATE account_health, signal_models")
        conn.commit()
    lines: list[tuple[float, str]] = [(time.monotonic(), "(start)")]
    document = signals_story(
        db_url, Settings(database_url=db_url), END, 1, lambda t: lines.append((time.monotonic(), t))
    )
    lines.append((time.monotonic(), "(end)"))
    return document, lines


def test_the_demo_replay_stores_its_models_and_the_account_health(
    db_url: str, story: tuple[dict[str, object], list[tuple[float, str]]]
) -> None:
    """Issue 14 item 9: after ``scripts/demo``, ``signals health`` said "No account health
    recorded": the replay neither recorded the health nor kept the models it trained."""
    document, _ = story
    saved = document["models_saved"]
    assert isinstance(saved, dict)
    assert saved.get(health.NAME, 0) >= 1, saved
    assert "Models trained by the replay and stored" in str(document["text"])
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT DISTINCT name FROM signal_models ORDER BY name").fetchall()
        latest = health.latest_health(conn)
        some = [r["account_id"] for r in latest[::3]]
        chosen = health.latest_health(conn, accounts=[*some, "no-such-account"])
    assert (health.NAME,) in stored
    assert latest
    assert chosen == [r for r in latest if r["account_id"] in some]  # same rows, same order
    assert {r["as_of"][:10] for r in latest} == {"2025-12-31"}  # the replay's last pass

    listed = _cli(db_url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == len(latest)
    refreshed = _cli(db_url, "--refresh")  # with the model the replay stored
    assert refreshed.returncode == 0, refreshed.stderr
    assert "% within 90 days" in refreshed.stdout
    assert "[model]" in refreshed.stdout


def test_the_demo_replay_says_how_many_passes_and_how_long_is_left(
    story: tuple[dict[str, object], list[tuple[float, str]]],
) -> None:
    """Issue 14 item 14: the replay printed neither its number of passes nor an estimate,
    and went quiet for long stretches."""
    document, lines = story
    texts = [text for _, text in lines]
    assert document["passes"] == 30
    assert any(
        t.startswith("demo: signals replay: 30 daily scoring passes from 2025-12-02 to 2025-12-31")
        for t in texts
    ), texts
    assert any(
        t.startswith("demo: signals replay pass 30/30 (2025-12-31) done, ") and "left" in t
        for t in texts
    ), texts
    assert any("about " in t and " left" in t for t in texts if "/30 (" in t), texts
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(lines)]
    assert max(gaps) <= 12.0, list(zip(gaps, texts[1:], strict=True))


def test_the_heartbeat_fills_a_long_step_and_the_estimate_counts_the_trainings_to_come() -> None:
    from basewatch.demo_signals import Estimate
    from basewatch.heartbeat import Heartbeat

    printed: list[str] = []
    with Heartbeat(printed.append, interval_s=0.5) as beat:
        beat.status(lambda: "training models")
        time.sleep(1.3)  # one step longer than the interval: the heartbeat speaks
        beat.say("step done")
    assert printed[:2] == ["training models", "training models"]
    assert printed[-1] == "step done"

    # 60 daily passes, models retrained every 30 days: a training pass took 20 s, the plain
    # passes 1 s each; after 10 passes: 49 plain passes and one more training (the 31st)
    start = dt.datetime(2025, 11, 1, 6, tzinfo=dt.UTC)
    estimate = Estimate(start, 60)
    estimate.passed(start, 20.0, retrained=True)
    for day in range(1, 10):
        estimate.passed(start + day * dt.timedelta(days=1), 1.0, retrained=False)
    assert estimate.seconds_left() == pytest.approx(49 * 1.0 + 20.0)
    assert Estimate(start, 60).seconds_left() is None


# -- the MRR at stake and the renewal window, on plain data -----------------------------------


def _at_risk(contracts: list[Contract], days_to_renewal: int) -> health.Health:
    as_of = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    renewal_day = as_of.date() + dt.timedelta(days=days_to_renewal)
    values = {
        "usage_change": 0.0,
        "silent_share": 0.0,
        "third_party_parts": 0.0,
        "days_to_renewal": float(days_to_renewal),
    }
    facts = {
        "renewal": (renewal_day, "renewal", contracts[0]),
        "usage": {"recent": None, "unit": "m³"},
        "active": contracts,
        "machines": 2,
        "silent": [],
        "third_party": [],
    }
    snap = health.Snapshot("acc-1", as_of, values, facts)
    return health.Health(snap, 0.6, None, "weighted", [{"text": "usage down"}])


def _fixed(contract_id: str, currency: str, fee: str) -> Contract:
    return Contract(
        contract_id,
        "acc-1",
        "maintenance",
        "fixed",
        currency,
        dt.date(2023, 7, 1),
        billing_period="year",
        fee=Decimal(fee),
        renewal="auto",
        notice_days=30,
    )


def test_a_contract_without_an_exchange_rate_is_left_out_of_the_mrr_and_named() -> None:
    """Before issue 12 a missing rate counted as 1.0 (1,200 USD/year = 100 EUR a month); now
    the contract is left out of the figure and the reason names it."""
    contracts = [_fixed("c-eur", "EUR", "2400"), _fixed("c-usd", "USD", "1200")]
    at_risk = [_at_risk(contracts, 40)]
    as_of = at_risk[0].snapshot.as_of
    (without,) = health.renewal_findings(at_risk, as_of, PriceBook(), {}, "note", 90)
    assert without.value == Decimal("200.00")  # 2,400 EUR / 12; the USD contract left out
    assert without.reasons[-1] == (
        "MRR at stake 200.00 EUR a month (fixed 200.00 EUR + metered 0.00 EUR); "
        "left out, no exchange rate to EUR: c-usd (USD)"
    )
    (priced,) = health.renewal_findings(
        at_risk, as_of, PriceBook(), {"USD": Decimal("0.9")}, "note", 90
    )
    assert priced.value == Decimal("290.00")  # + 100 USD × 0.9
    assert priced.reasons[-1].endswith("(fixed 290.00 EUR + metered 0.00 EUR)")


def test_the_renewal_window_comes_with_the_price_book() -> None:
    """``findings`` reads the window from its price book (no module setting): the composition
    root builds it from BASEWATCH_RENEWAL_WINDOW_DAYS."""
    from basewatch.wiring import signal_prices
    from core.settings import Settings

    book = signal_prices(Settings(renewal_window_days=30))
    assert book.renewal_window_days == 30
    assert signal_prices(Settings()).renewal_window_days == 90
    assert not hasattr(health, "configure")
    with pytest.raises(ValueError, match="at least one day"):
        PriceBook(renewal_window_days=0)
    with pytest.raises(ConfigError, match="BASEWATCH_PRICE_BOOK"):
        PriceBook.parse("renewal_window_days=30")  # a setting of its own, not a price
