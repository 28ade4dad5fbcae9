"""Running the fleet simulator and writing what it produces.

``simulate`` yields each account's hourly history (``simulator.physics``); ``publish`` sends it
over MQTT as a device gateway uploading its buffered history would (one message per asset and
day, a list of hourly readings, events on the event topic); ``write_files`` writes the same as
CSV for ``basewatch import``; ``ground_truth`` lists what really happened, for scoring signals
(``simulator.truth`` stores it in the database).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from ingest.topics import device_topic
from simulator.commercial import (
    CONTRACT_COLUMNS,
    FX_COLUMNS,
    INVOICE_COLUMNS,
    contracts_for,
    fx_rates,
    invoices_for,
)
from simulator.fleet import Fleet, month_start
from simulator.physics import METRICS, AccountHistory, AssetHistory, SimEvent, simulate_account

# the columns of ground_truth.csv; the last four (failures only) came with issue 13: a reader
# of an older file finds none of them (``simulator.truth.read_ground_truth_csv``)
GROUND_TRUTH_COLUMNS = (
    "kind",
    "account_id",
    "asset_id",
    "component",
    "time",
    "value",
    "detail",
    "mode",
    "foreseeable",
    "lead_hours",
    "lead_running_hours",
)
FAILURE_TRUTH_COLUMNS = GROUND_TRUTH_COLUMNS[7:]
EVENT_COLUMNS = ("time", "asset_id", "kind", "component", "code", "service_order")
Sender = Callable[[str, bytes], None]


@dataclass
class SimulationOutput:
    """Counts and the commercial and ground-truth records of one run."""

    readings: int = 0
    events: int = 0
    contracts: list[dict[str, object]] = field(default_factory=list)
    invoices: list[dict[str, object]] = field(default_factory=list)
    fx: list[dict[str, object]] = field(default_factory=list)
    truth: list[dict[str, object]] = field(default_factory=list)


def simulate(fleet: Fleet) -> Iterator[AccountHistory]:
    """Each account's history, one account at a time (bounded memory)."""
    for account in fleet.accounts:
        yield simulate_account(fleet, account)


def _iso(epoch_s: int) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reading_batches(history: AssetHistory, hours: int = 24) -> Iterator[list[dict[str, Any]]]:
    """The asset's reported readings in lists of up to ``hours`` consecutive hours."""
    columns = [history.metrics[name] for name in METRICS]
    indexes = history.reporting.nonzero()[0]
    for begin in range(0, len(indexes), hours):
        batch = []
        for i in indexes[begin : begin + hours]:
            metrics = {name: float(col[i]) for name, col in zip(METRICS, columns, strict=True)}
            batch.append({"ts": _iso(int(history.epoch_s[i])), "metrics": metrics})
        yield batch


def _event_payload(event: SimEvent) -> dict[str, Any]:
    payload: dict[str, Any] = {"ts": event.time.strftime("%Y-%m-%dT%H:%M:%SZ"), "kind": event.kind}
    if event.component:
        payload["component"] = event.component
    if event.code:
        payload["code"] = event.code
    if event.service_order:
        payload["service_order"] = event.service_order
    return payload


AssetSink = Callable[[AssetHistory], None]


def run(
    fleet: Fleet,
    sink: AssetSink | None,
    *,
    reporting_currency: str = "EUR",
    progress: Callable[[str], None] | None = None,
) -> SimulationOutput:
    """Simulate the fleet account by account, hand every asset's history to ``sink`` (publish
    or write it), and collect contracts, invoices, exchange rates and ground truth."""
    out = SimulationOutput(fx=fx_rates(fleet, reporting_currency))
    for done, history in enumerate(simulate(fleet), 1):
        account = history.account
        for asset in history.assets:
            out.readings += int(asset.reporting.sum())
            out.events += len(asset.events)
            if sink is not None:
                sink(asset)
        contracts = contracts_for(fleet, account, history.monthly_volume_m3)
        out.contracts += [c.row() for c in contracts]
        out.invoices += invoices_for(fleet, account, contracts, history.monthly_volume_m3)
        out.truth += _truth(fleet, history, out.invoices)
        if progress is not None:
            progress(
                f"  simulated {done}/{len(fleet.accounts)} accounts, {out.readings:,} readings"
            )
    return out


def mqtt_sink(send: Sender, prefix: str) -> AssetSink:
    """Publish an asset's history as a gateway uploading its buffer: a message per day (a list
    of hourly readings) on the telemetry topic, its events as one list on the event topic."""

    def publish(history: AssetHistory) -> None:
        asset = history.asset
        topic = device_topic(prefix, asset.account_id, asset.asset_id)
        for batch in reading_batches(history):
            send(topic, json.dumps(batch).encode())
        if history.events:
            send(
                device_topic(prefix, asset.account_id, asset.asset_id, "event"),
                json.dumps([_event_payload(e) for e in history.events]).encode(),
            )

    return publish


def _truth(
    fleet: Fleet, history: AccountHistory, invoices: list[dict[str, object]]
) -> list[dict[str, object]]:
    account = history.account
    rows: list[dict[str, object]] = [
        _row("story", account.account_id, "", "", fleet.start, None, account.story)
    ]
    for asset in history.assets:
        for e in asset.truth:
            rows.append(
                _row(
                    e.kind,
                    account.account_id,
                    e.asset_id,
                    e.component,
                    e.time,
                    None,
                    e.service_order,
                )
            )
            if e.kind == "failure":
                rows[-1].update(
                    mode=e.mode,
                    foreseeable=e.foreseeable,
                    lead_hours=e.lead_hours,
                    lead_running_hours=e.lead_running_hours,
                )
        if asset.asset.silent_month is not None:
            rows.append(
                _row(
                    "silent",
                    account.account_id,
                    asset.asset.asset_id,
                    "",
                    month_start(fleet.start, asset.asset.silent_month),
                    None,
                    "",
                )
            )
        if asset.asset.start_month > account.start_month:
            rows.append(
                _row(
                    "expansion",
                    account.account_id,
                    asset.asset.asset_id,
                    "",
                    month_start(fleet.start, asset.asset.start_month),
                    None,
                    "added a compressor",
                )
            )
    if account.churn_month is not None:
        last = month_start(fleet.start, account.churn_month - 1).strftime("%Y-%m")
        lost = sum(
            (
                Decimal(str(i["amount"]))
                for i in invoices
                if i["account_id"] == account.account_id
                and i["period"] == last
                and i["recurring"] == "true"
            ),
            Decimal(0),
        )
        rows.append(
            _row(
                "churn",
                account.account_id,
                "",
                "",
                month_start(fleet.start, account.churn_month),
                lost,
                f"recurring revenue of {last} lost",
            )
        )
    if account.buys_heat_recovery:
        rows.append(
            _row(
                "expansion",
                account.account_id,
                "",
                "heat_recovery",
                month_start(fleet.start, account.event_month),
                None,
                "bought the heat-recovery module",
            )
        )
    return rows


def _row(
    kind: str,
    account_id: str,
    asset_id: str,
    component: str,
    time: dt.datetime,
    value: Decimal | None,
    detail: str,
) -> dict[str, object]:
    return {
        "kind": kind,
        "account_id": account_id,
        "asset_id": asset_id,
        "component": component,
        "time": time,
        "value": value,
        "detail": detail,
        "mode": "",
        "foreseeable": None,
        "lead_hours": None,
        "lead_running_hours": None,
    }


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "wt", newline="")
    return path.open("w", newline="")


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    with _open(path) as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_files(
    fleet: Fleet,
    out_dir: Path,
    *,
    reporting_currency: str = "EUR",
    progress: Callable[[str], None] | None = None,
) -> SimulationOutput:
    """Write telemetry (wide CSV with an asset column, gzip), events, contracts, invoices,
    exchange rates and ground truth as CSV files under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events: list[dict[str, object]] = []
    with _open(out_dir / "telemetry.csv.gz") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "asset_id", *METRICS])

        def write_asset(history: AssetHistory) -> None:
            columns = [history.metrics[name] for name in METRICS]
            for i in history.reporting.nonzero()[0]:
                writer.writerow(
                    [
                        _iso(int(history.epoch_s[i])),
                        history.asset.asset_id,
                        *(repr(float(c[i])) for c in columns),
                    ]
                )
            events.extend(
                {
                    "time": e.time,
                    "asset_id": e.asset_id,
                    "kind": e.kind,
                    "component": e.component,
                    "code": e.code,
                    "service_order": e.service_order,
                }
                for e in history.events
            )

        output = run(fleet, write_asset, reporting_currency=reporting_currency, progress=progress)
    write_csv(out_dir / "events.csv", EVENT_COLUMNS, events)
    write_csv(out_dir / "contracts.csv", CONTRACT_COLUMNS, output.contracts)
    write_csv(out_dir / "invoices.csv", INVOICE_COLUMNS, output.invoices)
    write_csv(out_dir / "fx.csv", FX_COLUMNS, output.fx)
    write_csv(out_dir / "ground_truth.csv", GROUND_TRUTH_COLUMNS, output.truth)
    return output
