"""Benchmark of ``basewatch import telemetry``: rows/s and peak memory on a generated CSV.

Generates a wide CSV (time, asset_id and the 15 metrics of the reference compressor) and/or a
long CSV (time, asset_id, metric, value) of ``--rows`` rows, imports each into a fresh database
with the real command (a child process), then imports it again (idempotence: nothing added), and
prints rows/s, values/s and the importer's peak RSS (VmHWM). Prints figures; never fails on a
target.

    .venv/bin/python bench/import_csv.py --rows 2000000 --format both
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from basewatch.wiring import PACKAGES
from core.db import drop_database, ensure_database, with_database
from core.migrate import migrate
from simulator.physics import METRICS

TARGET_ROWS_PER_S = 150_000
TARGET_RSS_MB = 200


def generate(path: Path, rows: int, assets: int, layout: str) -> int:
    """Write the file; returns its size in bytes."""
    rng = random.Random(1)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with path.open("w") as handle:
        if layout == "wide":
            handle.write("time,asset_id," + ",".join(METRICS) + "\n")
            for i in range(rows):
                when = start + dt.timedelta(minutes=i // assets)
                values = ",".join(f"{rng.uniform(0, 100):.3f}" for _ in METRICS)
                handle.write(f"{when:%Y-%m-%dT%H:%M:%SZ},bench-{i % assets},{values}\n")
        else:
            handle.write("time,asset_id,metric,value\n")
            per_reading = len(METRICS)
            for i in range(rows):
                reading, metric = divmod(i, per_reading)
                when = start + dt.timedelta(minutes=reading // assets)
                handle.write(
                    f"{when:%Y-%m-%dT%H:%M:%SZ},bench-{reading % assets},"
                    f"{METRICS[metric]},{rng.uniform(0, 100):.3f}\n"
                )
    return path.stat().st_size


def run_import(url: str, path: Path, layout: str) -> dict[str, Any]:
    env = dict(os.environ, BASEWATCH_DATABASE_URL=url, BASEWATCH_LOG_LEVEL="WARNING")
    command = [
        sys.executable,
        "-m",
        "basewatch",
        "import",
        "telemetry",
        str(path),
        "--asset-column",
        "asset_id",
        "--register-account",
        "bench",
        "--format",
        layout,
        "--json",
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
    peak_kb = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.1)
    output = process.stdout.read() if process.stdout else b""
    if process.returncode != 0:
        raise SystemExit(f"import failed with exit code {process.returncode}")
    result: dict[str, Any] = json.loads(output)
    result["wall_seconds"] = round(time.monotonic() - started, 2)
    result["peak_rss_mb"] = round(peak_kb / 1024, 1)
    return result


def bench(server: str, rows: int, assets: int, layout: str, folder: Path) -> dict[str, Any]:
    path = folder / f"bench-{layout}.csv"
    print(f"generating {rows:,} {layout} rows ...", file=sys.stderr, flush=True)
    size = generate(path, rows, assets, layout)
    url = with_database(server, f"bw_bench_import_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, PACKAGES, "auto")
        print(f"importing {size / 1e6:,.0f} MB ...", file=sys.stderr, flush=True)
        first = run_import(url, path, layout)
        print("importing again (idempotence) ...", file=sys.stderr, flush=True)
        second = run_import(url, path, layout)
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    finally:
        drop_database(url)
        path.unlink(missing_ok=True)
    return {
        "layout": layout,
        "rows": rows,
        "file_mb": round(size / 1e6, 1),
        "first": first,
        "again": second,
        "stored_readings": stored[0] if stored else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--format", choices=("wide", "long", "both"), default="both")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    layouts = ("wide", "long") if args.format == "both" else (args.format,)
    with tempfile.TemporaryDirectory(prefix="bw-bench-") as folder:
        results = [
            bench(args.database_url, args.rows, args.assets, layout, Path(folder))
            for layout in layouts
        ]
    if args.json:
        print(
            json.dumps(
                {
                    "results": results,
                    "targets": {"rows_per_second": TARGET_ROWS_PER_S, "peak_rss_mb": TARGET_RSS_MB},
                },
                indent=2,
            )
        )
        return
    print(f"\nimport telemetry (targets: >= {TARGET_ROWS_PER_S:,} rows/s, < {TARGET_RSS_MB} MB)")
    print("layout  rows        file MB  rows/s    values/s   peak RSS MB  again rows/s  stored")
    for r in results:
        f, a = r["first"], r["again"]
        print(
            f"{r['layout']:<7} {r['rows']:>10,} {r['file_mb']:>8} {f['rows_per_second']:>8,}"
            f" {round(f['values'] / f['seconds']):>10,} {f['peak_rss_mb']:>12}"
            f" {a['rows_per_second']:>13,}  {r['stored_readings']:,}"
        )


if __name__ == "__main__":
    main()
