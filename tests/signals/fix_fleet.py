"""A simulated fleet written into a test database: registry, telemetry, events, rollups."""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg.types.json import Jsonb

from core.registry import KINDS, RegistryBatch, import_registry
from signals.rollups import refresh_rollups
from simulator.fleet import Fleet
from simulator.physics import METRICS, simulate_account


def load_fleet(db_url: str, fleet: Fleet) -> None:
    """Register ``fleet``, write its telemetry and events, refresh the rollups."""
    records = fleet.registry_records()
    with psycopg.connect(db_url) as conn:
        import_registry(conn, RegistryBatch({k: records[k] for k in KINDS}))
        with conn.cursor() as cur:
            for account in fleet.accounts:
                history = simulate_account(fleet, account)
                with cur.copy(
                    "COPY telemetry (asset_id, time, received_at, metrics) FROM STDIN"
                ) as copy:
                    for asset in history.assets:
                        columns = [asset.metrics[m] for m in METRICS]
                        for i in asset.reporting.nonzero()[0]:
                            when = dt.datetime.fromtimestamp(int(asset.epoch_s[i]), dt.UTC)
                            metrics = {
                                m: float(c[i]) for m, c in zip(METRICS, columns, strict=True)
                            }
                            copy.write_row((asset.asset.asset_id, when, when, Jsonb(metrics)))
                for asset in history.assets:
                    for event in asset.events:
                        cur.execute(
                            "INSERT INTO asset_events (asset_id, time, kind, component,"
                            " received_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (event.asset_id, event.time, event.kind, event.component, event.time),
                        )
        conn.commit()
        refresh_rollups(conn)
