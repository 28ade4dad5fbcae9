"""service_due and third_party_parts, per asset, from daily rollups and asset events.

A component is due when its estimated running hours left (``signals.components.wear``), turned
into days at the asset's running hours per day over the last week, fall within
``DUE_HORIZON_DAYS``. Its promise (``signals.kinds``), stated first in the finding's reason:
the component reaches its rated limit within the finding's horizon (those days left, at least
1) and is replaced within it - a service or parts sale; a replacement by us
(``component_replaced``) or one detected elsewhere (``third_party_replacement``) confirms it,
a failure does not (that is ``failure_risk``'s promise).
A component past its limit (negative hours left) is reported as overdue by that many running
hours (never as "0 hours left"), and its finding is marked ``overdue``, which raises the
alert's priority (``signals.alerts``).
Its hours are counted from its last replacement on record: the running-hours counter just
before the last ``component_replaced`` or ``failure`` event for it, else the registry's
``installed_at_running_hours``; a component apparently past twice its rated life has no usable
record (no data, no finding).
A replacement seen in the data (an indicator reset) with no ``component_replaced`` or
``service`` event for that asset and component within three days is a part bought elsewhere.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from signals.catalogue import INDICATORS, PriceBook
from signals.components import replacements, wear
from signals.findings import Finding
from signals.kinds import SignalKind

HISTORY_DAYS = 60
DUE_HORIZON_DAYS = 30
SERVICE_MATCH = dt.timedelta(days=3)

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
    for asset_id, kind, life, installed, replaced_at_hours in conn.execute(
        _COMPONENTS, {"assets": sorted(series), "as_of": as_of}
    ):
        # the last replacement on record wins over the registry's installation figure
        start = replaced_at_hours if replaced_at_hours is not None else installed
        components[asset_id].append((kind, life, start))
    services = _services(conn, sorted(series), as_of)
    findings: list[Finding] = []
    for asset_id, days in series.items():
        account_id = owners.get(asset_id)
        if account_id is None:
            continue
        findings += _asset_findings(
            account_id,
            asset_id,
            days,
            components[asset_id],
            services.get(asset_id, {}),
            as_of,
            prices,
        )
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


def _asset_findings(
    account_id: str,
    asset_id: str,
    days: list[tuple[dt.datetime, float, dict[str, float | None]]],
    components: list[tuple[str, float, float]],
    services: dict[str, list[dt.datetime]],
    as_of: dt.datetime,
    prices: PriceBook,
) -> list[Finding]:
    buckets = [d for d, _, _ in days]
    hours = np.array([h if h is not None else np.nan for _, h, _ in days], dtype=float)
    week = hours[-8:][~np.isnan(hours[-8:])]
    per_day = float(week[-1] - week[0]) / max(len(week) - 1, 1) if len(week) >= 2 else 0.0
    findings: list[Finding] = []
    for kind, life, installed in components:
        indicator = INDICATORS.get(kind)
        values = None
        if indicator is not None:
            values = np.array(
                [v.get(kind) if v.get(kind) is not None else np.nan for _, _, v in days],
                dtype=float,
            )
            findings += _third_party(account_id, asset_id, kind, values, buckets, services, prices)
        if np.isnan(hours).all():
            continue
        estimate = wear(indicator, life, installed, hours, values)
        if estimate.basis == "rated life" and estimate.used_hours > 2 * life:
            # twice its rated life without a replacement on record: the record is missing,
            # which is no data about this component, not a component overdue
            continue
        if per_day <= 0.5:
            continue  # the machine hardly runs: no date to give
        days_left = estimate.hours_left / per_day
        if days_left > DUE_HORIZON_DAYS:
            continue
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
        if estimate.current is not None and indicator is not None:
            reason += (
                f"; {indicator.metric} at {estimate.current:.2f} of a {indicator.limit:g} limit"
            )
        findings.append(
            Finding(
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
        )
    return findings


def _third_party(
    account_id: str,
    asset_id: str,
    kind: str,
    values: np.ndarray,
    buckets: list[dt.datetime],
    services: dict[str, list[dt.datetime]],
    prices: PriceBook,
) -> list[Finding]:
    valid = ~np.isnan(values)
    index = np.nonzero(valid)[0]
    findings = []
    for reset in replacements(INDICATORS[kind], values[valid]):
        day = buckets[int(index[reset])]
        ordered = any(abs(t - day) <= SERVICE_MATCH for t in services.get(kind, []))
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
