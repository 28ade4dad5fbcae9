"""Benchmark of the nrr package: MRR ledger rebuild, movements and the monthly report.

Generates, in SQL (generate_series), ``--accounts`` accounts × ``--months`` months × 3 product
lines (maintenance: fixed fee billed monthly, quarterly or yearly; air as a service: metered
with a monthly minimum, invoiced nine months in ten, the rest billed from telemetry; monitoring:
add-on), in EUR, GBP and USD, with late starts, upgrades, downgrades, churn and returns, invoice
lines (metered, fixed, add-on, tax, one-off) and monthly rates; telemetry for the first
``--telemetry-accounts`` accounts; signals' alerts (one expansion alert per 2 accounts and one
risk alert per 4, opened at dates spread over the months, half of them acknowledged, the rest
open, won, lost, dismissed or expired). Then times the full ledger rebuild (ledger +
movements), the movements alone, an incremental rebuild of the last month, ``nrr show``'s
figures, the attribution alone and the monthly report (HTML + CSV), and the report's parts.
Prints figures (``--json``: one JSON document); never fails on a target.

    .venv/bin/python bench/nrr_rebuild.py                      # 20,000 accounts × 36 months
    .venv/bin/python bench/nrr_rebuild.py --accounts 2000 --json
    .venv/bin/python bench/nrr_rebuild.py --keep              # keep the generated database
    .venv/bin/python bench/nrr_rebuild.py --reuse URL         # time a kept database again
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from core.db import drop_database, ensure_database, with_database
from core.migrate import migrate
from core.months import add_months, format_month
from nrr.attribution import attribution
from nrr.bridge import bridges, rebuild_movements
from nrr.cohorts import cohorts
from nrr.figures import mrr_totals, reconciliation, top_movers
from nrr.headline import headline
from nrr.ledger import rebuild
from nrr.report import build_report, write_report
from nrr.retention import DIMENSIONS, breakdown, month_over_month, trailing_series

TARGET_REBUILD_S = 20.0
TARGET_REPORT_S = 5.0
FIRST_MONTH = dt.date(2022, 1, 1)
T = TypeVar("T")

_GENERATE = [
    "SELECT setseed(0.42)",
    "INSERT INTO csms (csm_id, name) SELECT 'csm-' || i, 'CSM ' || i FROM generate_series(1, 25) i",
    """
    INSERT INTO accounts (account_id, name, industry, region, csm_id)
    SELECT 'b-' || i, 'Bench account ' || i,
           (ARRAY['food', 'auto', 'pharma', 'metal', 'chemicals'])[1 + i %% 5],
           (ARRAY['north', 'south', 'east', 'west'])[1 + (i / 5) %% 4],
           'csm-' || (1 + i %% 25)
    FROM generate_series(1, %(accounts)s) i
    """,
    "INSERT INTO assets (asset_id, account_id)"
    " SELECT account_id || '-c1', account_id FROM accounts",
    # one row per account: its currency, first month, churn and return, upgrade, size
    """
    CREATE TEMP TABLE bench_plan AS
    SELECT account_id,
           CASE WHEN r1 < 0.6 THEN 'EUR' WHEN r1 < 0.8 THEN 'GBP' ELSE 'USD' END AS currency,
           CASE WHEN r2 < 0.7 THEN 0 ELSE 1 + floor(r3 * 24)::int END AS start_m,
           r4 < 0.12 AS churns, r5 < 0.4 AS returns, r6 AS change,
           1 + floor(r7 * 8)::int AS machines,
           (ARRAY['month', 'month', 'quarter', 'year'])[1 + floor(r8 * 4)::int] AS billing
    FROM (SELECT account_id, random() r1, random() r2, random() r3, random() r4, random() r5,
                 random() r6, random() r7, random() r8 FROM accounts) AS draws
    """,
    """
    CREATE TEMP TABLE bench_contracts AS
    WITH plan AS (
        SELECT p.*,
               CASE WHEN churns THEN start_m + 4 + floor(random() * (%(months)s - start_m))::int
               END AS churn_m,
               start_m + 2 + floor(random() * 20)::int AS change_m
        FROM bench_plan p
    )
    -- maintenance until an upgrade / downgrade (or churn), then the changed fee
    SELECT account_id || '-maint' AS contract_id, account_id, 'maintenance' AS product_line,
           'fixed' AS kind, currency, start_m,
           CASE WHEN change < 0.25 THEN least(change_m, coalesce(churn_m, change_m)) ELSE churn_m
           END AS end_m,
           billing, 180 * machines AS monthly,
           NULL::numeric AS unit_price, NULL::numeric AS minimum,
           2 AS line_no
    FROM plan
    UNION ALL
    SELECT account_id || '-maint2', account_id, 'maintenance', 'fixed', currency, change_m,
           churn_m, 'month',
           round(180 * machines * (CASE WHEN change < 0.18 THEN 1.5 ELSE 0.6 END)),
           NULL, NULL, 2
    FROM plan WHERE change < 0.25 AND change_m < coalesce(churn_m, %(months)s)
    UNION ALL
    SELECT account_id || '-aas', account_id, 'air_as_a_service', 'metered', currency, start_m,
           churn_m, 'month', NULL, round((0.015 + random() * 0.01)::numeric, 4),
           (50 + floor(random() * 250))::numeric, 1
    FROM plan
    UNION ALL
    SELECT account_id || '-mon', account_id, 'monitoring', 'addon', currency, start_m, churn_m,
           'month', 35 * machines, NULL, NULL, 3
    FROM plan
    UNION ALL  -- the returns: maintenance again, a few months after churning
    SELECT account_id || '-back', account_id, 'maintenance', 'fixed', currency,
           churn_m + 2 + floor(random() * 4)::int, NULL, 'month', 150 * machines, NULL, NULL, 2
    FROM plan WHERE churns AND returns AND churn_m + 2 < %(months)s
    """,
    """
    INSERT INTO contracts (contract_id, account_id, product_line, kind, currency, start_date,
                           end_date, billing_period, fee, unit_price, unit, monthly_minimum,
                           renewal, notice_days)
    SELECT contract_id, account_id, product_line, kind, currency,
           (%(first)s::date + start_m * interval '1 month')::date,
           CASE WHEN end_m IS NOT NULL
                THEN (%(first)s::date + end_m * interval '1 month' - interval '1 day')::date END,
           billing,
           CASE WHEN kind <> 'metered'
                THEN monthly * CASE billing WHEN 'quarter' THEN 3 WHEN 'year' THEN 12 ELSE 1 END
           END,
           unit_price, CASE WHEN kind = 'metered' THEN 'm3' END, minimum, 'auto', 90
    FROM bench_contracts
    """,
    """
    CREATE TEMP TABLE bench_contract_months AS
    SELECT c.*, m, (%(first)s::date + m * interval '1 month')::date AS service_month
    FROM bench_contracts c
    CROSS JOIN LATERAL generate_series(c.start_m, coalesce(c.end_m, %(months)s) - 1) AS m
    WHERE m < %(months)s
    """,
    # metered lines (nine months in ten), fixed lines in billing months, add-on lines
    """
    INSERT INTO invoice_lines (invoice_id, line_no, account_id, contract_id, period, issue_date,
                               amount, currency, recurring, kind, quantity, unit, description)
    SELECT 'INV-' || account_id || '-' || to_char(service_month, 'YYYYMM'), line_no,
           account_id, contract_id, service_month,
           (service_month + interval '1 month 4 days')::date,
           CASE WHEN kind = 'metered' THEN greatest(round(volume * unit_price, 2), minimum)
                ELSE monthly * period_months END,
           currency, true, kind,
           CASE WHEN kind = 'metered' THEN volume END, CASE WHEN kind = 'metered' THEN 'm3' END,
           product_line
    FROM (
        SELECT cm.*,
               CASE billing WHEN 'quarter' THEN 3 WHEN 'year' THEN 12 ELSE 1 END AS period_months,
               round((3000 + (hashtext(account_id) & 65535) * 0.6) * (1 + 0.01 * m)
                     * (0.85 + random() * 0.3))::numeric AS volume
        FROM bench_contract_months cm
    ) AS lines
    WHERE (kind = 'metered' AND random() < 0.9)
       OR (kind <> 'metered' AND (m - start_m) %% period_months = 0)
    """,
    # tax on each invoice, and a one-off in one invoice in twenty
    """
    INSERT INTO invoice_lines (invoice_id, line_no, account_id, period, issue_date, amount,
                               currency, recurring, kind, description)
    SELECT invoice_id, 4, min(account_id), min(period), min(issue_date),
           round(sum(amount) * 0.2, 2), min(currency), false, 'tax', 'VAT 20%%'
    FROM invoice_lines GROUP BY invoice_id
    """,
    """
    INSERT INTO invoice_lines (invoice_id, line_no, account_id, period, issue_date, amount,
                               currency, recurring, kind, description)
    SELECT invoice_id, 5, account_id, period, issue_date,
           round((150 + random() * 1650)::numeric, 2),
           currency, false, 'one_off', 'spare parts'
    FROM invoice_lines WHERE line_no = 4 AND random() < 0.05
    """,
    """
    INSERT INTO fx_rates (month, currency, rate)
    SELECT (%(first)s::date + m * interval '1 month')::date, currency,
           round((base * (1 + 0.03 * sin(m / 4.0) + 0.01 * random()))::numeric, 6)
    FROM generate_series(0, %(months)s - 1) m,
         (VALUES ('GBP', 1.17), ('USD', 0.92)) AS rates(currency, base)
    UNION ALL
    SELECT (%(first)s::date + m * interval '1 month')::date, 'EUR', 1
    FROM generate_series(0, %(months)s - 1) m
    """,
    # telemetry: two readings a day (flow for 100 minutes) on the first accounts' machines
    """
    INSERT INTO telemetry (asset_id, time, received_at, metrics)
    SELECT a.asset_id, d + reading * interval '100 minutes', d,
           jsonb_build_object('flow_m3_min', CASE WHEN reading = 0 THEN 1 + random() * 3 ELSE 0 END)
    FROM (SELECT asset_id FROM assets ORDER BY asset_id LIMIT %(telemetry_accounts)s) a,
         generate_series(%(first)s::timestamptz,
                         %(first)s::timestamptz + (%(months)s * interval '1 month')
                             - interval '1 day',
                         interval '1 day') d,
         generate_series(0, 1) reading
    """,
    # signals' alerts: an expansion alert on every second account, a risk alert on every
    # fourth, opened on a day spread over the months; half acknowledged (some of those later
    # won or lost), the rest open, won, lost, dismissed or expired
    """
    INSERT INTO alerts (account_id, kind, family, subject, status, score, horizon_days,
                        reasons, opened_at, updated_at, last_seen_at, due_at,
                        acknowledged_at, closed_at)
    SELECT account_id, kind, family, '', status, 0.7, 90, '[]'::jsonb, opened_at, opened_at,
           opened_at, opened_at + interval '14 days',
           CASE WHEN acknowledged THEN opened_at + ack_days * interval '1 day' END,
           CASE WHEN status NOT IN ('open', 'acknowledged')
                THEN opened_at + (ack_days + close_days) * interval '1 day' END
    FROM (
        SELECT account_id, kind, family, opened_at, acknowledged, ack_days, close_days,
               CASE WHEN acknowledged
                    THEN (ARRAY['acknowledged', 'acknowledged', 'won', 'lost'])[1 + i %% 4]
                    ELSE (ARRAY['open', 'won', 'lost', 'dismissed', 'expired'])[1 + i %% 5]
               END AS status
        FROM (
            SELECT a.account_id, k.kind, k.family, i,
                   %(first)s::timestamptz
                       + random() * (%(months)s * interval '1 month' - interval '1 day')
                       AS opened_at,
                   random() < 0.5 AS acknowledged,
                   1 + floor(random() * 20)::int AS ack_days,
                   5 + floor(random() * 60)::int AS close_days
            FROM (SELECT account_id, row_number() OVER (ORDER BY account_id) AS i
                  FROM accounts) a
            JOIN (VALUES ('expansion_ready', 'expansion', 2),
                         ('churn_risk', 'risk', 4)) AS k(kind, family, every)
              ON a.i %% k.every = 0
        ) AS drawn
    ) AS alerts_to_be
    """,
    "ANALYZE",
    "CHECKPOINT",  # write the generated pages out now, not during the timed rebuild
]


def _timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def generate(conn: psycopg.Connection[Any], accounts: int, months: int, telemetry: int) -> None:
    params = {
        "accounts": accounts,
        "months": months,
        "first": FIRST_MONTH,
        "telemetry_accounts": telemetry,
    }
    for statement in _GENERATE:
        conn.execute(statement, params)


def _report_parts(conn: psycopg.Connection[Any], last: dt.date) -> dict[str, float]:
    """Seconds of each query the monthly report runs (``build_report``'s steps, one by one)."""
    first = add_months(last, -23)
    steps: dict[str, Callable[[], object]] = {
        "mrr_totals": lambda: mrr_totals(conn, first, last),
        "month_over_month": lambda: month_over_month(conn, first, last),
        "trailing_12_series": lambda: trailing_series(conn, "EUR", first, last, 12),
        "trailing_3": lambda: trailing_series(conn, "EUR", last, last, 3),
        "cohorts": lambda: cohorts(conn, first, last),
        "top_movers": lambda: top_movers(conn, last, 10),
        "breakdowns": lambda: [breakdown(conn, "EUR", last, d) for d in DIMENSIONS],
        "reconciliation": lambda: reconciliation(conn, last, "EUR"),
    }
    return {name: _timed(step)[1] for name, step in steps.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.reuse or with_database(args.database_url, f"bw_bench_{uuid.uuid4().hex[:8]}")
    last = add_months(FIRST_MONTH, args.months - 1)
    load = [round(x, 2) for x in os.getloadavg()]
    try:
        if not args.reuse:
            ensure_database(url)
        with psycopg.connect(url, autocommit=True) as conn:
            # this machine's speed now (shared CPUs vary): a fixed single-core SQL workload
            _, reference_s = _timed(
                lambda: conn.execute("SELECT sum(i::numeric) FROM generate_series(1, 3000000) i")
            )
            generate_s = 0.0
            if not args.reuse:
                migrate(conn, ("core", "ingest", "signals", "nrr"), "off")
                print("generating ...", file=sys.stderr, flush=True)
                _, generate_s = _timed(
                    lambda: generate(conn, args.accounts, args.months, args.telemetry_accounts)
                )
            counts = {
                table: conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                ).fetchone()[0]  # type: ignore[index]
                for table in (
                    "accounts",
                    "contracts",
                    "invoice_lines",
                    "fx_rates",
                    "telemetry",
                    "alerts",
                )
            }
            print("rebuilding ...", file=sys.stderr, flush=True)
            result, rebuild_s = _timed(lambda: rebuild(conn, "EUR", through=last, full=True))
            conn.execute("ANALYZE mrr_ledger")
            conn.execute("ANALYZE mrr_movements")

            def movements_only() -> int:
                with conn.transaction(force_rollback=True):
                    conn.execute("DELETE FROM mrr_movements")
                    return rebuild_movements(conn, "EUR", add_months(FIRST_MONTH, 1), last)

            _, movements_s = _timed(movements_only)
            conn.execute("UPDATE mrr_ledger_state SET stale_since = %s", (last,))
            _, incremental_s = _timed(lambda: rebuild(conn, "EUR", through=last))
            print("reporting ...", file=sys.stderr, flush=True)
            figures, show_s = _timed(lambda: headline(conn, "EUR", last))
            signals, attribution_s = _timed(lambda: attribution(conn, "EUR", last))
            with tempfile.TemporaryDirectory() as folder:
                report, report_s = _timed(
                    lambda: write_report(build_report(conn, "EUR", last), Path(folder))
                )
                report_bytes = report.html.stat().st_size
            parts = _report_parts(conn, last)
            reconciled = all(
                b.reconciles() for b in bridges(conn, add_months(FIRST_MONTH, 1), last)
            )
    finally:
        if args.keep or args.reuse:
            print(f"kept database {url}", file=sys.stderr)
        else:
            drop_database(url)
    trailing_window = signals.trailing
    return {
        "accounts": args.accounts,
        "months": args.months,
        "load_average": {"before": load, "after": [round(x, 2) for x in os.getloadavg()]},
        "rows": counts,
        "ledger_rows": result.ledger_rows,
        "movement_rows": result.movement_rows,
        "metered_months_from_invoices": result.metered_from_invoices,
        "metered_months_from_telemetry": result.metered_from_telemetry,
        "bridge_reconciles_every_month": reconciled,
        "seconds": {
            "cpu_reference": round(reference_s, 2),
            "generate": round(generate_s, 2),
            "rebuild_full": round(rebuild_s, 2),
            **{f"rebuild_{k}": round(v, 2) for k, v in result.phases.items()},
            "movements_only": round(movements_s, 2),
            "rebuild_last_month": round(incremental_s, 2),
            "show": round(show_s, 2),
            "attribution": round(attribution_s, 2),
            "report": round(report_s, 2),
            **{f"report_{k}": round(v, 2) for k, v in parts.items()},
        },
        "targets_seconds": {"rebuild_full": TARGET_REBUILD_S, "report": TARGET_REPORT_S},
        "report_html_bytes": report_bytes,
        "headline": {
            "month": format_month(last),
            "mrr_total": str(figures.mrr.total),
            "t12m_nrr_pct": figures.document()["trailing_12_months"]["nrr_pct"],
            "t12m_grr_pct": figures.document()["trailing_12_months"]["grr_pct"],
            "t12m_cohort_size": figures.document()["trailing_12_months"]["cohort_size"],
        },
        "attribution": {
            "period": trailing_window.label,
            "status": trailing_window.status,
            "expansion": str(trailing_window.expansion),
            "influenced_expansion": str(trailing_window.influenced_expansion),
            "influenced_accounts": trailing_window.influenced_accounts,
            "churn": str(trailing_window.churn),
            "flagged_churn": str(trailing_window.flagged_churn),
            "flagged_accounts": trailing_window.flagged_accounts,
            "nrr_without_influenced_pct": trailing_window.document()["nrr_without_influenced_pct"],
        },
    }


def _text(document: dict[str, Any]) -> str:
    s = document["seconds"]
    rows = document["rows"]
    head = document["headline"]
    load = document["load_average"]
    signals = document["attribution"]
    parts = ", ".join(
        f"{k.removeprefix('report_')} {v:.2f}" for k, v in s.items() if k.startswith("report_")
    )
    return "\n".join(
        [
            f"nrr bench: {document['accounts']:,} accounts × {document['months']} months × 3 "
            f"product lines ({rows['contracts']:,} contracts, {rows['invoice_lines']:,} invoice "
            f"lines, {rows['telemetry']:,} telemetry rows), generated in {s['generate']} s",
            f"  CPU reference (sum of 3M numerics) {s['cpu_reference']:.2f} s; load average "
            f"{' '.join(map(str, load['before']))} before, "
            f"{' '.join(map(str, load['after']))} after",
            f"  ledger rebuild (full)   {s['rebuild_full']:>7.2f} s  (target < "
            f"{TARGET_REBUILD_S:.0f} s): {document['ledger_rows']:,} ledger lines, "
            f"{document['movement_rows']:,} movements",
            f"    of which: metered months {s['rebuild_metered_months']:.2f} s, telemetry "
            f"usage {s['rebuild_telemetry_usage']:.2f} s, ledger lines "
            f"{s['rebuild_ledger_lines']:.2f} s, movements {s['rebuild_movements']:.2f} s",
            f"  movements alone again   {s['movements_only']:>7.2f} s",
            f"  rebuild last month      {s['rebuild_last_month']:>7.2f} s",
            f"  nrr show figures        {s['show']:>7.2f} s",
            f"  attribution alone       {s['attribution']:>7.2f} s  ({rows['alerts']:,} alerts)",
            f"  monthly report          {s['report']:>7.2f} s  (target < {TARGET_REPORT_S:.0f} s;"
            f" HTML {document['report_html_bytes']:,} bytes + CSV)",
            f"    its parts besides nrr show's figures: {parts} s",
            f"  metered contract months: {document['metered_months_from_invoices']:,} from "
            "invoices, "
            f"{document['metered_months_from_telemetry']:,} from telemetry; bridge reconciles "
            f"every month: {document['bridge_reconciles_every_month']}",
            f"  {head['month']}: MRR {head['mrr_total']} EUR, T12M NRR {head['t12m_nrr_pct']} %, "
            f"GRR {head['t12m_grr_pct']} % (cohort {head['t12m_cohort_size']:,})",
            f"  attribution {signals['period']} ({signals['status']}): expansion "
            f"{signals['expansion']}, influenced {signals['influenced_expansion']} "
            f"({signals['influenced_accounts']} accounts); churn {signals['churn']}, flagged "
            f"{signals['flagged_churn']} ({signals['flagged_accounts']}); NRR without "
            f"{signals['nrr_without_influenced_pct']} %",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--telemetry-accounts", type=int, default=500)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--keep", action="store_true", help="keep the database (to inspect it)")
    parser.add_argument(
        "--reuse", metavar="URL", help="time a database kept by --keep again (not dropped)"
    )
    args = parser.parse_args()
    document = run(args)
    print(json.dumps(document, indent=2) if args.json else _text(document))


if __name__ == "__main__":
    main()
