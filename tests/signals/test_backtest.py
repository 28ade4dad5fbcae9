"""The backtest: the in-memory alert lifecycle, the per-kind figures worked by hand, and a
replay that cannot see the future (cutting the data after a moment changes no alert raised
before it)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from signals.backtest import (
    PENDING_NOTE,
    BacktestResult,
    KindResult,
    Lifecycle,
    OperatingSpans,
    RaisedAlert,
    chance_level,
    delivery_load_of,
    evaluate_kind,
    format_table,
    hours_covered,
    is_pending,
    load_truth,
    operating_spans,
    replay,
    run_backtest,
)
from signals.findings import Finding
from signals.rollups import refresh_rollups, uses_continuous_aggregates
from signals.truth import LabelledTruth, TruthEvent
from simulator.fleet import make_fleet, month_start
from tests.signals.fix_fleet import load_fleet

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def _finding(kind: str = "usage_decline", subject: str = "", account: str = "a1") -> Finding:
    return Finding(account, kind, subject, 0.5, Decimal(100), 30, ("why",))


def test_lifecycle_raises_on_entry_expires_after_clear_and_holds_cooldown() -> None:
    life = Lifecycle(clear_after=dt.timedelta(hours=2), cooldown=dt.timedelta(hours=10))
    f = _finding()
    assert life.apply([f], T0) == [f]  # entered: raised
    assert life.apply([f], T0 + HOUR) == []  # holds: no new alert
    assert life.apply([], T0 + 2 * HOUR) == []  # clear 1 h: still open
    assert life.apply([f], T0 + 3 * HOUR) == []  # back within the clear time: same alert
    assert life.apply([], T0 + 4 * HOUR) == []
    assert life.apply([], T0 + 5 * HOUR) == []  # clear 2 h: not yet more than clear_after
    assert life.apply([], T0 + 6 * HOUR) == []  # expired now (3 h clear)
    assert not life.open
    assert life.apply([f], T0 + 7 * HOUR) == []  # cooldown: 1 h after closing
    assert life.apply([f], T0 + 17 * HOUR) == [f]  # 11 h after closing: raised again
    other = _finding(subject="m1")
    assert life.apply([f, other], T0 + 18 * HOUR) == [other]  # another subject: its own alert


def _alert(kind: str, at: dt.datetime, subject: str = "m1", horizon: int = 7) -> RaisedAlert:
    return RaisedAlert(at, "a1", kind, subject, 0.9, Decimal(120), horizon, ("r",), "csm1")


def test_failure_risk_figures_by_hand() -> None:
    """failure_risk promises a failure of the asset: only failures confirm it, a replacement
    (by us or by a third party) of the same asset inside the window does not."""
    start, end = T0, T0 + dt.timedelta(weeks=4)
    alerts = [
        _alert("failure_risk", T0 + 10 * HOUR, "m1"),  # failure 50 h later: true
        _alert("failure_risk", T0 + 20 * HOUR, "m1"),  # same failure: true
        _alert("failure_risk", T0 + 30 * HOUR, "m2"),  # only a replacement follows: false
        _alert("failure_risk", T0 + 40 * HOUR, "m3"),  # a third-party replacement: false
        _alert("failure_risk", T0 + 100 * HOUR, "m5"),  # nothing follows: false
    ]
    truth = [
        TruthEvent("failure", "a1", "m1", "oil_filter", T0 + 60 * HOUR),
        TruthEvent("replacement", "a1", "m2", "separator", T0 + 54 * HOUR),
        TruthEvent("third_party_replacement", "a1", "m3", "air_filter", T0 + 50 * HOUR),
        TruthEvent("failure", "a1", "m4", "oil", T0 + 300 * HOUR),  # not caught
        TruthEvent("failure", "a1", "m1", "separator", T0 + 900 * HOUR),  # after the period
    ]
    result = evaluate_kind("failure_risk", alerts, truth, {}, start, end, 4000, 2, 4.0)
    assert result.alerts == 5
    assert result.true_alerts == 2
    assert result.precision == pytest.approx(0.4)
    assert result.events == 2  # failures inside the period
    assert result.caught == 1
    assert result.recall == pytest.approx(0.5)
    assert result.recall_foreseeable == pytest.approx(0.5)  # every failure foreseeable
    assert result.median_lead_hours == pytest.approx(50.0)  # from the first alert
    assert result.alerts_per_csm_week == pytest.approx(5 / 2 / 4)
    assert result.false_per_1000_hours == pytest.approx(3 * 1000 / 4000)
    assert result.truth == "failure"
    assert result.as_dict()["promise"].startswith("the asset fails within 72 running hours")


def test_service_due_is_confirmed_by_replacements_not_failures() -> None:
    """service_due promises a replacement of the component (ours or a third party's) within its
    horizon; its recall is over those replacements; a failure confirms nothing."""
    start, end = T0, T0 + dt.timedelta(weeks=4)
    alerts = [
        _alert("service_due", T0 + 10 * HOUR, "m1/oil_filter"),  # our replacement 44 h on
        _alert("service_due", T0 + 20 * HOUR, "m2/separator"),  # a third party's, 30 h on
        _alert("service_due", T0 + 30 * HOUR, "m3/air_filter"),  # m3 fails: false
        _alert("service_due", T0 + 40 * HOUR, "m1/separator"),  # m1's replacement is oil: false
    ]
    truth = [
        TruthEvent("replacement", "a1", "m1", "oil_filter", T0 + 54 * HOUR),
        TruthEvent("third_party_replacement", "a1", "m2", "separator", T0 + 50 * HOUR),
        TruthEvent("failure", "a1", "m3", "air_filter", T0 + 40 * HOUR),
        TruthEvent("replacement", "a1", "m4", "oil_filter", T0 + 300 * HOUR),  # not foreseen
    ]
    result = evaluate_kind("service_due", alerts, truth, {}, start, end, 4000, 2, 4.0)
    assert (result.alerts, result.true_alerts) == (4, 2)
    assert (result.events, result.caught) == (3, 2)  # replacements, both kinds
    assert result.recall_foreseeable is None  # a failure kind's figure only
    assert result.as_dict()["recall_foreseeable"] is None
    assert result.truth == "replacement or third_party_replacement"
    # leads 30 h and 44 h: the quartiles interpolate between them
    assert result.lead_p25_hours == pytest.approx(33.5)
    assert result.median_lead_hours == pytest.approx(37.0)
    assert result.lead_p75_hours == pytest.approx(40.5)
    figures = result.as_dict()
    assert (figures["lead_hours_p25"], figures["lead_hours_p75"]) == (33.5, 40.5)


def test_asset_anomaly_is_confirmed_by_an_alarm_but_recall_counts_failures() -> None:
    start, end = T0, T0 + dt.timedelta(weeks=4)
    alerts = [
        _alert("asset_anomaly", T0 + 10 * HOUR, "m1"),  # an alarm 5 h later: true
        _alert("asset_anomaly", T0 + 10 * HOUR, "m2"),  # a failure 20 h later: true
        _alert("asset_anomaly", T0 + 10 * HOUR, "m3"),  # a replacement only: false
    ]
    truth = [
        TruthEvent("alarm", "a1", "m1", "", T0 + 15 * HOUR),
        TruthEvent("failure", "a1", "m2", "", T0 + 30 * HOUR),
        TruthEvent("replacement", "a1", "m3", "oil_filter", T0 + 30 * HOUR),
        TruthEvent("failure", "a1", "m4", "", T0 + 300 * HOUR),  # missed
        TruthEvent("alarm", "a1", "m5", "", T0 + 300 * HOUR),  # missed, but no miss
    ]
    result = evaluate_kind("asset_anomaly", alerts, truth, {}, start, end, 4000, 1, 4.0)
    assert (result.alerts, result.true_alerts) == (3, 2)
    assert (result.events, result.caught) == (2, 1)  # failures only
    assert result.truth == "alarm or failure"


def test_recall_foreseeable_leaves_out_a_failure_no_data_could_foresee() -> None:
    start, end = T0, T0 + dt.timedelta(weeks=4)
    alerts = [_alert("failure_risk", T0 + 10 * HOUR, "m1")]
    truth = [
        TruthEvent("failure", "a1", "m1", "", T0 + 30 * HOUR),
        TruthEvent("failure", "a1", "m2", "", T0 + 100 * HOUR),  # missed, foreseeable
        TruthEvent("failure", "a1", "m3", "", T0 + 200 * HOUR, foreseeable=False),  # sudden
    ]
    result = evaluate_kind("failure_risk", alerts, truth, {}, start, end, 4000, 1, 4.0)
    assert (result.events, result.caught) == (3, 1)
    assert result.recall == pytest.approx(1 / 3)
    assert (result.foreseeable_events, result.foreseeable_caught) == (2, 1)
    assert result.recall_foreseeable == pytest.approx(1 / 2)
    assert result.as_dict()["recall_foreseeable"] == 0.5
    anomaly = evaluate_kind(
        "asset_anomaly",
        [_alert("asset_anomaly", T0 + 190 * HOUR, "m3")],
        truth,
        {},
        start,
        end,
        4000,
        1,
        4.0,
    )
    # the sudden failure foreseen anyway counts in recall, not in the foreseeable recall
    assert (anomaly.caught, anomaly.foreseeable_events, anomaly.foreseeable_caught) == (1, 2, 0)


def test_churn_and_story_kinds_by_hand() -> None:
    start, end = T0, T0 + dt.timedelta(days=365)
    alerts = [
        _alert("usage_decline", T0 + dt.timedelta(days=10), ""),
        RaisedAlert(T0, "a2", "usage_decline", "", 0.4, Decimal(1), 30, (), None),
        RaisedAlert(T0, "a2", "efficiency_upgrade", "", 0.4, Decimal(1), 30, (), None),
        RaisedAlert(T0, "a3", "efficiency_upgrade", "", 0.4, Decimal(1), 30, (), None),
    ]
    truth = [TruthEvent("churn", "a1", "", "", T0 + dt.timedelta(days=100))]
    decline = evaluate_kind("usage_decline", alerts, truth, {}, start, end, 0, 1, 52.0)
    assert (decline.alerts, decline.true_alerts, decline.events, decline.caught) == (2, 1, 1, 1)
    assert decline.median_lead_hours == pytest.approx(90 * 24)
    assert decline.false_per_1000_hours is None  # no operating hours known
    stories = {"a1": "leaky", "a2": "leaky", "a3": "steady"}
    leaks = evaluate_kind("efficiency_upgrade", alerts, truth, stories, start, end, 0, 1, 52.0)
    assert (leaks.alerts, leaks.true_alerts, leaks.events, leaks.caught) == (2, 1, 2, 1)
    nothing = evaluate_kind("silent_assets", alerts, [], {}, start, end, 0, 1, 52.0)
    assert nothing.precision is None
    assert nothing.recall is None


def test_hours_covered_by_hand_with_edge_windows() -> None:
    """Two assets of 100 operating hours (0..99), a 10-hour window after each start: a failure
    at hour 50 is in the windows starting at hours 40..50 (11 of the 200 asset-hours)."""
    first, last = T0, T0 + 99 * HOUR

    def starts(*hours: int) -> list[tuple[dt.datetime, dt.datetime]]:
        return [(T0 + (h - 10) * HOUR, T0 + h * HOUR) for h in hours]

    m1, m2 = hours_covered(first, last, starts(50)), hours_covered(first, last, [])
    assert (m1, m2) == (11, 0)
    assert (m1 + m2) / 200 == pytest.approx(0.055)
    assert hours_covered(first, last, starts(3)) == 4  # windows from hours 0..3 only
    assert hours_covered(first, last, starts(95)) == 11  # 85..95
    assert hours_covered(first, last, starts(105)) == 5  # after the span: 95..99
    assert hours_covered(first, last, starts(-1)) == 0  # before the span: no window holds it
    assert hours_covered(first, last, starts(50, 55)) == 16  # 40..55, the overlap once
    assert hours_covered(first, last, starts(50, 50, 70)) == 22  # 40..50 and 60..70
    half = [(T0 + 40 * HOUR + HOUR / 2, T0 + 50 * HOUR + HOUR / 2)]
    assert hours_covered(first, last, half) == 10  # hours 41..50 on the grid


def _spans(hours: int = 100, assets: tuple[str, ...] = ("m1", "m2")) -> OperatingSpans:
    return OperatingSpans(dict.fromkeys(assets, ("a1", T0, T0 + (hours - 1) * HOUR)))


def test_chance_level_by_hand_at_the_scoring_rule() -> None:
    """An asset_anomaly alert's window is its horizon (at least one day): a failure of m1 at
    hour 50 is in the windows starting at hours 26..50 of m1 - 25 of 200 asset-hours. A
    service_due alert about another component is not confirmed by it, so its chance is 0,
    and the kind's chance is the mean over its alerts."""
    spans = _spans()
    start, end = T0, T0 + 100 * HOUR
    failure = TruthEvent("failure", "a1", "m1", "oil_filter", T0 + 50 * HOUR)
    replaced = TruthEvent("replacement", "a1", "m2", "oil_filter", T0 + 50 * HOUR)
    anomaly = _alert("asset_anomaly", T0 + 30 * HOUR, "m1", horizon=0)
    subjects = [(a, s, lo, hi) for s, (a, lo, hi) in spans.assets.items()]
    assert chance_level(anomaly, [failure], subjects) == (25, 200)
    assert chance_level(anomaly, [], subjects) == (0, 200)  # zero truth: no window holds one
    result = evaluate_kind("asset_anomaly", [anomaly], [failure], {}, start, end, 200, 1, 1.0)
    with_chance = evaluate_kind(
        "asset_anomaly", [anomaly], [failure], {}, start, end, 200, 1, 1.0, spans=spans
    )
    assert result.chance_precision is None  # no spans: no chance level
    assert with_chance.chance_precision == pytest.approx(25 / 200)
    assert with_chance.as_dict() == result.as_dict() | {
        "chance_precision": 0.125,
        "chance_precision_decided": 0.125,  # no data end given: every window is decided
    }
    assert with_chance.precision == 1.0  # the failure is 20 h after the alert
    due = [
        _alert("service_due", T0, "m2/oil_filter", horizon=1),  # 25 of 200
        _alert("service_due", T0, "m2/separator", horizon=1),  # another component: 0
    ]
    truth = [failure, replaced]
    mixed = evaluate_kind("service_due", due, truth, {}, start, end, 200, 1, 1.0, spans=spans)
    assert mixed.chance_precision == pytest.approx((25 / 200 + 0) / 2)
    assert mixed.precision == 0.0
    # failure_risk's chance is the rate of failures alone: the replacement counts for nothing
    risk = [_alert("failure_risk", T0, "m2", horizon=1)]
    alone = evaluate_kind("failure_risk", risk, truth, {}, start, end, 200, 1, 1.0, spans=spans)
    assert alone.chance_precision == pytest.approx(25 / 200)
    assert alone.precision == 0.0
    elsewhere = TruthEvent("failure", "a1", "m9", "oil_filter", T0 + 50 * HOUR)
    none_here = evaluate_kind(
        "asset_anomaly", [anomaly], [elsewhere], {}, start, end, 200, 1, 1.0, spans=spans
    )
    assert none_here.chance_precision == 0.0  # truth, but none on an operating subject
    no_truth = evaluate_kind(
        "asset_anomaly", [anomaly], [], {}, start, end, 200, 1, 1.0, spans=spans
    )
    no_alerts = evaluate_kind(
        "asset_anomaly", [], [failure], {}, start, end, 200, 1, 1.0, spans=spans
    )
    assert no_truth.chance_precision is None
    assert no_alerts.chance_precision is None
    assert "chance_precision" in no_truth.as_dict()


def test_chance_is_one_when_every_window_holds_an_event() -> None:
    """A failure every day on every asset, a one-day window: every window holds one. Churn
    of one of two accounts with equal spans: half the account-hours."""
    spans = _spans(hours=120)
    start, end = T0, T0 + 120 * HOUR
    truth = [
        TruthEvent("failure", "a1", m, "", T0 + d * DAY) for m in ("m1", "m2") for d in range(6)
    ]
    alerts = [_alert("asset_anomaly", T0, "m1", horizon=1)]
    result = evaluate_kind("asset_anomaly", alerts, truth, {}, start, end, 240, 1, 1.0, spans=spans)
    assert result.chance_precision == 1.0
    sparse = evaluate_kind(
        "asset_anomaly", alerts, truth[::2], {}, start, end, 240, 1, 1.0, spans=spans
    )
    assert sparse.chance_precision is not None
    assert 0 < sparse.chance_precision < 1
    accounts = OperatingSpans({"m1": ("a1", T0, T0 + 99 * HOUR), "m2": ("a2", T0, T0 + 99 * HOUR)})
    churn = [TruthEvent("churn", "a1", "", "", T0 + 400 * DAY)]
    decline = [_alert("usage_decline", T0, "")]
    far = evaluate_kind(
        "usage_decline", decline, churn, {}, start, end, 200, 1, 1.0, spans=accounts
    )
    assert far.chance_precision == 0.0  # 400 days on: beyond every window
    churn = [TruthEvent("churn", "a1", "", "", T0 + 100 * DAY)]
    near = evaluate_kind(
        "usage_decline", decline, churn, {}, start, end, 200, 1, 1.0, spans=accounts
    )
    assert near.chance_precision == pytest.approx(0.5)
    stories = {"a1": "leaky", "a2": "steady"}
    upgrade = [_alert("efficiency_upgrade", T0, "")]
    leaky = evaluate_kind(
        "efficiency_upgrade", upgrade, [], stories, start, end, 200, 1, 1.0, spans=accounts
    )
    assert leaky.chance_precision == pytest.approx(0.5)


def _cut(db_url: str, at: dt.datetime) -> None:
    """Delete everything the database learnt at or after ``at``."""
    with psycopg.connect(db_url) as conn:
        if uses_continuous_aggregates(conn):  # TimescaleDB: the aggregates follow telemetry
            conn.execute("DELETE FROM telemetry WHERE time >= %s", (at,))
            conn.commit()
            refresh_rollups(conn)
            return
        conn.execute("DELETE FROM rollup_hourly WHERE bucket + INTERVAL '1 hour' > %s", (at,))
        conn.execute("DELETE FROM rollup_daily WHERE bucket + INTERVAL '1 day' > %s", (at,))
        conn.execute("DELETE FROM telemetry WHERE time >= %s", (at,))
        conn.execute("DELETE FROM asset_events WHERE time >= %s", (at,))


def test_backtest_uses_no_future_data(db_url: str) -> None:
    """Passes around a cut-off inside a day: the passes before it find exactly the same with
    the data after it deleted (a rule reading a partial day, or a model trained on the
    future, would differ). A few days either side of the cut are enough to prove it."""
    end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    mix = {"declining": 1.0, "leaky": 1.0, "growing": 1.0, "steady": 1.0}
    fleet = make_fleet(seed=11, accounts=4, assets=8, months=6, end=end, mix=mix)
    load_fleet(db_url, fleet)
    cut = month_start(fleet.start, 4) + dt.timedelta(days=20, hours=15)
    start, stop = cut - dt.timedelta(days=8), cut + dt.timedelta(days=4)
    step = dt.timedelta(hours=6)
    week = dt.timedelta(days=7)
    with psycopg.connect(db_url, autocommit=True) as conn:
        full = run_backtest(conn, start, stop, step=step, retrain_every=week)
        every = {t: findings for t, findings, _ in replay(conn, start, stop, step=step)}
        spans = operating_spans(conn, start, stop)
    assert full.passes == int((stop - start) / step)
    passes = {t: findings for t, findings in every.items() if t < cut}
    last_before = passes[max(passes)]
    after = [findings for t, findings in every.items() if t >= cut]
    # the data after the cut changes what the passes find: a leak would show
    assert any(findings != last_before for findings in after), "the check needs later data"
    before = [a for a in full.alerts if a.raised_at < cut]
    assert before, "the check needs alerts before the cut"
    _cut(db_url, cut)
    with psycopg.connect(db_url, autocommit=True) as conn:
        truncated = run_backtest(conn, start, cut, step=step, retrain_every=week)
        again = {t: findings for t, findings, _ in replay(conn, start, cut, step=step)}
    assert truncated.alerts == before
    assert truncated.data_end == cut  # the end of the last hourly bucket before the cut
    assert full.data_end is not None
    assert full.data_end > stop
    assert again == passes  # every finding of every pass, with its figures and reasons
    assert "usage_decline" in format_table(full)
    assert " chance " in format_table(full).splitlines()[1]
    assert spans.assets, "the fleet has operating hours"
    span_hours = sum((hi - lo) // HOUR + 1 for _, lo, hi in spans.assets.values())
    assert span_hours >= full.operating_hours > 0  # a span includes hours without data
    for k in full.kinds:
        if k.alerts and k.true_alerts is not None:
            assert k.chance_precision is not None, k
            assert 0 <= k.chance_precision <= 1, k
        else:
            assert k.chance_precision is None, k


def test_truth_is_asset_events_and_the_labelled_truth_each_once(db_url: str) -> None:
    """The machines' failures, service-order replacements and alarms from ``asset_events`` and
    the labelled events of the scored kinds inside the window, an event in both counted once."""
    at = dt.datetime(2031, 6, 1, tzinfo=dt.UTC)
    failure = TruthEvent("failure", "bt-a1", "bt-m1", "oil_filter", at)
    # also in asset_events: once, as labelled (the label knows it was not foreseeable)
    sudden = TruthEvent("failure", "bt-a1", "bt-m1", "oil_filter", at, foreseeable=False)
    labelled = LabelledTruth(
        (
            sudden,
            TruthEvent("churn", "bt-a1", "", "", at + 30 * DAY),
            TruthEvent("third_party_replacement", "bt-a1", "bt-m1", "air_filter", at - 59 * DAY),
            TruthEvent("expansion", "bt-a1", "", "", at - 61 * DAY),  # before the window
            TruthEvent("churn", "bt-a1", "", "", at + 90 * DAY),  # at its end: outside
            TruthEvent("silent", "bt-a1", "bt-m1", "", at),  # not a scored kind
        ),
        {"bt-a1": "declining"},
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (account_id, name) VALUES ('bt-a1', 'Truth test')")
        conn.execute("INSERT INTO assets (asset_id, account_id) VALUES ('bt-m1', 'bt-a1')")
        try:
            conn.execute(
                "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
                " VALUES ('bt-m1', %(t)s, 'failure', 'oil_filter', %(t)s),"
                " ('bt-m1', %(r)s, 'component_replaced', 'separator', %(r)s),"
                " ('bt-m1', %(t)s, 'alarm', 'oil_filter', %(t)s)",
                {"t": at, "r": at + DAY},
            )
            truth = load_truth(conn, at, at + 90 * DAY, labelled)
            without = load_truth(conn, at, at + 90 * DAY, LabelledTruth())
        finally:
            conn.execute("DELETE FROM asset_events WHERE asset_id = 'bt-m1'")
            conn.execute("DELETE FROM assets WHERE asset_id = 'bt-m1'")
            conn.execute("DELETE FROM accounts WHERE account_id = 'bt-a1'")
    replacement = TruthEvent("replacement", "bt-a1", "bt-m1", "separator", at + DAY)
    alarm = TruthEvent("alarm", "bt-a1", "bt-m1", "oil_filter", at)
    assert truth == [
        TruthEvent("third_party_replacement", "bt-a1", "bt-m1", "air_filter", at - 59 * DAY),
        alarm,
        sudden,
        replacement,
        TruthEvent("churn", "bt-a1", "", "", at + 30 * DAY),
    ]
    assert without == [alarm, failure, replacement]


def test_an_account_under_contract_but_silent_is_a_subject_of_the_account_kinds() -> None:
    """Before a churn the machines often go silent for the whole period: the account must
    still be in the chance's population (for the hours its contract covers), else the
    account kinds' chance reads 0."""
    day = T0.date()
    spans = OperatingSpans(
        {"m1": ("a1", T0, T0 + 99 * HOUR)},
        {"a2": (day - dt.timedelta(days=30), day + dt.timedelta(days=2)), "a3": (day, day)},
    )
    accounts = spans.accounts()
    assert accounts["a1"] == (T0, T0 + 99 * HOUR)
    # a2's contract covers the fleet's whole span up to its last day (23:00 UTC)
    assert accounts["a2"] == (
        T0,
        dt.datetime.combine(day + dt.timedelta(days=2), dt.time(23), dt.UTC),
    )
    assert accounts["a3"] == (T0, dt.datetime.combine(day, dt.time(23), dt.UTC))
    churn = [TruthEvent("churn", "a2", "", "", T0 + 10 * HOUR)]
    decline = [_alert("usage_decline", T0, "")]
    start, end = T0, T0 + 100 * HOUR
    result = evaluate_kind(
        "usage_decline", decline, churn, {}, start, end, 100, 1, 1.0, spans=spans
    )
    assert result.chance_precision is not None
    assert result.chance_precision > 0
    without = OperatingSpans(spans.assets)
    assert (
        evaluate_kind(
            "usage_decline", decline, churn, {}, start, end, 100, 1, 1.0, spans=without
        ).chance_precision
        == 0.0
    )


def test_operating_spans_reads_the_contracts_in_force(db_url: str) -> None:
    start = dt.datetime(2031, 3, 1, 6, tzinfo=dt.UTC)
    end = dt.datetime(2031, 4, 1, tzinfo=dt.UTC)
    contracts = [  # (contract, start, end): in force in March 2031, or not
        ("c-span-1", dt.date(2030, 1, 1), None),
        ("c-span-2", dt.date(2031, 3, 31), dt.date(2031, 6, 30)),
        ("c-span-3", dt.date(2029, 1, 1), dt.date(2031, 2, 28)),  # ended before
        ("c-span-4", dt.date(2031, 4, 1), None),  # starts after
    ]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i, (contract, first, last) in enumerate(contracts, 1):
            conn.execute(
                "INSERT INTO accounts (account_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (f"span-acct-{i}", f"Span {i}"),
            )
            conn.execute(
                "INSERT INTO contracts (contract_id, account_id, product_line, kind, currency,"
                " start_date, end_date, billing_period, fee)"
                " VALUES (%s, %s, 'service', 'fixed', 'EUR', %s, %s, 'month', 100)",
                (contract, f"span-acct-{i}", first, last),
            )
        spans = operating_spans(conn, start, end)
    found = {a: v for a, v in spans.contracts.items() if a.startswith("span-acct-")}
    assert found == {
        "span-acct-1": (dt.date(2030, 1, 1), dt.date(2031, 3, 31)),
        "span-acct-2": (dt.date(2031, 3, 31), dt.date(2031, 6, 30)),
    }


# -- delivery load ----------------------------------------------------------------------------


def _raised(hours: float, kind: str, owner: str | None, value: int = 100) -> RaisedAlert:
    at = dt.datetime(2026, 3, 2, tzinfo=dt.UTC) + dt.timedelta(hours=hours)
    return RaisedAlert(at, "acct-1", kind, "m-1", 0.5, Decimal(value), 3, ("why",), owner)


def _kind(kind: str, alerts: int, true: int | None) -> KindResult:
    return KindResult(kind, alerts, true, None, None, None, 0.0, None, "")


def test_the_delivery_load_routes_the_replayed_alerts_through_the_gate_and_the_budget() -> None:
    """A kind measured at 75 % goes at once within the budget of 2 per CSM in 7 days (the
    higher expected value first within a pass), one at 20 % and an unmeasured one wait for
    the digest; the budget renews after 7 days."""
    alerts = [
        _raised(0, "renewal_risk", "csm-a", 50),
        _raised(0, "renewal_risk", "csm-a", 300),
        _raised(0, "renewal_risk", "csm-a", 200),  # third in a week: digest
        _raised(24, "service_due", "csm-a"),  # precision 20 %: digest
        _raised(24, "heat_recovery", "csm-b"),  # no truth, no precision: digest
        _raised(24, "renewal_risk", "csm-b"),
        _raised(8 * 24, "renewal_risk", "csm-a"),  # a new week
    ]
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    result = BacktestResult(
        start,
        start + dt.timedelta(weeks=2),
        dt.timedelta(days=1),
        14,
        0,
        alerts,
        [_kind("renewal_risk", 5, 3), _kind("service_due", 5, 1), _kind("heat_recovery", 1, None)],
        1000,
        2,
        {},
        0.0,
    )
    load = delivery_load_of(result, 0.5, 2)
    assert (load.immediate, load.digest, load.max_immediate_7_days) == (4, 3, 2)
    assert load.immediate_by_kind == {"renewal_risk": 4}
    assert load.immediate_per_csm_week == pytest.approx(4 / 2 / 2)
    assert load.precision_source == "this backtest (in-sample)"
    # a stored measurement instead of the backtest's own: service_due at 90 % passes too
    stored = delivery_load_of(result, 0.5, 5, {"renewal_risk": 0.6, "service_due": 0.9})
    assert stored.immediate_by_kind == {"renewal_risk": 5, "service_due": 1}
    assert stored.precision_source == "the stored measurements"
    # no budget left at all: nothing is immediate
    assert delivery_load_of(result, 0.5, 0).immediate == 0
    assert "0.75 immediate and 1.00 digest" in delivery_load_of(result, 0.5, 1).line()
    assert load.immediate_without_csm == 0
    assert "without a CSM" not in load.line()


def test_alerts_without_a_csm_are_not_counted_as_one_csms_load() -> None:
    """An account without a CSM has no budget (signals.routing, rule 4): its alerts pass the
    gate alone. Five of them in a day are not "5 immediate for one CSM in 7 days": the
    per-CSM maximum counts the CSMs' alerts, and those without a CSM are counted apart."""
    alerts = [_raised(h, "renewal_risk", None) for h in range(5)]
    alerts += [_raised(0, "renewal_risk", "csm-a"), _raised(1, "renewal_risk", "csm-a")]
    alerts.append(_raised(2, "renewal_risk", "csm-a"))  # over csm-a's budget: digest
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    result = BacktestResult(
        start,
        start + dt.timedelta(weeks=1),
        dt.timedelta(days=1),
        7,
        0,
        alerts,
        [_kind("renewal_risk", 8, 6)],
        1000,
        1,
        {},
        0.0,
    )
    load = delivery_load_of(result, 0.5, 2)
    assert (load.immediate, load.digest) == (7, 1)
    assert load.max_immediate_7_days == 2
    assert load.immediate_without_csm == 5
    assert load.as_dict()["immediate_without_csm"] == 5
    assert "(5 of them of accounts without a CSM" in load.line()


def test_failure_risk_at_a_24_hour_horizon_by_hand() -> None:
    """The published Azure figures predict a failure within 24 h: the same alerts scored at
    that horizon instead of their own (3 days). An alert 50 h before a failure is true at 3
    days, false at 24 h; one 10 h before is true at both. Chance at 24 h: a failure of m1 at
    hour 60 is in the 24 h windows starting at hours 36..60 of m1 - 25 of 200 asset-hours."""
    start, end = T0, T0 + 100 * HOUR
    alerts = [
        _alert("failure_risk", T0 + 10 * HOUR, "m1", horizon=3),  # failure 50 h later
        _alert("failure_risk", T0 + 70 * HOUR, "m2", horizon=3),  # failure 10 h later
    ]
    truth = [
        TruthEvent("failure", "a1", "m1", "oil", T0 + 60 * HOUR),
        TruthEvent("failure", "a1", "m2", "oil", T0 + 80 * HOUR),
    ]
    spans = _spans()
    own = evaluate_kind("failure_risk", alerts, truth, {}, start, end, 200, 1, 1.0, spans=spans)
    day = evaluate_kind(
        "failure_risk", alerts, truth, {}, start, end, 200, 1, 1.0, spans=spans, horizon=DAY
    )
    assert (own.true_alerts, own.caught, own.median_lead_hours) == (2, 2, 30.0)
    assert (day.true_alerts, day.caught, day.median_lead_hours) == (1, 1, 10.0)
    assert day.precision == pytest.approx(0.5)
    assert day.recall == pytest.approx(0.5)
    # per alert: m1's window at each hour of m1 and m2; m2's failure at hour 80: starts 56..80
    assert day.chance_precision == pytest.approx((25 + 25) / 200)
    assert own.chance_precision == pytest.approx((61 + 73) / 200)  # 72 h: starts 0..60, 8..80


def test_a_raised_alert_survives_its_json_form() -> None:
    alert = _alert("failure_risk", T0 + 10 * HOUR, "m1", horizon=3)
    assert RaisedAlert.from_dict(alert.as_dict()) == alert


# -- pending alerts: windows past the end of the data ----------------------------------------


def test_an_alert_whose_window_reaches_past_the_data_end_is_pending_not_false() -> None:
    """Data ends at hour 100; failure_risk alerts with a one-day window. Raised at hour 76 the
    window ends exactly at the data end: decided, false. At hour 77 it reaches 1 h past it:
    pending. At hour 40 it ended long before: false. At hour 90 its window reaches past the
    end but a failure at hour 95 confirms it: true, not pending."""
    data_end = T0 + 100 * HOUR
    start, end = T0, data_end
    exactly = _alert("failure_risk", T0 + 76 * HOUR, "m1", horizon=1)
    after = _alert("failure_risk", T0 + 77 * HOUR, "m1", horizon=1)
    before = _alert("failure_risk", T0 + 40 * HOUR, "m1", horizon=1)
    confirmed = _alert("failure_risk", T0 + 90 * HOUR, "m2", horizon=1)
    assert (is_pending(exactly, data_end), is_pending(after, data_end)) == (False, True)
    assert not is_pending(before, data_end)
    assert not is_pending(after, None)  # no data end known: nothing is pending
    truth = [
        TruthEvent("failure", "a1", "m2", "", T0 + 95 * HOUR),
        TruthEvent("failure", "a1", "m3", "", T0 + 30 * HOUR),  # not foreseen
    ]
    alerts = [exactly, after, before, confirmed]
    result = evaluate_kind(
        "failure_risk", alerts, truth, {}, start, end, 2000, 1, 1.0, data_end=data_end
    )
    assert (result.alerts, result.true_alerts, result.pending_alerts) == (4, 1, 1)
    assert (result.decided_alerts, result.false_alerts) == (3, 2)
    assert result.precision == pytest.approx(1 / 4)  # unchanged: true / all alerts
    assert result.precision_decided == pytest.approx(1 / 3)
    assert result.false_per_1000_hours == pytest.approx(3 * 1000 / 2000)  # unchanged meaning
    assert result.refuted_per_1000_hours == pytest.approx(2 * 1000 / 2000)
    assert (result.events, result.caught) == (2, 1)
    figures = result.as_dict()
    assert {k: figures[k] for k in ("pending_alerts", "false_alerts", "decided_alerts")} == {
        "pending_alerts": 1,
        "false_alerts": 2,
        "decided_alerts": 3,
    }
    assert figures["precision_decided"] == pytest.approx(0.3333)
    assert figures["refuted_per_1000_operating_hours"] == 1.0
    assert figures["precision"] == 0.25
    # scored at a given horizon, the window is that horizon's: at 24 h (the alerts' own here)
    # hour 77 is still pending, at 10 h it is decided
    at_day = evaluate_kind(
        "failure_risk", alerts, truth, {}, start, end, 2000, 1, 1.0, horizon=DAY, data_end=data_end
    )
    assert at_day.pending_alerts == 1
    at_ten = evaluate_kind(
        "failure_risk",
        alerts,
        truth,
        {},
        start,
        end,
        2000,
        1,
        1.0,
        horizon=10 * HOUR,
        data_end=data_end,
    )
    assert at_ten.pending_alerts == 0  # 77 + 10 h ends before hour 100
    assert at_ten.true_alerts == 1  # hour 90 + 10 h: the failure at 95 is inside


def test_every_alert_is_decided_without_a_data_end_and_for_detections() -> None:
    """Without a data end the new figures equal the old ones; third_party_parts looks back
    (its window ends at the alert), so it is never pending."""
    start, end = T0, T0 + 100 * HOUR
    alerts = [_alert("failure_risk", T0 + 99 * HOUR, "m1", horizon=3)]
    truth = [TruthEvent("failure", "a1", "m9", "", T0 + 50 * HOUR)]
    plain = evaluate_kind("failure_risk", alerts, truth, {}, start, end, 100, 1, 1.0)
    assert (plain.pending_alerts, plain.decided_alerts, plain.false_alerts) == (0, 1, 1)
    assert plain.precision_decided == plain.precision == 0.0
    assert plain.refuted_per_1000_hours == plain.false_per_1000_hours
    parts = [_alert("third_party_parts", T0 + 99 * HOUR, "m1")]
    swapped = [TruthEvent("third_party_replacement", "a1", "m1", "oil", T0 + 90 * HOUR)]
    detected = evaluate_kind(
        "third_party_parts", parts, swapped, {}, start, end, 100, 1, 1.0, data_end=end
    )
    assert (detected.true_alerts, detected.pending_alerts) == (1, 0)
    nothing = evaluate_kind("silent_assets", parts, [], {}, start, end, 100, 1, 1.0, data_end=end)
    assert (nothing.pending_alerts, nothing.decided_alerts, nothing.false_alerts) == (
        None,
        None,
        None,
    )
    assert nothing.precision_decided is None


def test_chance_level_counts_only_decided_windows() -> None:
    """One asset, hours 0..99, data ending at hour 100, a one-day window: the windows starting
    at hours 0..76 end by the data end; those at 77..99 are pending unless they hold the
    failure at hour 90 (windows 66..90 do). Decided: 0..90 = 91 hours, 25 of them hits."""
    data_end = T0 + 100 * HOUR
    spans = _spans(assets=("m1",))
    subjects = [(a, s, lo, hi) for s, (a, lo, hi) in spans.assets.items()]
    failure = TruthEvent("failure", "a1", "m1", "", T0 + 90 * HOUR)
    alert = _alert("failure_risk", T0 + 10 * HOUR, "m1", horizon=1)
    assert chance_level(alert, [failure], subjects) == (25, 100)
    assert chance_level(alert, [failure], subjects, data_end=data_end) == (25, 91)
    assert chance_level(alert, [], subjects, data_end=data_end) == (0, 77)
    result = evaluate_kind(
        "failure_risk",
        [alert],
        [failure],
        {},
        T0,
        data_end,
        100,
        1,
        1.0,
        spans=spans,
        data_end=data_end,
    )
    assert result.chance_precision == pytest.approx(25 / 100)
    assert result.chance_precision_decided == pytest.approx(25 / 91)


def test_the_table_shows_pending_and_decided_figures() -> None:
    data_end = T0 + 100 * HOUR
    kinds = [
        evaluate_kind(
            "failure_risk",
            [_alert("failure_risk", T0 + 90 * HOUR, "m1", horizon=1)],
            [TruthEvent("failure", "a1", "m2", "", T0 + 50 * HOUR)],
            {},
            T0,
            data_end,
            100,
            1,
            1.0,
            data_end=data_end,
        )
    ]
    result = BacktestResult(
        T0, data_end, HOUR, 100, 1, [], kinds, 100, 1, {"failure": 1}, 0.0, data_end
    )
    table = format_table(result)
    header, row = table.splitlines()[1:3]
    assert header.split()[:5] == ["kind", "alerts", "pending", "precision", "chance"]
    assert "decided" in header
    assert "refuted/1kh" in header
    assert row.split()[:4] == ["failure_risk", "1", "1", "0%"]
    assert PENDING_NOTE.format(data_end="2026-03-05 04:00 UTC") in table
    assert result.as_dict()["data_end"] == data_end.isoformat()
