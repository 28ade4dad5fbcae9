"""Account health: one churn-risk probability per account, explained by its top factors, and the
``renewal_risk`` signal (a detector module, see ``signals.model_store``: ``NAME``, ``train``,
``findings``).

Features of an account as of a moment t (only rollup buckets complete before t, events before
t and contracts as they stood at t; never raw telemetry):

=====================  ========================================================================
usage_change           usage of the last 28 days against the 84 days before (recent / baseline
                       - 1; 0 when either side has too few days). Usage = air delivered (the
                       flow integral, m³/day, as ``signals.rules``); for data without a flow
                       metric, running hours per day.
usage_volatility       coefficient of variation of weekly usage over the last 16 weeks
silent_share           share of the machines that reported in the last 365 days but not in the
                       last 48 hours (two complete days)
third_party_parts      replacements seen in the data (an indicator reset, as
                       ``signals.wear_findings``) with no service order within 3 days, over the
                       last 180 days
days_to_renewal        days to the next renewal or end of an active contract (capped at 365)
manual_renewal,        the renewal terms of that contract (auto renewal is the reference)
no_renewal
notice_days            its notice period
tenure_years           years since the account's first contract started
contracts_ended        contracts that ended in the last 180 days while the account stayed
=====================  ========================================================================

usage_change, silent_share and third_party_parts are the figures behind the rule signals
``usage_decline``, ``silent_assets`` and ``third_party_parts`` (the rule signals as features).

Contracts as they stood at t: a contract counts from its start date. Its next renewal as known
on t's day (UTC) is ``core.contracts.next_renewal``'s: the end of service (``end_date`` + 1 day)
when that end is known (no renewal, or within the notice period of the end), else the next
anniversary of its start (every ``term_months``, 12 by default). The contract, its terms and its
fee per month are core's (``core.contracts``); this module keeps none of its own.

Label: an account churns on day E when a contract's service ends on E (``end_date`` + 1 day) and
no contract of the account is active on E (started on or before E and not ended before E): its
MRR goes to zero, the ``churn`` movement of the NRR definitions. A snapshot (account, t) of an
account with an active contract at t is labelled churned within H days when a churn day E falls
in (t, t + H]. Training snapshots are taken on the first of each month, from 112 days after the
first rollup day (a full baseline) up to ``until`` - H, so every label window is observed before
``until`` (no leakage); two horizons are fitted, 90 and 180 days; the 90-day probability is the
account's health (``account_health.probability``), the 180-day one is kept beside it.

Model: per horizon, standardized features into a logistic regression (L2, C = 1), its
probabilities calibrated by ``CalibratedClassifierCV`` (sigmoid, 3 stratified folds, fixed
``random_state``). A score is explained by the contributions coefficient × standardized value of
a logistic regression fitted on all snapshots (the log-odds each factor adds against an average
account), the largest positive ones phrased with their raw figures.

Fallback: with fewer than ``MIN_CHURN_EXAMPLES`` (8) snapshots followed by a churn within 90
days, or fewer than ``MIN_SNAPSHOTS`` (40) labelled snapshots, ``train`` returns ``None`` and
``findings`` uses a weighted score of the same factors, each scaled to [0, 1]:

=================  ======  ================================================================
factor             weight  scaled value
=================  ======  ================================================================
usage decline      0.35    -usage_change / 0.5, clipped to [0, 1] (a 50 % drop scores 1)
silent machines    0.25    silent_share
third-party parts  0.15    third_party_parts / 2, at most 1
contracts ended    0.10    1 when a contract ended in the last 180 days
renewal proximity  0.10    1 - days_to_renewal / 180, clipped to [0, 1]
volatility         0.05    usage_volatility / 0.5, at most 1
=================  ======  ================================================================

and says so in the reasons. The weighted score is not a calibrated probability.

``renewal_risk``: an account whose next renewal or end falls within the renewal window
(``PriceBook.renewal_window_days``, from ``BASEWATCH_RENEWAL_WINDOW_DAYS``, default 90) with
risk present: a churn probability of at least ``RISK_PROBABILITY`` (0.3), or usage down by 25 %
or more, or a silent machine, or a third-party replacement. Score = the churn probability;
value = the MRR at stake (active contracts: fixed fees normalised to a month, metered contracts
at the larger of their monthly minimum and the last 28 days' usage × unit price, converted with
the latest ``fx_rates`` row of the currency up to the month; a contract in a currency without a
rate is left out of the figure and named in the reason, never counted at 1 - the reporting
currency alone converts at 1 without a row; the price book's maintenance fee per machine when
that comes to zero); horizon = days to the renewal.

Scoring time of an on-demand refresh (:func:`refresh_time`, ``basewatch signals health
--refresh``): now, unless the fleet is silent as a whole - no machine has a reading in the last
``SILENT_DAYS`` (48 h) - in which case the accounts are scored as of the end of the data (the
end of the last hourly rollup bucket) and the caller says so. Scored as of now, a fleet whose
data ended days ago (a demo, a restored backup, an ingest outage) would have every machine
silent and every account at risk, which says nothing about the accounts.

The hourly scoring job (``signals.scoring.score_now``) records each account's health of its
pass in ``account_health`` (:func:`record_latest`, one ``executemany``), keeping the last pass
of each UTC day; ``findings`` itself writes nothing, so a backtest leaves the table alone.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from core.contracts import Contract, in_force, monthly_fee, next_renewal, service_end
from core.months import add_months
from signals.catalogue import INDICATORS, PriceBook
from signals.components import RESET_SHARE
from signals.findings import Finding
from signals.kinds import SignalKind

NAME = "account_health"
HORIZONS = (90, 180)
PRIMARY_HORIZON = 90
RECENT_DAYS = 28
BASELINE_DAYS = 84
HISTORY_DAYS = RECENT_DAYS + BASELINE_DAYS
SILENT_DAYS = 2  # complete days without a reading
SILENT_LOOKBACK_DAYS = 365  # a machine counts as the account's if it reported within this
THIRD_PARTY_DAYS = 180
SERVICE_MATCH = dt.timedelta(days=3)
ENDED_DAYS = 180
RENEWAL_CAP_DAYS = 365
MIN_CHURN_EXAMPLES = 8
MIN_SNAPSHOTS = 40
RISK_PROBABILITY = 0.3
DECLINE_SHARE = 0.25
RANDOM_STATE = 0
TOP_FACTORS = 3
MIN_LOG_ODDS = 0.1  # a model factor adds at least this much log-odds to be named
MIN_WEIGHTED = 0.01  # a weighted factor adds at least this much to the score to be named

FEATURES = (
    "usage_change",
    "usage_volatility",
    "silent_share",
    "third_party_parts",
    "days_to_renewal",
    "manual_renewal",
    "no_renewal",
    "notice_days",
    "tenure_years",
    "contracts_ended",
)
WEIGHTS = {
    "usage_decline": 0.35,
    "silent_machines": 0.25,
    "third_party_parts": 0.15,
    "contracts_ended": 0.10,
    "renewal_proximity": 0.10,
    "volatility": 0.05,
}

Array = npt.NDArray[np.float64]
_last_pass: dict[dt.datetime, list[Health]] = {}  # the last findings() pass: as_of → healths


# -- data -------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """An account's features as of ``as_of`` and the raw figures behind them."""

    account_id: str
    as_of: dt.datetime
    values: dict[str, float]
    facts: dict[str, Any] = field(default_factory=dict)

    def vector(self) -> list[float]:
        return [self.values[f] for f in FEATURES]


@dataclass(frozen=True)
class Reset:
    """A replacement seen in the data, and the service orders recorded near it."""

    day: dt.datetime
    asset_id: str
    component: str
    services: tuple[dt.datetime, ...]


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


# The rollup figures are taken out of the stats JSON into narrow rows first (MATERIALIZED) so
# the window sorts carry a few numbers instead of the whole JSON document (the sort spilled
# ~700 MB to disk per 2,000 assets); partitions compare asset ids bytewise (COLLATE "C": the
# same groups as any deterministic collation, cheaper comparisons).
_USAGE = """
WITH metrics AS MATERIALIZED (
    SELECT asset_id, bucket,
           (stats -> 'flow_m3_min' ->> 0)::double precision * 1440 AS m3,
           (stats -> 'running_hours' ->> 3)::double precision AS counter
    FROM rollup_daily
    WHERE bucket >= %(first)s - make_interval(days => %(days)s + 1)
      AND bucket <= %(last)s - INTERVAL '1 day'
),
daily AS (
    SELECT asset_id, bucket, m3,
           least(24, greatest(0, counter
               - lag(counter) OVER (PARTITION BY asset_id COLLATE "C" ORDER BY bucket))) AS hours
    FROM metrics
)
SELECT s.t, a.account_id,
       floor((extract(epoch FROM s.t - d.bucket) / 86400 - 1) / 7)::integer AS week,
       sum(d.m3) AS m3, count(DISTINCT d.bucket) FILTER (WHERE d.m3 IS NOT NULL) AS m3_days,
       sum(d.hours) AS hours,
       count(DISTINCT d.bucket) FILTER (WHERE d.hours IS NOT NULL) AS hours_days
FROM unnest(%(times)s::timestamptz[]) AS s(t)
JOIN daily d ON d.bucket >= s.t - make_interval(days => %(days)s)
            AND d.bucket <= s.t - INTERVAL '1 day'
JOIN assets a USING (asset_id)
GROUP BY 1, 2, 3
"""

_SILENCE = """
SELECT s.t, a.account_id, count(*) AS machines,
       coalesce(array_agg(a.asset_id ORDER BY a.asset_id)
           FILTER (WHERE l.last_day <= s.t - make_interval(days => %(silent)s + 1)), '{}')
           AS silent
FROM unnest(%(times)s::timestamptz[]) AS s(t) CROSS JOIN assets a
JOIN LATERAL (
    SELECT r.bucket AS last_day FROM rollup_daily r
    WHERE r.asset_id = a.asset_id AND r.bucket <= s.t - INTERVAL '1 day'
    ORDER BY r.bucket DESC LIMIT 1
) l ON l.last_day >= s.t - make_interval(days => %(days)s)
GROUP BY 1, 2
"""

_RESETS = """
WITH indicator(component, metric, threshold) AS (SELECT * FROM unnest(
        %(components)s::text[], %(metrics)s::text[], %(thresholds)s::double precision[])),
readings AS MATERIALIZED (
    SELECT r.asset_id, i.component, i.threshold, r.bucket,
           (r.stats -> i.metric ->> 0)::double precision AS v
    FROM rollup_daily r JOIN indicator i ON r.stats ? i.metric
    WHERE r.bucket >= %(first)s - make_interval(days => %(days)s + 1)
      AND r.bucket <= %(last)s - INTERVAL '1 day'
),
daily AS (
    SELECT asset_id, component, threshold, bucket, v,
           lag(v) OVER (PARTITION BY asset_id COLLATE "C", component COLLATE "C"
                        ORDER BY bucket) AS previous
    FROM readings
)
SELECT a.account_id, d.asset_id, d.component, d.bucket
FROM daily d JOIN assets a USING (asset_id)
WHERE d.previous - d.v > d.threshold
"""


def _contracts(conn: psycopg.Connection[TupleRow], until: dt.datetime) -> dict[str, list[Contract]]:
    """Every account's contracts that started by ``until``'s day (UTC)."""
    found: dict[str, list[Contract]] = defaultdict(list)
    for row in conn.execute(
        "SELECT contract_id, account_id, product_line, kind, currency, start_date, end_date,"
        " billing_period, fee, unit_price, unit, monthly_minimum, renewal,"
        " coalesce(notice_days, 0), term_months FROM contracts WHERE start_date <= %s"
        " ORDER BY account_id, start_date, contract_id",
        (until.astimezone(dt.UTC).date(),),
    ):
        found[row[1]].append(Contract(*row))
    return found


def churn_days(contracts: Sequence[Contract], until: dt.datetime) -> list[dt.date]:
    """Days on which the account churned (see the module docstring), before ``until``."""
    days = set()
    for contract in contracts:
        end = service_end(contract)
        if end is None or _midnight(end) > until:
            continue
        if not any(in_force(c, end) for c in contracts):
            days.add(end)
    return sorted(days)


def _snapshot_times(conn: psycopg.Connection[TupleRow], until: dt.datetime) -> list[dt.datetime]:
    """Month starts from a full baseline after the first rollup day up to ``until``."""
    row = conn.execute(
        "SELECT min(bucket) FROM rollup_daily WHERE bucket < %s", (until,)
    ).fetchone()
    if row is None or row[0] is None:
        return []
    first = row[0] + dt.timedelta(days=HISTORY_DAYS)
    t = _midnight(dt.date(first.year, first.month, 1))
    if t < first:
        t = _midnight(add_months(t.date(), 1))
    times = []
    while t <= until:
        times.append(t)
        t = _midnight(add_months(t.date(), 1))
    return times


def _fx(conn: psycopg.Connection[TupleRow], as_of: dt.datetime) -> dict[str, Decimal]:
    return {
        str(code): Decimal(rate)
        for code, rate in conn.execute(
            "SELECT DISTINCT ON (currency) currency, rate FROM fx_rates WHERE month <= %s"
            " ORDER BY currency, month DESC",
            (as_of.astimezone(dt.UTC).date(),),
        )
    }


def _services(
    conn: psycopg.Connection[TupleRow], first: dt.datetime, last: dt.datetime
) -> dict[tuple[str, str], list[dt.datetime]]:
    found: dict[tuple[str, str], list[dt.datetime]] = defaultdict(list)
    for asset_id, component, time in conn.execute(
        "SELECT asset_id, component, time FROM asset_events"
        " WHERE kind IN ('component_replaced', 'service') AND time < %s"
        " AND time >= %s - make_interval(days => %s)",
        (last, first, THIRD_PARTY_DAYS + 5),
    ):
        found[(asset_id, component)].append(time)
    return found


def snapshots(
    conn: psycopg.Connection[TupleRow],
    times: Sequence[dt.datetime],
    contracts: dict[str, list[Contract]] | None = None,
) -> list[Snapshot]:
    """The features of every account with an active contract at each of ``times``."""
    if not times:
        return []
    first, last = min(times), max(times)
    if contracts is None:
        contracts = _contracts(conn, last)
    params: dict[str, Any] = {"times": list(times), "first": first, "last": last}
    usage: dict[tuple[dt.datetime, str], dict[int, tuple[float, int, float, int]]] = defaultdict(
        dict
    )
    for t, account_id, week, m3, m3_days, hours, hours_days in conn.execute(
        _USAGE, {**params, "days": HISTORY_DAYS}
    ):
        usage[(t, account_id)][week] = (m3 or 0.0, m3_days, hours or 0.0, hours_days)
    silence: dict[tuple[dt.datetime, str], tuple[int, list[str]]] = {}
    for t, account_id, machines, silent in conn.execute(
        _SILENCE, {**params, "days": SILENT_LOOKBACK_DAYS, "silent": SILENT_DAYS}
    ):
        silence[(t, account_id)] = (machines, list(silent))
    resets = _third_party(conn, first, last)
    result = []
    for t in sorted(times):
        for account_id, owned in sorted(contracts.items()):
            snap = _snapshot(
                account_id,
                t,
                [c for c in owned if _midnight(c.start_date) <= t],
                usage.get((t, account_id), {}),
                silence.get((t, account_id)),
                resets.get(account_id, []),
            )
            if snap is not None:
                result.append(snap)
    return result


def _third_party(
    conn: psycopg.Connection[TupleRow], first: dt.datetime, last: dt.datetime
) -> dict[str, list[Reset]]:
    """Indicator resets per account with the service orders near them (any time before
    ``last``); whether one had been recorded by a given t is decided in ``_snapshot``."""
    components = sorted(INDICATORS)
    thresholds = [RESET_SHARE * (INDICATORS[c].limit - INDICATORS[c].new) for c in components]
    rows = conn.execute(
        _RESETS,
        {
            "components": components,
            "metrics": [INDICATORS[c].metric for c in components],
            "thresholds": thresholds,
            "first": first,
            "last": last,
            "days": THIRD_PARTY_DAYS,
        },
    ).fetchall()
    found: dict[str, list[Reset]] = defaultdict(list)
    if not rows:
        return found
    services = _services(conn, first, last)
    for account_id, asset_id, component, day in rows:
        near = sorted(
            t for t in services.get((asset_id, component), []) if abs(t - day) <= SERVICE_MATCH
        )
        found[account_id].append(Reset(day, asset_id, component, tuple(near)))
    return found


def _usage(weeks: dict[int, tuple[float, int, float, int]]) -> dict[str, Any]:
    """Recent and baseline usage per day and the weekly coefficient of variation."""
    flow = sum(w[1] for w in weeks.values()) > 0
    per_week = {i: (w[0], w[1]) if flow else (w[2], w[3]) for i, w in weeks.items()}
    recent_weeks = RECENT_DAYS // 7

    def average(selected: Iterable[int], minimum_days: int) -> float | None:
        total = sum(per_week[i][0] for i in selected if i in per_week)
        days = sum(per_week[i][1] for i in selected if i in per_week)
        return total / days if days >= minimum_days else None

    recent = average(range(recent_weeks), RECENT_DAYS // 2)
    baseline = average(range(recent_weeks, HISTORY_DAYS // 7), BASELINE_DAYS // 3)
    change = recent / baseline - 1.0 if recent is not None and baseline else 0.0
    weekly = [total / days for total, days in per_week.values() if days >= 4]
    mean = float(np.mean(weekly)) if len(weekly) >= 4 else 0.0
    volatility = float(np.std(weekly)) / mean if mean > 0 else 0.0
    return {
        "unit": "m³" if flow else "running hours",
        "recent": recent,
        "baseline": baseline,
        "change": change if baseline and baseline > 0 else 0.0,
        "volatility": volatility,
    }


def _snapshot(
    account_id: str,
    t: dt.datetime,
    contracts: list[Contract],
    weeks: dict[int, tuple[float, int, float, int]],
    silence: tuple[int, list[str]] | None,
    resets: list[Reset],
) -> Snapshot | None:
    day = t.astimezone(dt.UTC).date()
    active = [c for c in contracts if in_force(c, day)]
    if not active:
        return None  # not a customer at t: nothing to churn
    usage = _usage(weeks)
    machines, silent = silence if silence is not None else (0, [])
    third_party = [
        r
        for r in resets
        if t - dt.timedelta(days=THIRD_PARTY_DAYS) <= r.day <= t - dt.timedelta(days=1)
        and not any(s < t for s in r.services)
    ]
    upcoming = []
    for contract in active:
        next_one = next_renewal(contract, day)
        if next_one is not None:
            upcoming.append((next_one[0], next_one[1], contract))
    upcoming.sort(key=lambda u: (u[0], u[2].contract_id))
    renewal = upcoming[0] if upcoming else None
    terms = renewal[2] if renewal is not None else None
    ended = [
        c
        for c in contracts
        if (end := service_end(c)) is not None
        and t - dt.timedelta(days=ENDED_DAYS) < _midnight(end) <= t
    ]
    tenure = (day - min(c.start_date for c in contracts)).days / 365.25
    values = {
        "usage_change": usage["change"],
        "usage_volatility": usage["volatility"],
        "silent_share": len(silent) / machines if machines else 0.0,
        "third_party_parts": float(len(third_party)),
        "days_to_renewal": float(
            min((renewal[0] - day).days, RENEWAL_CAP_DAYS) if renewal else RENEWAL_CAP_DAYS
        ),
        "manual_renewal": 1.0 if terms is not None and terms.renewal == "manual" else 0.0,
        "no_renewal": 1.0 if terms is not None and terms.renewal == "none" else 0.0,
        "notice_days": float(terms.notice_days or 0) if terms is not None else 0.0,
        "tenure_years": tenure,
        "contracts_ended": float(len(ended)),
    }
    facts = {
        "usage": usage,
        "machines": machines,
        "silent": silent,
        "third_party": third_party,
        "renewal": renewal,
        "ended": ended,
        "active": active,
    }
    return Snapshot(account_id, t, values, facts)


# -- labels and the model -----------------------------------------------------------------------


def _churned(days: Sequence[dt.date], t: dt.datetime, horizon: int) -> bool:
    return any(t < _midnight(d) <= t + dt.timedelta(days=horizon) for d in days)


@dataclass(frozen=True)
class History:
    """What labelled history exists before a cut-off (primary horizon)."""

    churns: int  # churn days of all accounts before the cut-off
    snapshots: int  # labelled snapshots (account active, label window observed)
    churn_examples: int  # of which followed by a churn within the primary horizon

    @property
    def enough(self) -> bool:
        return self.churn_examples >= MIN_CHURN_EXAMPLES and self.snapshots >= MIN_SNAPSHOTS

    def why(self) -> str:
        return (
            f"{self.churns} churns, {self.churn_examples} churn examples in {self.snapshots} "
            f"snapshots; a model needs {MIN_CHURN_EXAMPLES} and {MIN_SNAPSHOTS}"
        )


def labelled_history(
    conn: psycopg.Connection[TupleRow],
    until: dt.datetime,
    contracts: dict[str, list[Contract]] | None = None,
) -> tuple[History, list[dt.datetime], dict[str, list[dt.date]]]:
    """The labelled history before ``until`` (from contracts and the rollups' first day only),
    the training snapshot times and each account's churn days."""
    if contracts is None:
        contracts = _contracts(conn, until)
    churns = {a: churn_days(cs, until) for a, cs in contracts.items()}
    horizon = dt.timedelta(days=PRIMARY_HORIZON)
    times = [t for t in _snapshot_times(conn, until) if t + horizon <= until]
    snapshots = examples = 0
    for t in times:
        for account_id, owned in contracts.items():
            if any(_midnight(c.start_date) <= t and in_force(c, t.date()) for c in owned):
                snapshots += 1
                examples += _churned(churns[account_id], t, PRIMARY_HORIZON)
    history = History(sum(len(d) for d in churns.values()), snapshots, examples)
    return history, times, churns


@dataclass
class Fitted:
    """One horizon's calibrated classifier and the linear model that explains its scores."""

    horizon: int
    calibrated: Any  # CalibratedClassifierCV over StandardScaler + LogisticRegression
    mean: Array
    scale: Array
    coef: Array
    snapshots: int
    churn_examples: int

    def probability(self, x: Array) -> Array:
        return np.asarray(self.calibrated.predict_proba(x)[:, 1], dtype=np.float64)

    def contributions(self, x: Array) -> Array:
        """coefficient × standardized value, per snapshot and feature (log-odds)."""
        return np.asarray((x - self.mean) / self.scale * self.coef, dtype=np.float64)


@dataclass
class HealthModel:
    trained_until: dt.datetime
    fitted: dict[int, Fitted]
    summary: dict[str, Any]


def _fit(x: Array, y: npt.NDArray[np.int64], horizon: int) -> Fitted:
    from sklearn.base import clone
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(C=1.0, max_iter=2000, random_state=RANDOM_STATE)),
        ]
    )
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=RANDOM_STATE)
    calibrated = CalibratedClassifierCV(pipeline, method="sigmoid", cv=folds).fit(x, y)
    explainer = clone(pipeline).fit(x, y)
    scaler, classifier = explainer.named_steps["scale"], explainer.named_steps["classify"]
    return Fitted(
        horizon,
        calibrated,
        np.asarray(scaler.mean_, dtype=np.float64),
        np.asarray(scaler.scale_, dtype=np.float64),
        np.asarray(classifier.coef_[0], dtype=np.float64),
        len(y),
        int(y.sum()),
    )


def train(conn: psycopg.Connection[TupleRow], until: dt.datetime) -> HealthModel | None:
    """Fit the 90- and 180-day churn classifiers on monthly snapshots whose label window ended
    before ``until``; ``None`` when there is too little churn history (see the docstring)."""
    contracts = _contracts(conn, until)
    history, times, churns = labelled_history(conn, until, contracts)
    if not history.enough:
        return None
    snaps = snapshots(conn, times, contracts)
    fitted: dict[int, Fitted] = {}
    for horizon in HORIZONS:
        rows = [s for s in snaps if s.as_of + dt.timedelta(days=horizon) <= until]
        y = np.array([_churned(churns[s.account_id], s.as_of, horizon) for s in rows], dtype=int)
        if len(rows) < MIN_SNAPSHOTS or y.sum() < MIN_CHURN_EXAMPLES or y.sum() == len(y):
            continue
        x = np.array([s.vector() for s in rows], dtype=np.float64)
        fitted[horizon] = _fit(x, y, horizon)
    if PRIMARY_HORIZON not in fitted:
        return None
    summary = {
        "features": list(FEATURES),
        "churns": history.churns,
        "horizons": {
            str(h): {
                "snapshots": f.snapshots,
                "churn_examples": f.churn_examples,
                "coefficients": {
                    n: round(float(c), 4) for n, c in zip(FEATURES, f.coef, strict=True)
                },
            }
            for h, f in fitted.items()
        },
    }
    return HealthModel(until, fitted, summary)


# -- scoring ------------------------------------------------------------------------------------


@dataclass
class Health:
    """An account's churn risk as of a moment, and the factors behind it."""

    snapshot: Snapshot
    probability: float
    probability_180d: float | None
    method: str  # 'model' | 'weighted'
    top: list[dict[str, Any]]

    @property
    def account_id(self) -> str:
        return self.snapshot.account_id


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def weighted_factors(values: dict[str, float]) -> dict[str, tuple[str, float]]:
    """The fallback's factors: name → (feature it reads, weight × scaled value)."""
    scaled = {
        "usage_decline": ("usage_change", _clip(-values["usage_change"] / 0.5)),
        "silent_machines": ("silent_share", _clip(values["silent_share"])),
        "third_party_parts": ("third_party_parts", _clip(values["third_party_parts"] / 2)),
        "contracts_ended": ("contracts_ended", _clip(values["contracts_ended"])),
        "renewal_proximity": ("days_to_renewal", _clip(1 - values["days_to_renewal"] / 180)),
        "volatility": ("usage_volatility", _clip(values["usage_volatility"] / 0.5)),
    }
    return {name: (feature, WEIGHTS[name] * v) for name, (feature, v) in scaled.items()}


def factor_text(feature: str, snap: Snapshot) -> str:
    """A factor as a sentence with the raw figures."""
    v, f = snap.values, snap.facts
    usage = f["usage"]
    if feature == "usage_change":
        if usage["recent"] is None or not usage["baseline"]:
            return "no usage figures for the last 16 weeks"
        direction = "down" if v["usage_change"] < 0 else "up"
        return (
            f"usage {direction} {abs(v['usage_change']) * 100:.0f} % vs its 12-week baseline "
            f"({usage['recent']:,.0f} vs {usage['baseline']:,.0f} {usage['unit']}/day)"
        )
    if feature == "usage_volatility":
        return f"weekly usage varies by {v['usage_volatility'] * 100:.0f} % over 16 weeks"
    if feature == "silent_share":
        silent = f["silent"]
        names = f": {', '.join(silent[:5])}" if silent else ""
        return (
            f"{len(silent)} of {f['machines']} machines silent for more than "
            f"{SILENT_DAYS * 24} h{names}"
        )
    if feature == "third_party_parts":
        parts = ", ".join(f"{r.asset_id}/{r.component} {r.day:%Y-%m-%d}" for r in f["third_party"])
        return (
            f"{len(f['third_party'])} components replaced without a service order in "
            f"{THIRD_PARTY_DAYS} days" + (f" ({parts})" if parts else "")
        )
    if feature in ("days_to_renewal", "manual_renewal", "no_renewal", "notice_days"):
        renewal = f["renewal"]
        if renewal is None:
            return "no renewal date on record"
        day, kind, contract = renewal
        if kind == "end":
            return (
                f"contract {contract.contract_id} ends in {int(v['days_to_renewal'])} days "
                f"(last day of service {contract.end_date:%Y-%m-%d})"
            )
        return (
            f"{contract.renewal} renewal in {int(v['days_to_renewal'])} days "
            f"({contract.contract_id}, {day:%Y-%m-%d}, {contract.notice_days} days' notice)"
        )
    if feature == "tenure_years":
        return f"customer for {v['tenure_years']:.1f} years"
    if feature == "contracts_ended":
        lines = ", ".join(sorted({c.product_line for c in f["ended"]}))
        return f"{len(f['ended'])} contracts ended in the last {ENDED_DAYS} days" + (
            f" ({lines})" if lines else ""
        )
    raise ValueError(f"unknown feature {feature!r}")


def _top(
    snap: Snapshot, contributions: Iterable[tuple[str, float]], minimum: float
) -> list[dict[str, Any]]:
    """The largest contributions above ``minimum``, one per feature, as factors."""
    ranked = sorted(
        ((feature, c) for feature, c in contributions if c >= minimum), key=lambda fc: -fc[1]
    )
    top: list[dict[str, Any]] = []
    for feature, contribution in ranked:
        if any(t["feature"] == feature for t in top):
            continue
        top.append(
            {
                "feature": feature,
                "contribution": round(float(contribution), 4),
                "value": round(snap.values[feature], 4),
                "text": factor_text(feature, snap),
            }
        )
        if len(top) == TOP_FACTORS:
            break
    return top


def assess(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime, model: object | None
) -> list[Health]:
    """Every active account's churn risk as of ``as_of``, by ``model`` or the weighted score."""
    snaps = snapshots(conn, [as_of])
    if not snaps:
        return []
    if isinstance(model, HealthModel):
        x = np.array([s.vector() for s in snaps], dtype=np.float64)
        primary = model.fitted[PRIMARY_HORIZON]
        p = primary.probability(x)
        longer = model.fitted.get(180)
        p180 = longer.probability(x) if longer is not None else None
        contributions = primary.contributions(x)
        return [
            Health(
                s,
                float(p[i]),
                float(p180[i]) if p180 is not None else None,
                "model",
                _top(s, zip(FEATURES, contributions[i], strict=True), MIN_LOG_ODDS),
            )
            for i, s in enumerate(snaps)
        ]
    healths = []
    for s in snaps:
        factors = weighted_factors(s.values)
        score = _clip(sum(c for _, c in factors.values()))
        top = _top(s, factors.values(), MIN_WEIGHTED)
        healths.append(Health(s, score, None, "weighted", top))
    return healths


def method_note(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime, model: object | None
) -> str:
    """How the scores were computed, for the reasons."""
    if isinstance(model, HealthModel):
        fitted = model.fitted[PRIMARY_HORIZON]
        return (
            f"calibrated logistic regression trained until {model.trained_until:%Y-%m-%d} on "
            f"{fitted.snapshots} monthly snapshots, {fitted.churn_examples} followed by churn "
            f"within {PRIMARY_HORIZON} days"
        )
    history, _, _ = labelled_history(conn, as_of)
    if not history.enough:
        return f"weighted score: too little churn history to train ({history.why()})"
    return "weighted score: no trained model yet (the nightly retrain stores one)"


def record_health(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime, healths: Sequence[Health]
) -> None:
    """Write ``as_of``'s health of every account (replacing earlier passes of the same UTC
    day, so the history keeps one row per account and day)."""
    day = _midnight(as_of.astimezone(dt.UTC).date())
    rows = [
        (
            h.account_id,
            as_of,
            h.probability,
            PRIMARY_HORIZON,
            h.method,
            Jsonb(
                {
                    "top": h.top,
                    "features": {k: round(v, 4) for k, v in h.snapshot.values.items()},
                    "probability_180d": h.probability_180d,
                }
            ),
        )
        for h in healths
    ]
    with conn.transaction():
        conn.execute("DELETE FROM account_health WHERE as_of >= %s AND as_of < %s", (day, as_of))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO account_health (account_id, as_of, probability, horizon_days,"
                " method, factors) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (account_id, as_of) DO UPDATE SET probability ="
                " EXCLUDED.probability, horizon_days = EXCLUDED.horizon_days,"
                " method = EXCLUDED.method, factors = EXCLUDED.factors",
                rows,
            )


def record_latest(conn: psycopg.Connection[TupleRow], as_of: dt.datetime) -> int:
    """Record the health of the last :func:`findings` pass if it was as of ``as_of`` (the
    hourly scoring job calls this after scoring); returns the rows written."""
    healths = _last_pass.get(as_of)
    if not healths:
        return 0
    record_health(conn, as_of, healths)
    return len(healths)


def data_end(conn: psycopg.Connection[TupleRow]) -> dt.datetime | None:
    """The end of the fleet's data: the end of the latest hourly rollup bucket (None: no
    data)."""
    row = conn.execute("SELECT max(bucket) FROM rollup_hourly").fetchone()
    if row is None or row[0] is None:
        return None
    end: dt.datetime = row[0] + dt.timedelta(hours=1)
    return end


def refresh_time(
    conn: psycopg.Connection[TupleRow], now: dt.datetime
) -> tuple[dt.datetime, str | None]:
    """When to score an on-demand refresh: ``now``, or the end of the data when no machine
    has reported for ``SILENT_DAYS`` (see the module docstring), with the sentence saying so."""
    end = data_end(conn)
    if end is None or end > now - dt.timedelta(days=SILENT_DAYS):
        return now, None
    days = (now - end) / dt.timedelta(days=1)
    return end, (
        f"no machine has reported since {end:%Y-%m-%d %H:%M} UTC ({days:,.0f} days ago): "
        "scored as of the end of the data, not now (as of now every machine would count as "
        "silent)"
    )


def measure(method: str) -> str:
    """What the recorded number of ``method`` is, in words."""
    if method == "model":
        return f"churn probability within {PRIMARY_HORIZON} days"
    return "weighted risk score in [0, 1] (not a probability)"


def latest_health(
    conn: psycopg.Connection[TupleRow],
    account_id: str | None = None,
    *,
    accounts: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Each account's latest recorded health, riskiest first: of ``account_id`` alone, of
    ``accounts`` (a CSM's list: one index probe per account, however long the history of
    the others), or of every account."""
    if accounts is not None:
        rows = conn.execute(
            "SELECT h.account_id, h.as_of, h.probability, h.horizon_days, h.method, h.factors"
            " FROM unnest(%s::text[]) AS ids(id) CROSS JOIN LATERAL (SELECT * FROM"
            " account_health WHERE account_id = ids.id ORDER BY as_of DESC LIMIT 1) AS h",
            (list(accounts),),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT DISTINCT ON (account_id) account_id, as_of, probability, horizon_days,"
            " method, factors FROM account_health"
            " WHERE %(account)s::text IS NULL OR account_id = %(account)s"
            " ORDER BY account_id, as_of DESC",
            {"account": account_id},
        ).fetchall()
    result = [
        {
            "account_id": r[0],
            "as_of": r[1].isoformat(),
            "probability": round(float(r[2]), 4),
            "horizon_days": r[3],
            "method": r[4],
            "measure": measure(r[4]),
            "probability_180d": r[5].get("probability_180d"),
            "top_factors": [t["text"] for t in r[5].get("top", [])],
        }
        for r in rows
    ]
    return sorted(result, key=lambda h: (-h["probability"], h["account_id"]))


def latest_factors(conn: psycopg.Connection[TupleRow], account_id: str) -> dict[str, Any] | None:
    """The account's latest health with everything behind it: ``top`` (the factors: feature,
    contribution, value, text) and ``features`` (every feature's value), beside the fields of
    :func:`latest_health`; None when none is recorded."""
    rows = latest_health(conn, account_id)
    if not rows:
        return None
    row = conn.execute(
        "SELECT factors FROM account_health WHERE account_id = %s ORDER BY as_of DESC LIMIT 1",
        (account_id,),
    ).fetchone()
    factors = row[0] if row else {}
    return {**rows[0], "top": factors.get("top", []), "features": factors.get("features", {})}


def _mrr(
    snap: Snapshot, fx: dict[str, Decimal], prices: PriceBook
) -> tuple[Decimal, Decimal, list[Contract]]:
    """(fixed, metered) MRR of the active contracts in the reporting currency, and the active
    contracts left out of it: those in a currency without an exchange rate (the reporting
    currency converts at 1 without one)."""
    usage = snap.facts["usage"]
    m3_per_day = usage["recent"] if usage["unit"] == "m³" and usage["recent"] else 0.0
    fixed = metered = Decimal(0)
    usage_billed = False
    unpriced: list[Contract] = []
    for contract in snap.facts["active"]:
        rate = Decimal(1) if contract.currency == prices.currency else fx.get(contract.currency)
        if rate is None:
            unpriced.append(contract)
            continue
        if contract.kind == "metered":
            minimum = contract.monthly_minimum or Decimal(0)
            used = Decimal(0)
            if not usage_billed and contract.unit_price is not None:
                used = Decimal(str(round(m3_per_day * 30, 1))) * contract.unit_price
                usage_billed = True
            metered += max(minimum, used) * rate
        else:
            fixed += monthly_fee(contract) * rate
    cent = Decimal("0.01")
    if fixed + metered == 0:
        fixed = prices.maintenance_per_machine * max(snap.facts["machines"], 1)
    return fixed.quantize(cent), metered.quantize(cent), unpriced


def _left_out(unpriced: Sequence[Contract], currency: str) -> str:
    if not unpriced:
        return ""
    named = ", ".join(f"{c.contract_id} ({c.currency})" for c in unpriced)
    return f"; left out, no exchange rate to {currency}: {named}"


def renewal_findings(
    healths: Sequence[Health],
    as_of: dt.datetime,
    prices: PriceBook,
    fx: dict[str, Decimal],
    note: str,
    window_days: int,
) -> list[Finding]:
    """renewal_risk: a renewal or end within the window with risk present."""
    findings = []
    for health in healths:
        snap = health.snapshot
        renewal = snap.facts["renewal"]
        days = int(snap.values["days_to_renewal"])
        if renewal is None or days > window_days:
            continue
        v = snap.values
        present = []
        if v["usage_change"] <= -DECLINE_SHARE:
            present.append("usage_change")
        if snap.facts["silent"]:
            present.append("silent_share")
        if snap.facts["third_party"]:
            present.append("third_party_parts")
        if health.probability < RISK_PROBABILITY and not present:
            continue
        day, kind, contract = renewal
        fixed, metered, unpriced = _mrr(snap, fx, prices)
        what = (
            f"contract {contract.contract_id} ({contract.product_line}) ends on "
            f"{contract.end_date:%Y-%m-%d} (its last day of service, in {days} days), with no "
            "renewal on record"
            if kind == "end"
            else f"contract {contract.contract_id} ({contract.product_line}) comes up for "
            f"{contract.renewal} renewal on {day:%Y-%m-%d}, in {days} days "
            f"({contract.notice_days} days' notice)"
        )
        if health.method == "model":
            risk = (
                f"churn probability {health.probability * 100:.0f} % within "
                f"{PRIMARY_HORIZON} days ({note})"
            )
        else:
            risk = f"churn risk {health.probability:.2f} ({note})"
        texts = [factor_text(f, snap) for f in present]
        texts += [t["text"] for t in health.top if t["text"] not in texts]
        reasons = (
            what,
            risk,
            "risk factors: " + "; ".join(texts),
            f"MRR at stake {prices.money(fixed + metered)} a month (fixed {prices.money(fixed)}"
            f" + metered {prices.money(metered)})" + _left_out(unpriced, prices.currency),
        )
        findings.append(
            Finding(
                snap.account_id,
                SignalKind.RENEWAL_RISK,
                "",
                round(_clip(health.probability), 6),
                fixed + metered,
                max(1, days),
                reasons,
                {
                    "churn_probability": round(health.probability, 4),
                    "days_to_renewal": days,
                    "usage_change_pct": round(v["usage_change"] * 100, 1),
                    "silent_share": round(v["silent_share"], 3),
                    "third_party_parts": v["third_party_parts"],
                    "mrr": float(fixed + metered),
                },
            )
        )
    return findings


def findings(
    conn: psycopg.Connection[TupleRow],
    as_of: dt.datetime,
    prices: PriceBook,
    model: object | None,
) -> list[Finding]:
    """Score every account's health as of ``as_of`` and return the renewal_risk findings.

    Nothing is written (the backtest replays history through this); the pass's health is kept
    in memory until the next pass, for :func:`record_latest`."""
    healths = assess(conn, as_of, model)
    _last_pass.clear()
    _last_pass[as_of] = healths
    if not healths:
        return []
    note = method_note(conn, as_of, model)
    fx = _fx(conn, as_of)
    return renewal_findings(healths, as_of, prices, fx, note, prices.renewal_window_days)
