"""Remaining useful life (``signals.remaining_life``) by leave-engines-out cross-validation on
real run-to-failure data: RMSE against the truth capped at 125 running hours (the C-MAPSS
convention), and the empirical coverage and mean width of the 80 % conformal interval, per
fold and overall.

    .venv/bin/python bench/rul.py                       # cmapss and azure
    .venv/bin/python bench/rul.py --datasets cmapss --json

Each data set is loaded into its own fresh database as a user loads it (``basewatch db
migrate`` and the ``basewatch import`` commands of bench/backtest.py, the same options, run as
subprocesses), the rollups are refreshed, and the fleet's snapshots are computed by the
product's own path (``signals.failure_data.training_snapshots``, i.e. the one feature function
the failure model trains and scores with) every hour of every asset, with target
``remaining_life.target`` (running hours to the next failure, capped at 125; snapshots whose
target is not known are left out). The cut-off is the end of the data plus 125 hours, so the
last 125 hours of an engine's run to failure are labelled (its failure is on record).

Assets are split into ``FOLDS`` folds (a seeded shuffle); for each fold, ``remaining_life.fit``
is given the other folds' snapshots (it fits on 70 % of those assets and calibrates the interval
on the other 30 %, as in production) and predicts the held-out assets' snapshots. Figures on
every scored snapshot of the held-out assets (a C-MAPSS engine is scored from its 72nd cycle:
the features need a baseline), and on one snapshot per held-out asset drawn at random among
those with a failure within the cap ("one cut per engine", closer to how the published test set
is built: each test engine is truncated somewhere before its failure). The published figures
are on FD001's *test* split, which this project does not use; these are cross-validated on the
train split.

Data sets: cmapss (FD001 train, 100 engines; one cycle = one running hour) and azure (machines
1-12 hourly over 90 days with failures, replacements and error codes). Azure is also split in
time (``TIME_SPLIT``): fitted and calibrated on the snapshots of the first two thirds of the
span whose 125-hour target window closes before the cut, tested on every machine after it.
One configuration for both: the module's constants, no per-data-set option.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from core.db import drop_database, ensure_database, with_database
from signals import conformal, remaining_life
from signals.failure_data import Snapshots, training_snapshots
from signals.rollups import refresh_rollups

_ROOT = Path(__file__).resolve().parent.parent
FOLDS = 5
SEED = 0
STEP_H = 1
# data sets on one calendar (not every series starting at the same origin, as C-MAPSS's engines
# do) are also split in time: train before TIME_SPLIT_SHARE of the span, test after it
TIME_SPLIT = ("azure",)
TIME_SPLIT_SHARE = 2 / 3
PUBLISHED = {
    "cmapss": "FD001 test split, RUL capped at 125-130: CNN ~12.6, LSTM 16.14, "
    "random forest / gradient boosting ~16-18",
    "azure": "no published RUL figures (the guide classifies failure within 24 h)",
}
_CMAPSS_COLUMNS = "unit,cycle,op1,op2,op3," + ",".join(f"s{i}" for i in range(1, 22))


def _imports(name: str, data: Path) -> list[list[str]]:
    """The commands a user runs to load ``name`` (the same as bench/backtest.py's)."""
    if name == "cmapss":
        return [
            [
                "import", "telemetry", str(data / "cmapss-fd001/train_FD001.txt.gz"),
                "--delimiter", "whitespace", "--no-header", "--columns", _CMAPSS_COLUMNS,
                "--asset-column", "unit", "--asset-prefix", "engine-", "--time-column", "cycle",
                "--time-format", "cycles", "--time-origin", "2020-01-01T00:00:00Z",
                "--register-account", "nasa", "--series-end-event", "failure",
            ],
        ]  # fmt: skip
    if name == "azure":
        azure = data / "azure-pdm"
        common = ["--asset-column", "machineID", "--asset-prefix", "azure-m"]
        return [
            ["import", "telemetry", str(azure / "telemetry.csv.gz"), *common,
             "--register-account", "azure"],
            ["import", "events", str(azure / "failures.csv"), *common, "--kind", "failure",
             "--component-column", "failure"],
            ["import", "events", str(azure / "maint.csv"), *common, "--kind",
             "component_replaced", "--component-column", "comp"],
            ["import", "events", str(azure / "errors.csv"), *common, "--kind", "alarm",
             "--code-column", "errorID"],
        ]  # fmt: skip
    raise SystemExit(f"unknown data set {name!r}")


def _basewatch(url: str, arguments: list[str]) -> None:
    env = {**os.environ, "BASEWATCH_DATABASE_URL": url, "BASEWATCH_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "basewatch", *arguments],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"basewatch {' '.join(arguments[:3])} failed:\n{done.stderr[-2000:]}")


def snapshots(url: str) -> Snapshots:
    """Every hourly snapshot of every asset whose remaining-life target is known."""
    with psycopg.connect(url, autocommit=True) as conn:
        refresh_rollups(conn)
        row = conn.execute(
            "SELECT date_trunc('hour', min(time)), date_trunc('hour', max(time)) FROM telemetry"
        ).fetchone()
        if row is None or row[0] is None:
            raise SystemExit("no telemetry was imported")
        first, last = row
        assets = [str(a) for (a,) in conn.execute("SELECT asset_id FROM assets ORDER BY 1")]
        until = last + dt.timedelta(hours=remaining_life.CAP_RH + 1)
        return training_snapshots(
            conn,
            assets,
            first - dt.timedelta(hours=1),
            until,
            STEP_H,
            lambda o: remaining_life.target(o) is not None,
        )


def _figures(
    y: np.ndarray, central: np.ndarray, low: np.ndarray, high: np.ndarray
) -> dict[str, Any]:
    return {
        "snapshots": len(y),
        "rmse": round(float(np.sqrt(np.mean((central - y) ** 2))), 2) if len(y) else None,
        "coverage": round(conformal.coverage(y, low, high), 3) if len(y) else None,
        "mean_width": round(conformal.mean_width(low, high), 1) if len(y) else None,
    }


def cross_validate(data: Snapshots) -> dict[str, Any]:
    y = np.array([remaining_life.target(o) for o in data.outcomes], dtype=float)
    groups = np.array(data.assets)
    assets = sorted(set(data.assets))
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(assets))
    fold_of = {assets[i]: k % FOLDS for k, i in enumerate(order)}
    fold = np.array([fold_of[a] for a in data.assets])
    central = np.full(len(y), np.nan)
    low = np.full(len(y), np.nan)
    high = np.full(len(y), np.nan)
    folds = []
    for k in range(FOLDS):
        test = fold == k
        started = time.process_time()
        wall = time.monotonic()
        model = remaining_life.fit(
            data.x[~test], y[~test], list(groups[~test]), data.spec.categorical
        )
        if model is None:
            raise SystemExit(f"fold {k}: too few assets to fit and calibrate")
        fit_s = time.monotonic() - wall
        central[test], low[test], high[test] = model.predict(data.x[test])
        folds.append(
            {
                "fold": k,
                "assets": len(set(groups[test])),
                **_figures(y[test], central[test], low[test], high[test]),
                "q": round(model.q, 3),
                "calibration_assets": model.summary["calibration_assets"],
                "fit_seconds": round(fit_s, 1),
                "fit_cpu_seconds": round(time.process_time() - started, 1),
            }
        )
        print(f"  fold {k}: {folds[-1]}", file=sys.stderr, flush=True)
    # one cut per asset: a random snapshot among those with a failure within the cap
    cuts = []
    for asset in assets:
        mine = np.nonzero((groups == asset) & (y < remaining_life.CAP_RH))[0]
        if len(mine):
            cuts.append(int(rng.choice(mine)))
    one = np.array(cuts, dtype=int)
    near = y < remaining_life.CAP_RH
    return {
        "assets": len(assets),
        "failures": len(
            {
                (a, o.failure_at)
                for a, o in zip(data.assets, data.outcomes, strict=True)
                if o.failure_at
            }
        ),
        "features": len(data.spec.names),
        "folds": folds,
        "overall": _figures(y, central, low, high),
        "within_cap": _figures(y[near], central[near], low[near], high[near]),
        "one_cut_per_asset": _figures(y[one], central[one], low[one], high[one]),
        "constant_rmse": round(float(np.sqrt(np.mean((y - y.mean()) ** 2))), 2),
        "fit_seconds_total": round(sum(f["fit_seconds"] for f in folds), 1),
    }


def time_split(data: Snapshots, share: float = TIME_SPLIT_SHARE) -> dict[str, Any]:
    """Train on every asset's snapshots before the cut (``share`` of the snapshot span) whose
    target window closes before it, test on every asset's snapshots after it."""
    y = np.array([remaining_life.target(o) for o in data.outcomes], dtype=float)
    times = np.array([t.timestamp() for t in data.times])
    cut = times.min() + share * (times.max() - times.min())
    train = times + 3600 * (y + 1) <= cut
    test = times > cut
    wall = time.monotonic()
    model = remaining_life.fit(
        data.x[train], y[train], [data.assets[i] for i in np.nonzero(train)[0]],
        data.spec.categorical,
    )  # fmt: skip
    if model is None:
        raise SystemExit("time split: too few assets to fit and calibrate")
    central, low, high = model.predict(data.x[test])
    near = y[test] < remaining_life.CAP_RH
    return {
        "cut": dt.datetime.fromtimestamp(cut, dt.UTC).isoformat(),
        "train_snapshots": int(train.sum()),
        "q": round(model.q, 3),
        "calibration_assets": model.summary["calibration_assets"],
        "fit_seconds": round(time.monotonic() - wall, 1),
        "test": _figures(y[test], central, low, high),
        "test_within_cap": _figures(y[test][near], central[near], low[near], high[near]),
    }


def run_one(name: str, data: Path, server: str, keep: bool) -> dict[str, Any]:
    url = with_database(server, f"bw_bench_rul_{name}")
    drop_database(url)
    ensure_database(url)
    try:
        started = time.monotonic()
        _basewatch(url, ["db", "migrate"])
        for command in _imports(name, data):
            print(f"{name}: basewatch {' '.join(command[:2])} ...", file=sys.stderr, flush=True)
            _basewatch(url, command)
        load_s = time.monotonic() - started
        started = time.monotonic()
        print(f"{name}: snapshots ...", file=sys.stderr, flush=True)
        found = snapshots(url)
        features_s = time.monotonic() - started
    finally:
        if not keep:
            drop_database(url)
    print(f"{name}: {len(found.assets):,} snapshots; cross-validating ...", file=sys.stderr)
    result = cross_validate(found)
    if name in TIME_SPLIT:
        print(f"{name}: time split ...", file=sys.stderr, flush=True)
        result["time_split"] = time_split(found)
    return {
        "dataset": name,
        "load_seconds": round(load_s, 1),
        "feature_seconds": round(features_s, 1),
        "level": remaining_life.LEVEL,
        "cap_running_hours": remaining_life.CAP_RH,
        **result,
    }


def _row(label: str, f: dict[str, Any]) -> str:
    def num(v: Any, spec: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    return (
        f"  {label:<22} snapshots {f['snapshots']:>6,}  RMSE {num(f['rmse'], '6.2f')}  "
        f"coverage {num(f['coverage'], '5.1%')}  mean width {num(f['mean_width'], '5.1f')} h"
    )


def _text(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"{r['dataset']}: {r['assets']} assets, {r['failures']} failures, "
            f"{r['features']} features, {FOLDS}-fold leave-assets-out, "
            f"{r['level']:.0%} intervals, cap {r['cap_running_hours']:g} h; loaded in "
            f"{r['load_seconds']} s, features in {r['feature_seconds']} s, "
            f"fits {r['fit_seconds_total']} s in all"
        )
        lines.append(f"  published: {PUBLISHED[r['dataset']]}")
        for f in r["folds"]:
            lines.append(
                _row(f"fold {f['fold']} ({f['assets']} assets)", f)
                + f"  q {f['q']}  fit {f['fit_seconds']} s"
            )
        lines.append(_row("overall", r["overall"]))
        lines.append(_row("true RUL < cap", r["within_cap"]))
        lines.append(_row("one cut per asset", r["one_cut_per_asset"]))
        lines.append(f"  constant (mean) RMSE {r['constant_rmse']}")
        if "time_split" in r:
            ts = r["time_split"]
            lines.append(
                f"  time split at {ts['cut'][:16]}: trained on {ts['train_snapshots']:,} "
                f"snapshots, q {ts['q']}, {ts['calibration_assets']} calibration assets"
            )
            lines.append(_row("after the cut", ts["test"]))
            lines.append(_row("after, true RUL < cap", ts["test_within_cap"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="cmapss,azure")
    parser.add_argument("--data", type=Path, default=_ROOT.parent / "shared" / "data")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = os.environ.get(
        "BASEWATCH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    results = []
    for name in (n for n in args.datasets.split(",") if n):
        results.append(run_one(name, args.data, server, args.keep))
        print(_text(results[-1:]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    else:
        print(_text(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
