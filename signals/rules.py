"""Account and asset signals from rollups, as of a moment: one SQL query per signal family
computes the figures for every account at once (set-based), and small pure functions turn the
figures into findings with a score, a money value, a horizon and the reasons.

Every window ends at ``as_of`` and only buckets that were complete by then are read (an hourly
bucket ending at or before ``as_of``, a daily one likewise), so a backtest that scores at past
moments never sees the future, and a partial day never looks like a drop in usage. Missing
telemetry is "no data": usage and capacity figures use the buckets that exist; only
``silent_assets`` speaks about silence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import TupleRow, dict_row

from signals.catalogue import PriceBook, money
from signals.findings import Finding
from signals.kinds import SignalKind

RECENT_DAYS = 28
BASELINE_DAYS = 84
DECLINE_SHARE = 0.25
GROWTH_SHARE = 0.15
SATURATED_LOAD_PCT = 95.0
SATURATION_SHARE = 0.25
SAG_PRESSURE_BAR = 7.2
SILENT_HOURS = 48
IDLE_LOAD_SHARE = 0.20
LEAK_SHARE = 0.08
HEAT_RECOVERY_KWH_30D = 15_000.0
HEAT_RECOVERY_HOURS_PER_DAY = 14.0
HEAT_RECOVERY_SHARE = 0.7  # share of a compressor's electrical input recoverable as heat
PART_LOAD = (25.0, 70.0)
FIXED_SPEED_IDLE_SHARE = 0.2  # power at zero load / rated power above this: fixed speed

_USAGE = """
WITH daily AS (
    SELECT account_id, bucket, sum(flow) * 1440 AS volume_m3
    FROM (  -- the figure out of the JSON before grouping (see _CAPACITY)
        SELECT a.account_id, r.bucket, (r.stats -> 'flow_m3_min' ->> 0)::double precision AS flow
        FROM rollup_daily r JOIN assets a USING (asset_id)
        WHERE r.bucket >= %(as_of)s - make_interval(days => %(recent)s + %(baseline)s)
          AND r.bucket <= %(as_of)s - INTERVAL '1 day' AND r.stats ? 'flow_m3_min'
        OFFSET 0
    ) days
    GROUP BY bucket, account_id
)
SELECT account_id,
       avg(volume_m3) FILTER (WHERE bucket >= %(as_of)s - make_interval(days => %(recent)s))
           AS recent_m3_per_day,
       count(*) FILTER (WHERE bucket >= %(as_of)s - make_interval(days => %(recent)s))
           AS recent_days,
       avg(volume_m3) FILTER (WHERE bucket < %(as_of)s - make_interval(days => %(recent)s))
           AS baseline_m3_per_day,
       count(*) FILTER (WHERE bucket < %(as_of)s - make_interval(days => %(recent)s))
           AS baseline_days
FROM daily GROUP BY account_id
"""

# Each asset's latest bucket in the window: one backward step through the primary key per
# asset, not a read of every asset's 28 days.
_SILENCE = """
SELECT a.account_id, a.asset_id, latest.bucket + INTERVAL '1 hour' AS last_seen
FROM assets a
CROSS JOIN LATERAL (
    SELECT r.bucket FROM rollup_hourly r
    WHERE r.asset_id = a.asset_id
      AND r.bucket >= %(as_of)s - make_interval(days => %(recent)s)
      AND r.bucket <= %(as_of)s - INTERVAL '1 hour'
    ORDER BY r.bucket DESC LIMIT 1
) latest
"""

# The figures are taken out of the JSON in a subquery kept apart (OFFSET 0), so that grouping
# by account and hour sorts narrow rows rather than every row's whole stats.
_CAPACITY = """
WITH hourly AS (
    SELECT account_id, bucket, sum(flow) AS flow, sum(rated)::double precision AS capacity,
           min(load) AS min_load, min(pressure) AS min_pressure, count(*) AS machines
    FROM (
        SELECT a.account_id, r.bucket, a.rated_flow_m3_min AS rated,
               (r.stats -> 'flow_m3_min' ->> 0)::double precision AS flow,
               (r.stats -> 'load_pct' ->> 0)::double precision AS load,
               (r.stats -> 'pressure_bar' ->> 1)::double precision AS pressure
        FROM rollup_hourly r JOIN assets a USING (asset_id)
        WHERE r.bucket >= %(as_of)s - make_interval(days => %(recent)s)
          AND r.bucket <= %(as_of)s - INTERVAL '1 hour'
          AND a.rated_flow_m3_min IS NOT NULL AND r.stats ? 'flow_m3_min'
        ORDER BY r.bucket  -- the bucket index's order: the grouping sorts one hour at a time
        OFFSET 0
    ) readings
    GROUP BY bucket, account_id
)
SELECT account_id, count(*) AS hours,
       count(*) FILTER (WHERE flow > 0.05 * capacity) AS production_hours,
       count(*) FILTER (WHERE min_load >= %(saturated)s) AS saturated_hours,
       count(*) FILTER (WHERE min_load >= %(saturated)s AND min_pressure < %(sag)s)
           AS sagging_hours,
       count(*) FILTER (WHERE flow < %(idle)s * capacity) AS idle_hours,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY flow / capacity)
           FILTER (WHERE flow < %(idle)s * capacity) AS idle_flow_share,
       max(capacity) AS capacity_m3_min
FROM hourly GROUP BY account_id
"""

_ENERGY = """
SELECT account_id, asset_id, rated_power_kw,
       max(energy) - min(energy) AS energy_kwh,
       (max(running) - min(running)) / greatest(count(*) - 1, 1) AS running_hours_per_day,
       avg(load) FILTER (WHERE load > 5) AS running_load_pct,
       regr_intercept(power, load) / nullif(rated_power_kw, 0) AS idle_power_share,
       count(*) AS days
FROM (  -- the figures out of the JSON before grouping (see _CAPACITY)
    SELECT a.account_id, a.asset_id, a.rated_power_kw::double precision AS rated_power_kw,
           (r.stats -> 'energy_kwh' ->> 3)::double precision AS energy,
           (r.stats -> 'running_hours' ->> 3)::double precision AS running,
           (r.stats -> 'load_pct' ->> 0)::double precision AS load,
           (r.stats -> 'power_kw' ->> 0)::double precision AS power
    FROM rollup_daily r JOIN assets a USING (asset_id)
    WHERE r.bucket >= %(as_of)s - INTERVAL '30 days' AND r.bucket <= %(as_of)s - INTERVAL '1 day'
      AND r.stats ? 'energy_kwh'
    OFFSET 0
) days
GROUP BY account_id, asset_id, rated_power_kw
"""


def _rows(
    conn: psycopg.Connection[TupleRow], query: str, params: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        yield from cur


def _money(value: float | Decimal) -> Decimal:
    return Decimal(str(round(float(value), 2)))


def _monthly_value(m3_per_day: float, prices: PriceBook) -> Decimal:
    return _money(m3_per_day * 30 * float(prices.price_per_m3))


def usage_findings(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime, prices: PriceBook
) -> list[Finding]:
    """usage_decline and usage_growth against the account's own baseline."""
    findings: list[Finding] = []
    params = {"as_of": as_of, "recent": RECENT_DAYS, "baseline": BASELINE_DAYS}
    for row in _rows(conn, _USAGE, params):
        recent, baseline = row["recent_m3_per_day"], row["baseline_m3_per_day"]
        if (
            not recent
            or not baseline
            or row["recent_days"] < RECENT_DAYS // 2
            or row["baseline_days"] < BASELINE_DAYS // 3
            or baseline <= 0
        ):
            continue  # not enough data on either side: no data, not a change
        change = recent / baseline - 1.0
        figures = {
            "recent_m3_per_day": round(recent, 1),
            "baseline_m3_per_day": round(baseline, 1),
            "change_pct": round(change * 100, 1),
        }
        if change <= -DECLINE_SHARE:
            findings.append(
                Finding(
                    row["account_id"],
                    SignalKind.USAGE_DECLINE,
                    "",
                    min(1.0, -change / 0.5),
                    _monthly_value(baseline - recent, prices),
                    90,
                    (
                        f"air delivered fell {-change * 100:.0f}% against the account's own "
                        f"baseline: {recent:,.0f} m³/day over the last {RECENT_DAYS} days vs "
                        f"{baseline:,.0f} "
                        f"m³/day over the {BASELINE_DAYS} days before",
                    ),
                    figures,
                )
            )
        elif change >= GROWTH_SHARE:
            findings.append(
                Finding(
                    row["account_id"],
                    SignalKind.USAGE_GROWTH,
                    "",
                    min(1.0, change / 0.4),
                    _monthly_value(recent - baseline, prices),
                    60,
                    (
                        f"air delivered rose {change * 100:.0f}%: {recent:,.0f} m³/day over "
                        f"the last {RECENT_DAYS} days vs {baseline:,.0f} m³/day before",
                    ),
                    figures,
                )
            )
    return findings


def silence_findings(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime, prices: PriceBook
) -> list[Finding]:
    """silent_assets: machines that reported in the last 28 days but not in the last 48 h."""
    by_account: dict[str, list[tuple[str, dt.datetime]]] = {}
    reporting: dict[str, int] = {}
    limit = as_of - dt.timedelta(hours=SILENT_HOURS)
    for row in _rows(conn, _SILENCE, {"as_of": as_of, "recent": RECENT_DAYS}):
        reporting[row["account_id"]] = reporting.get(row["account_id"], 0) + 1
        if row["last_seen"] < limit:
            by_account.setdefault(row["account_id"], []).append((row["asset_id"], row["last_seen"]))
    findings = []
    for account_id, silent in sorted(by_account.items()):
        share = len(silent) / reporting[account_id]
        names = ", ".join(f"{a} (last heard {t:%Y-%m-%d %H:%M} UTC)" for a, t in sorted(silent))
        findings.append(
            Finding(
                account_id,
                SignalKind.SILENT_ASSETS,
                "",
                min(1.0, 0.4 + 0.6 * share),
                prices.maintenance_per_machine * len(silent),
                30,
                (
                    f"{len(silent)} of {reporting[account_id]} machines stopped reporting "
                    f"more than {SILENT_HOURS} h ago: {names}",
                ),
                {"silent_machines": len(silent), "machines": reporting[account_id]},
            )
        )
    return findings


def capacity_findings(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime, prices: PriceBook
) -> list[Finding]:
    """capacity_saturation, and the leak half of efficiency_upgrade (flow in idle hours)."""
    params = {
        "as_of": as_of,
        "recent": RECENT_DAYS,
        "saturated": SATURATED_LOAD_PCT,
        "sag": SAG_PRESSURE_BAR,
        "idle": IDLE_LOAD_SHARE,
    }
    findings = []
    for row in _rows(conn, _CAPACITY, params):
        production = row["production_hours"] or 0
        if production >= 24:
            share = row["saturated_hours"] / production
            if share >= SATURATION_SHARE:
                sag_share = row["sagging_hours"] / production
                findings.append(
                    Finding(
                        row["account_id"],
                        SignalKind.CAPACITY_SATURATION,
                        "",
                        min(1.0, share / 0.6),
                        prices.extra_machine,
                        60,
                        (
                            f"every machine above {SATURATED_LOAD_PCT:.0f}% load in "
                            f"{share * 100:.0f}% of production hours over {RECENT_DAYS} days; "
                            "pressure below "
                            f"{SAG_PRESSURE_BAR} bar in {sag_share * 100:.0f}% of them",
                        ),
                        {
                            "saturated_share": round(share, 3),
                            "sagging_share": round(sag_share, 3),
                            "production_hours": production,
                        },
                    )
                )
        idle_share = row["idle_flow_share"]
        if row["idle_hours"] >= 0.1 * row["hours"] and idle_share and idle_share >= LEAK_SHARE:
            leak_m3_month = (
                idle_share * row["capacity_m3_min"] * 60 * row["idle_hours"] * 30 / RECENT_DAYS
            )
            findings.append(
                Finding(
                    row["account_id"],
                    SignalKind.EFFICIENCY_UPGRADE,
                    "leaks",
                    min(1.0, idle_share / 0.2),
                    prices.leak_service,
                    90,
                    (
                        f"air flows while production is idle: median {idle_share * 100:.0f}% of "
                        f"capacity in {row['idle_hours']} idle hours over {RECENT_DAYS} days "
                        f"(about {leak_m3_month:,.0f} m³ a month lost to leaks)",
                    ),
                    {
                        "idle_flow_share": round(idle_share, 3),
                        "idle_hours": row["idle_hours"],
                        "leak_m3_per_month": round(leak_m3_month),
                    },
                )
            )
    return findings


def energy_findings(
    conn: psycopg.Connection[TupleRow],
    as_of: dt.datetime,
    prices: PriceBook,
    has_heat_recovery: set[str],
) -> list[Finding]:
    """heat_recovery per account; the fixed-speed half of efficiency_upgrade per asset."""
    accounts: dict[str, dict[str, float]] = {}
    findings = []
    for row in _rows(conn, _ENERGY, {"as_of": as_of}):
        if row["days"] < 14:
            continue
        totals = accounts.setdefault(row["account_id"], {"kwh": 0.0, "hours": 0.0, "n": 0})
        totals["kwh"] += row["energy_kwh"] or 0.0
        totals["hours"] += row["running_hours_per_day"] or 0.0
        totals["n"] += 1
        idle, load = row["idle_power_share"], row["running_load_pct"]
        if (
            idle is not None
            and load is not None
            and idle >= FIXED_SPEED_IDLE_SHARE
            and PART_LOAD[0] <= load <= PART_LOAD[1]
        ):
            findings.append(
                Finding(
                    row["account_id"],
                    SignalKind.EFFICIENCY_UPGRADE,
                    row["asset_id"],
                    min(1.0, 0.5 + (idle - FIXED_SPEED_IDLE_SHARE)),
                    prices.vsd_upgrade,
                    120,
                    (
                        f"{row['asset_id']} runs at {load:.0f}% average load and draws "
                        f"{idle * 100:.0f}% of its rated power at no load: a fixed-speed "
                        "machine at part load, a variable-speed drive would save energy",
                    ),
                    {"running_load_pct": round(load, 1), "idle_power_share": round(idle, 3)},
                )
            )
    for account_id, totals in sorted(accounts.items()):
        hours_per_day = totals["hours"] / max(totals["n"], 1)
        if (
            account_id in has_heat_recovery
            or totals["kwh"] < HEAT_RECOVERY_KWH_30D
            or hours_per_day < HEAT_RECOVERY_HOURS_PER_DAY
        ):
            continue
        heat = totals["kwh"] * HEAT_RECOVERY_SHARE
        worth = heat * float(prices.heat_price_per_kwh)
        findings.append(
            Finding(
                account_id,
                SignalKind.HEAT_RECOVERY,
                "",
                min(1.0, totals["kwh"] / (4 * HEAT_RECOVERY_KWH_30D)),
                prices.heat_recovery_module,
                90,
                (
                    f"{totals['kwh']:,.0f} kWh used in 30 days at {hours_per_day:.1f} running "
                    f"hours a day per machine, no heat-recovery module: about {heat:,.0f} kWh "
                    "of heat "
                    f"recoverable, worth {money(worth, 0)} a month",
                ),
                {
                    "energy_kwh_30d": round(totals["kwh"]),
                    "recoverable_kwh_30d": round(heat),
                    "running_hours_per_day": round(hours_per_day, 1),
                },
            )
        )
    return findings
