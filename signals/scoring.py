"""A scoring pass: every signal of every account as of one moment, from rollups only.

``score(conn, as_of)`` returns the findings; ``signals.alerts`` turns them into alerts. Its last
step merges the findings about components of one asset into one per asset and kind
(``signals.findings.merge_components``): the live pass (``score_now``) and the backtest's
replay, which both call ``score``, see the same merged findings. The
rule signals live in ``signals.rules`` (usage, silence, capacity and leaks, energy) and
``signals.wear_findings`` (service due, third-party parts).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Protocol

import psycopg
from psycopg.rows import TupleRow

from signals.catalogue import PriceBook
from signals.findings import Finding, merge_components
from signals.kinds import RETIRED, SignalKind
from signals.model_store import load_model, save_model
from signals.routing import MIN_PRECISION, WEEKLY_BUDGET
from signals.rules import capacity_findings, energy_findings, silence_findings, usage_findings
from signals.wear_findings import wear_findings

log = logging.getLogger(__name__)

# a pass scores every kind; the retired kinds count as scored (never found), so their
# alerts left open expire (signals.kinds)
KINDS_SCORED: frozenset[str] = frozenset(SignalKind) | RETIRED


class Detector(Protocol):
    """A model-backed detector module (see ``signals.model_store``)."""

    NAME: str

    def train(self, conn: psycopg.Connection[TupleRow], until: dt.datetime) -> object | None: ...

    def findings(
        self,
        conn: psycopg.Connection[TupleRow],
        as_of: dt.datetime,
        prices: PriceBook,
        model: object | None,
    ) -> list[Finding]: ...


def detectors() -> tuple[Detector, ...]:
    """The model-backed detectors, in scoring order (modules implementing ``Detector``)."""
    from signals import anomaly, failure_model, health

    return (anomaly, failure_model, health)


def train_models(
    conn: psycopg.Connection[TupleRow], until: dt.datetime
) -> dict[str, object | None]:
    """Every detector's model fitted on what was known before ``until`` (in memory)."""
    models: dict[str, object | None] = {}
    for detector in detectors():
        started = time.monotonic()
        models[detector.NAME] = detector.train(conn, until)
        log.info(
            "model %s trained until %s in %.1f s%s",
            detector.NAME,
            until.isoformat(),
            time.monotonic() - started,
            "" if models[detector.NAME] is not None else " (too little history: fallback)",
        )
    return models


def retrain_models(conn: psycopg.Connection[TupleRow], now: dt.datetime) -> dict[str, bool]:
    """The scheduler's nightly job: train every model until ``now`` and store it; returns
    which models could be trained."""
    trained = {}
    for name, model in train_models(conn, now).items():
        if model is not None:
            save_model(conn, name, now, model, getattr(model, "summary", {}))
        trained[name] = model is not None
    return trained


def stored_models(
    conn: psycopg.Connection[TupleRow], as_of: dt.datetime | None = None
) -> dict[str, object | None]:
    """The latest stored model of every detector (trained before ``as_of`` when given)."""
    models: dict[str, object | None] = {}
    for detector in detectors():
        stored = load_model(conn, detector.NAME, as_of)
        models[detector.NAME] = stored.model if stored is not None else None
    return models


def accounts_with_heat_recovery(conn: psycopg.Connection[TupleRow]) -> set[str]:
    """Accounts that have a heat-recovery module: a registered component of that kind."""
    rows = conn.execute(
        "SELECT DISTINCT a.account_id FROM components c JOIN assets a"
        " USING (asset_id) WHERE c.kind = 'heat_recovery'"
    ).fetchall()
    return {str(r[0]) for r in rows}


def score(
    conn: psycopg.Connection[TupleRow],
    as_of: dt.datetime,
    prices: PriceBook | None = None,
    models: Mapping[str, object | None] | None = None,
) -> list[Finding]:
    """All findings as of ``as_of`` (only rollup buckets and events before it are read).

    ``models`` maps detector names to trained models; ``None`` loads the latest stored ones.
    """
    prices = prices or PriceBook()
    started = time.monotonic()
    if models is None:
        models = stored_models(conn)
    findings = (
        usage_findings(conn, as_of, prices)
        + silence_findings(conn, as_of, prices)
        + capacity_findings(conn, as_of, prices)
        + energy_findings(conn, as_of, prices, accounts_with_heat_recovery(conn))
        + wear_findings(conn, as_of, prices)
    )
    for detector in detectors():
        findings += detector.findings(conn, as_of, prices, models.get(detector.NAME))
    findings = merge_components(findings)
    log.info(
        "scored as of %s: %d findings in %.1f s",
        as_of.isoformat(),
        len(findings),
        time.monotonic() - started,
    )
    return findings


def score_now(
    conn: psycopg.Connection[TupleRow],
    now: dt.datetime,
    clear_after: dt.timedelta = dt.timedelta(hours=48),
    cooldown: dt.timedelta = dt.timedelta(days=7),
    prices: PriceBook | None = None,
    *,
    min_precision: float = MIN_PRECISION,
    weekly_budget: int = WEEKLY_BUDGET,
    public_url: str = "",
) -> int:
    """The scheduler's hourly job: score as of ``now`` and apply the findings to the alerts,
    the new ones routed by the precision gate and the weekly budget (``signals.routing``, with
    the stored measured precision), their messages linking to ``public_url`` (the API's
    public URL, ``signals.alerts.alert_url``); returns the number of alerts opened."""
    from signals import health
    from signals.alerts import apply_findings
    from signals.routing import load_routing

    book = prices or PriceBook()
    findings = score(conn, now, book)
    health.record_latest(conn, now)
    result = apply_findings(
        conn,
        findings,
        now=now,
        kinds_scored=KINDS_SCORED,
        clear_after=clear_after,
        cooldown=cooldown,
        currency=book.currency,
        routing=load_routing(conn, min_precision, weekly_budget),
        public_url=public_url,
    )
    return len(result.opened)
