"""service_due and third_party_parts, per asset, from daily rollups and asset events.

**service_due's promise** (``signals.kinds``), stated first in the finding's reason: the
component is replaced - a service or parts sale; by us (``component_replaced``) or elsewhere
(``third_party_replacement``) - within the finding's horizon; a failure does not confirm it
(that is ``failure_risk``'s promise).

**Decision: the horizon is the fleet's replacement lag, not the days to the rated limit.** A
service organisation replaces a part at a planned visit, hundreds of running hours before or
after its rated life runs out (seed 7's filters: 5-95 % of replacements from 760 h before to 980
h after it). Promising the replacement within the days left to the rated limit was right about
one time in seven, at chance level. Now the lags of the fleet's replacements on record (running
hours in service minus rated life, the :data:`LAG_HISTORY_DAYS` before the pass, only events
before it; a repair after a failure and every part still in service count as censored) give, by
Kaplan-Meier (``signals.replacement_lag``), the running hours within which 80 % of the parts of
its kind still in service at its age were replaced; the horizon is that in days at the asset's
running hours per day over the last week. A component is due once its kind's replacement window
has opened (10 % of its kind replaced by its age); its reason says "due for service: rated life
reached in ~N h; the fleet replaced 80 % ... within M h; it usually replaces them between A and
B of their rated life". A fleet with fewer than 10 replacements on record keeps the rated-life
rule: due when the rated limit is within ``DUE_HORIZON_DAYS``, the horizon its days left (at
least 1). One open alert per asset: the scoring pass merges the components
(``signals.findings.merge_components``) and the lifecycle keeps the open alert.

Measured (``nice .venv/bin/python bench/backtest.py --datasets simulator --seed 7 --kinds
service_due``; seed 11 never tuned on; replay of the last six months day by day):

=========  ===================================  ======================================
seed       before (rated-life rule, 30 days)    after (fleet lags, 80 % coverage)
=========  ===================================  ======================================
7          87 alerts, precision 15 % (chance    104 alerts, precision 54 % (chance
           12.6 %), recall 20/152, lead 252 h   34.8 %), recall 108/152, lead 1,012 h
11         90 alerts, 14 % (chance 14.2 %),     122 alerts, 60 % (chance 43.7 %),
           recall 16/180, lead 219 h            recall 146/180, lead 1,064 h
=========  ===================================  ======================================

The precision stays below the promised 80 %: alerts raised in the last months of the replay have
windows that run past the end of the data (a replacement there is unseen and the alert counts as
false: 33 of 104 alerts on seed 7, 63 of 122 on seed 11; over the alerts whose window closed
within the data, precision is 68 % (chance 32.3 %) and 71 % (38.9 %), against 14 % (12.1 %) and
15 % (13.8 %) before).

**A part bought elsewhere dates its age** however long ago (``RESET_HISTORY_DAYS``): its
indicator's last reset, not only one inside the ``HISTORY_DAYS`` the wear estimate reads.
Without it a third-party account's filter, replaced elsewhere (no event) more than 60 days ago,
fell back to the age of its last replacement on record and was alerted as overdue again (seen on
seed 11's third_party account: one air filter alerted three times). Measured as above (figures:
without -> with it): seed 7 104 -> 102 alerts, precision 53.8 % -> 54.9 % (chance 34.8 -> 34.4
%), foreseen 108 -> 103 of 152; seed 11 122 -> 110 alerts, precision 59.8 % -> 63.6 % (chance
43.7 -> 43.6 %), foreseen 146 -> 142 of 180, false alerts per 1,000 operating hours 0.157 ->
0.128. Kept: fewer alerts that call a new part overdue and more precision above chance on both
seeds (held-out seed 11: +3.8 points), for 5 and 4 fewer replacements foreseen (an alert about a
part that was in fact new, confirmed by a replacement that happened to fall in its long window).

Azure PdM (``--datasets azure``) reports no running-hours counter and registers no components:
service_due finds nothing there, before and after (its maint.csv replacements are scored by
nothing of this kind).

A component past its limit is marked ``overdue``, which raises the alert's priority
(``signals.alerts``). Its hours are counted from its last replacement on record: the
running-hours counter just before the last ``component_replaced`` or ``failure`` event for it
or the last reset of its indicator after it, else the registry's
``installed_at_running_hours``; a component apparently past twice its rated life has no usable
record (no data, no finding).
A replacement seen in the data (an indicator reset) with no ``component_replaced`` or
``service`` event for that asset and component within three days is a part bought elsewhere.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from signals.catalogue import INDICATORS, Indicator, PriceBook
from signals.components import RESET_SHARE, Wear, replacements, wear
from signals.findings import Finding
from signals.kinds import SignalKind
from signals.replacement_lag import LagObservation, ReplacementLags

HISTORY_DAYS = 60
DUE_HORIZON_DAYS = 30
SERVICE_MATCH = dt.timedelta(days=3)
LAG_HISTORY_DAYS = 730  # the replacements the fleet's lags are learnt from
REPAIR_WINDOW = dt.timedelta(days=14)  # a replacement this soon after a failure repairs it
RESET_HISTORY_DAYS = 730  # how far back an indicator reset still dates a component's age

# The indicators as columns of numbers (not a JSON object to decode per row in Python).
_SERIES = """
SELECT r.asset_id, r.bucket, (r.stats -> 'running_hours' ->> 3)::double precision, {columns}
FROM rollup_daily r
WHERE r.bucket >= %(as_of)s - make_interval(days => %(days)s)
  AND r.bucket <= %(as_of)s - INTERVAL '1 day'
  AND r.stats ? 'running_hours'
ORDER BY r.asset_id, r.bucket
"""

# Each component with its running hours at its last replacement on record (a replacement or
# failure event before as_of; the counter's value in the last complete hour before it).
_COMPONENTS = """
SELECT c.asset_id, c.kind, c.rated_life_hours::double precision,
       c.installed_at_running_hours::double precision, r.hours
FROM components c
LEFT JOIN LATERAL (
    SELECT e.time FROM asset_events e
    WHERE e.asset_id = c.asset_id AND e.component = c.kind
      AND e.kind IN ('component_replaced', 'failure') AND e.time < %(as_of)s
    ORDER BY e.time DESC LIMIT 1
) ev ON true
LEFT JOIN LATERAL (
    SELECT (h.stats -> 'running_hours' ->> 3)::double precision AS hours
    FROM rollup_hourly h
    WHERE ev.time IS NOT NULL AND h.asset_id = c.asset_id
      AND h.bucket <= ev.time - INTERVAL '1 hour' AND h.bucket > ev.time - INTERVAL '7 days'
      AND h.stats ? 'running_hours'
    ORDER BY h.bucket DESC LIMIT 1
) r ON true
WHERE c.asset_id = ANY(%(assets)s)
"""

# Every replacement on record before as_of (its previous one found among all before it) with
# the running-hours counter just before it and just before its previous one (the last complete
# hour before each, as _COMPONENTS reads it), and its component's rated life and registry
# installation figure, and whether it repaired a failure (of the component or of the asset as
# a whole, in the `repair` before it); only those in the last `days` are returned.
_REPLACEMENTS = """
WITH replaced AS (
    SELECT e.asset_id, e.component, e.time,
           lag(e.time) OVER (PARTITION BY e.asset_id, e.component ORDER BY e.time) AS previous
    FROM asset_events e
    WHERE e.kind = 'component_replaced' AND e.time < %(as_of)s
)
SELECT c.kind, c.rated_life_hours::double precision,
       c.installed_at_running_hours::double precision, now_.hours, before.hours,
       r.previous IS NULL,
       EXISTS (
           SELECT 1 FROM asset_events f
           WHERE f.asset_id = r.asset_id AND f.kind = 'failure'
             AND f.component IN (r.component, '')
             AND f.time <= r.time AND f.time >= r.time - %(repair)s
       ) AS repair
FROM replaced r
JOIN components c ON c.asset_id = r.asset_id AND c.kind = r.component
LEFT JOIN LATERAL (
    SELECT (h.stats -> 'running_hours' ->> 3)::double precision AS hours
    FROM rollup_hourly h
    WHERE h.asset_id = r.asset_id AND h.bucket <= r.time - INTERVAL '1 hour'
      AND h.bucket > r.time - INTERVAL '7 days' AND h.stats ? 'running_hours'
    ORDER BY h.bucket DESC LIMIT 1
) now_ ON true
LEFT JOIN LATERAL (
    SELECT (h.stats -> 'running_hours' ->> 3)::double precision AS hours
    FROM rollup_hourly h
    WHERE r.previous IS NOT NULL AND h.asset_id = r.asset_id
      AND h.bucket <= r.previous - INTERVAL '1 hour'
      AND h.bucket > r.previous - INTERVAL '7 days' AND h.stats ? 'running_hours'
    ORDER BY h.bucket DESC LIMIT 1
) before ON true
WHERE r.time >= %(as_of)s - make_interval(days => %(days)s)
"""


# The running-hours counter on the last day an indicator dropped back (a replacement, by us or
# elsewhere: as ``signals.components.replacements`` reads the daily means) per asset, within
# `days` before as_of: a part bought elsewhere leaves no event, and without this its age would
# fall back to the last replacement on record once the reset left the HISTORY_DAYS window.
_LAST_RESETS = """
SELECT DISTINCT ON (d.asset_id) d.asset_id, d.hours
FROM (
    SELECT r.asset_id, r.bucket, (r.stats -> 'running_hours' ->> 3)::double precision AS hours,
           (r.stats -> %(metric)s ->> 0)::double precision AS value,
           lag((r.stats -> %(metric)s ->> 0)::double precision)
               OVER (PARTITION BY r.asset_id ORDER BY r.bucket) AS previous
    FROM rollup_daily r
    WHERE r.asset_id = ANY(%(assets)s)
      AND r.bucket >= %(as_of)s - make_interval(days => %(days)s)
      AND r.bucket <= %(as_of)s - INTERVAL '1 day'
      AND r.stats ? 'running_hours' AND r.stats ? %(metric)s
) d
WHERE d.previous - d.value > %(threshold)s AND d.hours IS NOT NULL
ORDER BY d.asset_id, d.bucket DESC
"""


def wear_findings(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime, prices: PriceBook
) -> list[Finding]:
    kinds = tuple(INDICATORS)
    columns = sql.SQL(", ").join(
        sql.SQL("(r.stats -> {} ->> 0)::double precision").format(sql.Literal(INDICATORS[c].metric))
        for c in kinds
    )
    series: dict[str, list[tuple[dt.datetime, float, dict[str, float | None]]]] = defaultdict(list)
    query = sql.SQL(_SERIES).format(columns=columns)
    for asset_id, bucket, hours, *values in conn.execute(
        query, {"as_of": as_of, "days": HISTORY_DAYS}
    ):
        series[asset_id].append((bucket, hours, dict(zip(kinds, values, strict=True))))
    if not series:
        return []
    owners: dict[str, str] = dict(
        conn.execute(
            "SELECT asset_id, account_id FROM assets WHERE asset_id = ANY(%s)", (sorted(series),)
        ).fetchall()
    )
    components: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    resets = _last_resets(conn, sorted(series), as_of)
    for asset_id, kind, life, installed, replaced_at_hours in conn.execute(
        _COMPONENTS, {"assets": sorted(series), "as_of": as_of}
    ):
        # the last replacement on record wins over the registry's installation figure, and a
        # later reset of its indicator (a part bought elsewhere) over both
        start = replaced_at_hours if replaced_at_hours is not None else installed
        start = max(start, resets.get((asset_id, kind), start))
        components[asset_id].append((kind, life, start))
    services = _services(conn, sorted(series), as_of)
    findings: list[Finding] = []
    states: dict[str, _AssetWear] = {}
    for asset_id, days in series.items():
        account_id = owners.get(asset_id)
        if account_id is None:
            continue
        state = _asset_wear(days, components[asset_id])
        states[asset_id] = state
        for kind, means in state.indicators:
            findings += _third_party(
                account_id,
                asset_id,
                kind,
                means,
                state.buckets,
                services.get(asset_id, {}).get(kind, []),
                prices,
            )
    # the fleet's replacements on record, and every component in service as a lag still running
    lags = ReplacementLags.fit(
        [
            *replacement_lags(conn, as_of),
            *(c.observation() for s in states.values() for c in s.parts),
        ]
    )
    for asset_id, state in states.items():
        findings += [
            _due(owners[asset_id], asset_id, part, state.per_day, lags, prices)
            for part in state.parts
            if state.per_day > 0.5  # a machine that hardly runs: no date to give
            and _is_due(part, state.per_day, lags)
        ]
    return findings


def _services(
    conn: psycopg.Connection[TupleRow], assets: list[str], as_of: dt.datetime
) -> dict[str, dict[str, list[dt.datetime]]]:
    found: dict[str, dict[str, list[dt.datetime]]] = defaultdict(lambda: defaultdict(list))
    for asset_id, component, time in conn.execute(
        "SELECT asset_id, component, time FROM asset_events WHERE asset_id = ANY(%s)"
        " AND kind IN ('component_replaced', 'service') AND time < %s"
        " AND time >= %s - make_interval(days => %s)",
        (assets, as_of, as_of, HISTORY_DAYS + 5),
    ):
        found[asset_id][component].append(time)
    return found


def _last_resets(
    conn: psycopg.Connection[TupleRow], assets: list[str], as_of: dt.datetime
) -> dict[tuple[str, str], float]:
    """(asset, component) -> the running hours on the last day its indicator dropped back,
    within ``RESET_HISTORY_DAYS`` before ``as_of``."""
    found: dict[tuple[str, str], float] = {}
    for kind, indicator in INDICATORS.items():
        threshold = RESET_SHARE * (indicator.limit - indicator.new)
        parameters = {
            "metric": indicator.metric,
            "assets": assets,
            "as_of": as_of,
            "days": RESET_HISTORY_DAYS,
            "threshold": threshold,
        }
        for asset_id, hours in conn.execute(_LAST_RESETS, parameters):
            found[(asset_id, kind)] = hours
    return found


def replacement_lags(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime
) -> list[LagObservation]:
    """The lag of every replacement on record in the ``LAG_HISTORY_DAYS`` before ``as_of``:
    running hours since the component's previous replacement (else the registry's installation
    figure) minus its rated life; a replacement whose counter readings are missing, or whose
    component apparently ran more than twice its rated life (no record), is left out. A
    replacement within ``REPAIR_WINDOW`` after a failure of the asset is a repair: its lag
    counts as censored (the part left service before its service replacement came)."""
    observations = []
    for kind, life, installed, at_hours, previous_hours, first, repair in conn.execute(
        _REPLACEMENTS, {"as_of": as_of, "days": LAG_HISTORY_DAYS, "repair": REPAIR_WINDOW}
    ):
        start = installed if first else previous_hours
        if at_hours is None or start is None:
            continue
        used = at_hours - start
        if 0 <= used <= 2 * life:
            # a repair ends the part's wait for its service early: censored, not a service lag
            observations.append(LagObservation(kind, used - life, replaced=not repair))
    return observations


@dataclass(frozen=True)
class _Part:
    """One component of an asset as of the pass: its rated life and wear estimate."""

    kind: str
    life: float
    estimate: Wear
    indicator: Indicator | None

    @property
    def lag_hours(self) -> float:
        return self.estimate.used_hours - self.life

    def observation(self) -> LagObservation:
        return LagObservation(self.kind, self.lag_hours, replaced=False)


@dataclass(frozen=True)
class _AssetWear:
    per_day: float  # running hours a day over the last week
    parts: list[_Part]
    buckets: list[dt.datetime]
    # (component, its indicator's daily means on those days) for the third-party check
    indicators: list[tuple[str, np.ndarray]]


def _asset_wear(
    days: list[tuple[dt.datetime, float, dict[str, float | None]]],
    components: list[tuple[str, float, float]],
) -> _AssetWear:
    buckets = [d for d, _, _ in days]
    hours = np.array([h if h is not None else np.nan for _, h, _ in days], dtype=float)
    week = hours[-8:][~np.isnan(hours[-8:])]
    per_day = float(week[-1] - week[0]) / max(len(week) - 1, 1) if len(week) >= 2 else 0.0
    parts: list[_Part] = []
    indicators: list[tuple[str, np.ndarray]] = []
    for kind, life, installed in components:
        indicator = INDICATORS.get(kind)
        values = None
        if indicator is not None:
            values = np.array(
                [v.get(kind) if v.get(kind) is not None else np.nan for _, _, v in days],
                dtype=float,
            )
            indicators.append((kind, values))
        if np.isnan(hours).all():
            continue
        estimate = wear(indicator, life, installed, hours, values)
        if estimate.basis == "rated life" and estimate.used_hours > 2 * life:
            # twice its rated life without a replacement on record: the record is missing,
            # which is no data about this component, not a component overdue
            continue
        parts.append(_Part(kind, life, estimate, indicator))
    return _AssetWear(per_day, parts, buckets, indicators)


def _is_due(part: _Part, per_day: float, lags: ReplacementLags) -> bool:
    if lags.knows(part.kind):
        return lags.promise(part.kind, part.lag_hours) is not None
    return part.estimate.hours_left / per_day <= DUE_HORIZON_DAYS


def _due(
    account_id: str,
    asset_id: str,
    part: _Part,
    per_day: float,
    lags: ReplacementLags,
    prices: PriceBook,
) -> Finding:
    """The finding of a due component: by the fleet's replacement lags when it has them,
    else by the rated-life rule."""
    promise = lags.promise(part.kind, part.lag_hours) if lags.knows(part.kind) else None
    rated_left = part.life - part.estimate.used_hours
    if promise is None:
        finding = _rated_life_due(account_id, asset_id, part, per_day, prices)
    else:
        horizon = max(1, math.ceil(promise.horizon_hours / per_day))
        reached = (
            f"rated life ({part.life:,.0f} h) passed {-rated_left:,.0f} running hours ago"
            if rated_left < 0
            else f"rated life ({part.life:,.0f} h) reached in ~{rated_left:,.0f} running hours "
            f"(≈ {rated_left / per_day:.0f} days)"
        )
        pooled = " of every kind" if promise.basis != part.kind else ""
        reason = (
            f"promise: {part.kind} of {asset_id} is replaced within {horizon} "
            f"day{'s' if horizon != 1 else ''} (a service or parts sale; by us or by a third "
            f"party): {reached}; this fleet usually replaces it between "
            f"{_signed(promise.lag_p10_hours)} and {_signed(promise.lag_p90_hours)} that "
            f"(middle 80 % of {promise.replacements} replacements{pooled} on record); of such "
            f"parts still in service at this age it replaced {promise.coverage:.0%} within "
            f"{promise.horizon_hours:,.0f} running hours (≈ {horizon} days at {per_day:.1f} "
            "h/day)"
        )
        finding = Finding(
            account_id,
            SignalKind.SERVICE_DUE,
            f"{asset_id}/{part.kind}",
            promise.coverage,
            prices.component_service,
            horizon,
            (reason,),
            {
                "hours_left": round(rated_left, 1),
                "horizon_running_hours": round(promise.horizon_hours, 1),
                "running_hours_per_day": round(per_day, 2),
                "replaced_share_by_now": round(promise.replaced_share, 3),
            },
            overdue=rated_left < 0,
        )
    estimate, indicator = part.estimate, part.indicator
    if estimate.current is not None and indicator is not None:
        extra = f"; {indicator.metric} at {estimate.current:.2f} of a {indicator.limit:g} limit"
        finding = replace(finding, reasons=(finding.reasons[0] + extra, *finding.reasons[1:]))
    return finding


def _signed(hours: float) -> str:
    if math.isinf(hours):
        return "an unknown number of hours after"
    return f"{abs(hours):,.0f} h " + ("before" if hours < 0 else "after")


def _rated_life_due(
    account_id: str, asset_id: str, part: _Part, per_day: float, prices: PriceBook
) -> Finding:
    """The rated-life rule, for a fleet with too few replacements on record: the component
    reaches its limit within its days left and is replaced within them."""
    estimate, kind = part.estimate, part.kind
    days_left = estimate.hours_left / per_day
    overdue = estimate.hours_left < 0
    horizon = max(1, int(days_left))
    promise = (
        f"promise: {kind} of {asset_id} "
        + ("is past its rated limit" if overdue else "reaches its rated limit")
        + f" and is replaced within {horizon} day{'s' if horizon != 1 else ''} "
        "(a service or parts sale; by us or by a third party)"
    )
    if overdue:
        reason = (
            f"{promise}: overdue by {-estimate.hours_left:,.0f} running hours "
            f"(± {estimate.hours_left_sd:,.0f}) by {estimate.basis}, ≈ {-days_left:.0f} "
            f"days at {per_day:.1f} h/day"
        )
    else:
        reason = (
            f"{promise}: about {estimate.hours_left:,.0f} running hours "
            f"left (± {estimate.hours_left_sd:,.0f}) by {estimate.basis}, ≈ "
            f"{days_left:.0f} days at {per_day:.1f} h/day"
        )
    return Finding(
        account_id,
        SignalKind.SERVICE_DUE,
        f"{asset_id}/{kind}",
        min(1.0, max(0.3, 1.0 - days_left / DUE_HORIZON_DAYS)),
        prices.component_service,
        horizon,
        (reason,),
        {
            "hours_left": round(estimate.hours_left, 1),
            "days_left": round(days_left, 1),
            "running_hours_per_day": round(per_day, 2),
        },
        overdue=overdue,
    )


def _third_party(
    account_id: str,
    asset_id: str,
    kind: str,
    values: np.ndarray,
    buckets: list[dt.datetime],
    services: list[dt.datetime],
    prices: PriceBook,
) -> list[Finding]:
    valid = ~np.isnan(values)
    index = np.nonzero(valid)[0]
    findings = []
    for reset in replacements(INDICATORS[kind], values[valid]):
        day = buckets[int(index[reset])]
        ordered = any(abs(t - day) <= SERVICE_MATCH for t in services)
        if not ordered:
            findings.append(
                Finding(
                    account_id,
                    SignalKind.THIRD_PARTY_PARTS,
                    f"{asset_id}/{kind}",
                    0.7,
                    prices.maintenance_per_machine,
                    60,
                    (
                        f"{kind} of {asset_id} was replaced around {day:%Y-%m-%d} "
                        f"({INDICATORS[kind].metric} dropped from "
                        f"{values[index[reset - 1]]:.2f} to "
                        f"{values[index[reset]]:.2f}) with no service order",
                    ),
                    {"replaced_on": float(day.timestamp())},
                )
            )
    return findings
