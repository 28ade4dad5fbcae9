"""Benchmark of the nrr package: MRR ledger rebuild, movements and the monthly report.

Generates, in SQL (generate_series), ``--accounts`` accounts × ``--months`` months × 3 product
lines (maintenance: fixed fee billed monthly, quarterly or yearly; air as a service: metered
with a monthly minimum, invoiced nine months in ten, the rest billed from telemetry; monitoring:
add-on), in EUR, GBP and USD, with late starts, upgrades, downgrades, churn and returns, invoice
lines (metered, fixed, add-on, tax, one-off) and monthly rates; telemetry for the first
``--telemetry-accounts`` accounts. Then times the full ledger rebuild (ledger + movements), the
movements alone, an incremental rebuild of the last month, ``nrr show``'s figures and the
monthly report (HTML + CSV). Prints figures (``--json``: one JSON document); never fails on a
target.

    .venv/bin/python bench/nrr.py                      # 20,000 accounts × 36 months
    .venv/bin/python bench/nrr.py --accounts 2000 --json
"""

# Run as a script, this folder comes first on sys.path and bench/nrr.py would hide the ``nrr``
# package, so the folder is dropped before the project is imported.
# ruff: noqa: E402

from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
_ROOT = _BENCH_DIR.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse
import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from core.db import drop_database, ensure_database, with_database
from core.migrate import migrate
from nrr.bridge import bridges, rebuild_movements
from nrr.headline import headline
from nrr.ledger import rebuild
from nrr.months import add_months, format_month
from nrr.report import build_report, write_report

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


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = args.database_url
    url = with_database(server, f"bw_bench_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    last = add_months(FIRST_MONTH, args.months - 1)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, ("core", "ingest", "nrr"), "off")
            # this machine's speed now (shared CPUs vary): a fixed single-core SQL workload
            _, reference_s = _timed(
                lambda: conn.execute("SELECT sum(i::numeric) FROM generate_series(1, 3000000) i")
            )
            print("generating ...", file=sys.stderr, flush=True)
            _, generate_s = _timed(
                lambda: generate(conn, args.accounts, args.months, args.telemetry_accounts)
            )
            counts = {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                for table in ("accounts", "contracts", "invoice_lines", "fx_rates", "telemetry")
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
            figures, show_s = _timed(lambda: headline(conn, "EUR", last))
            with tempfile.TemporaryDirectory() as folder:
                report, report_s = _timed(
                    lambda: write_report(build_report(conn, "EUR", last), Path(folder))
                )
                report_bytes = report.html.stat().st_size
            reconciled = all(
                b.reconciles() for b in bridges(conn, add_months(FIRST_MONTH, 1), last)
            )
    finally:
        if args.keep:
            print(f"kept database {url}", file=sys.stderr)
        else:
            drop_database(url)
    return {
        "accounts": args.accounts,
        "months": args.months,
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
            "report": round(report_s, 2),
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
    }


def _text(document: dict[str, Any]) -> str:
    s = document["seconds"]
    rows = document["rows"]
    head = document["headline"]
    return "\n".join(
        [
            f"nrr bench: {document['accounts']:,} accounts × {document['months']} months × 3 "
            f"product lines ({rows['contracts']:,} contracts, {rows['invoice_lines']:,} invoice "
            f"lines, {rows['telemetry']:,} telemetry rows), generated in {s['generate']} s",
            f"  CPU reference (sum of 3M numerics) {s['cpu_reference']:.2f} s",
            f"  ledger rebuild (full)   {s['rebuild_full']:>7.2f} s  (target < "
            f"{TARGET_REBUILD_S:.0f} s): {document['ledger_rows']:,} ledger lines, "
            f"{document['movement_rows']:,} movements",
            f"    of which: metered months {s['rebuild_metered_months']:.2f} s, telemetry "
            f"usage {s['rebuild_telemetry_usage']:.2f} s, ledger lines "
            f"{s['rebuild_ledger_lines']:.2f} s, movements {s['rebuild_movements']:.2f} s",
            f"  movements alone again   {s['movements_only']:>7.2f} s",
            f"  rebuild last month      {s['rebuild_last_month']:>7.2f} s",
            f"  nrr show figures        {s['show']:>7.2f} s",
            f"  monthly report          {s['report']:>7.2f} s  (target < {TARGET_REPORT_S:.0f} s;"
            f" HTML {document['report_html_bytes']:,} bytes + CSV)",
            f"  metered contract months: {document['metered_months_from_invoices']:,} from "
            "invoices, "
            f"{document['metered_months_from_telemetry']:,} from telemetry; bridge reconciles "
            f"every month: {document['bridge_reconciles_every_month']}",
            f"  {head['month']}: MRR {head['mrr_total']} EUR, T12M NRR {head['t12m_nrr_pct']} %, "
            f"GRR {head['t12m_grr_pct']} % (cohort {head['t12m_cohort_size']:,})",
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
    args = parser.parse_args()
    document = run(args)
    print(json.dumps(document, indent=2) if args.json else _text(document))


if __name__ == "__main__":
    main()
