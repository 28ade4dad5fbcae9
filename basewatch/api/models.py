"""The JSON documents of the API as pydantic models: what ``/openapi.json`` publishes and
what every JSON answer is checked against before it leaves. Field names are those of the
CLI's ``--json`` (the same functions build both: ``signals.alerts``, ``signals.health``,
``nrr.headline``); times are ISO 8601 text, money is decimal text in the document's currency
(never a float), ``null`` means absent. Request bodies are documented with the ``*Body``
models; they forbid unknown fields, as the routes do."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse


class PrettyJSON(JSONResponse):
    """JSON as the API wrote it before the port (indented, a final newline), so that what
    ``curl`` shows reads like the CLI's ``--json``."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, indent=2, default=str).encode() + b"\n"


class Problem(BaseModel):
    """An error as RFC 9457 problem details, with ``error`` (the same text as ``detail``)
    kept for the clients written before."""

    type: str = Field(examples=["about:blank"])
    title: str
    status: int
    detail: str
    error: str


class Status(BaseModel):
    """``/healthz``, ``/livez``: ``ok`` or ``unavailable``."""

    status: str


class Readiness(BaseModel):
    """``/readyz``: ``ready``, or ``unavailable`` with a short reason."""

    status: str
    reason: str | None = None


class Alert(BaseModel):
    """One alert, as ``basewatch alerts list --json`` prints it."""

    alert_id: int
    account_id: str
    account_name: str | None
    kind: str
    family: str
    subject: str
    status: str
    score: float
    value: str = Field(description="money, decimal text in the reporting currency")
    expected_value: str = Field(description="money, decimal text in the reporting currency")
    priority: int
    horizon_days: int
    reasons: Any
    figures: Any
    owner_csm_id: str | None
    owner_name: str | None
    opened_at: str
    updated_at: str
    last_seen_at: str | None
    due_at: str | None
    snoozed_until: str | None
    snooze_reason: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    closed_at: str | None
    closed_by: str | None
    feedback: str | None
    feedback_by: str | None
    feedback_at: str | None
    note: str | None
    delivery: str
    delivery_reason: str
    digested_at: str | None
    snoozed: bool
    promise: str


class HistoryEntry(BaseModel):
    at: str
    action: str
    actor: str | None
    detail: Any


class AlertWithHistory(Alert):
    """``GET /alerts/{id}``: the alert and its changes, oldest first."""

    history: list[HistoryEntry]


class Health(BaseModel):
    """An account's latest health, as a row of ``basewatch signals health --json``."""

    account_id: str
    as_of: str
    probability: float
    horizon_days: int
    method: str
    measure: str
    probability_180d: float | None
    top_factors: list[str]


class Mrr(BaseModel):
    label: str
    fixed: str
    metered: str
    total: str
    accounts: int


class Bridge(BaseModel):
    """The month's MRR bridge as money text; every line null in the ledger's opening month."""

    start: str | None
    new: str | None
    reactivation: str | None
    expansion: str | None
    contraction: str | None
    churn: str | None
    fx: str | None
    end: str | None
    reconciles: bool | None


class MonthOverMonth(BaseModel):
    """Retention against the month before (null in the ledger's opening month)."""

    basis: str
    nrr_pct: float | None
    grr_pct: float | None
    logo_retention_pct: float | None
    cohort_size: int | None
    start_mrr: str | None


class Trailing(MonthOverMonth):
    """Retention over a trailing window (an empty cohort: every figure null)."""

    end_mrr: str | None


class Ledger(BaseModel):
    first_month: str
    last_month: str
    stale_since: str | None


class NrrHeadline(BaseModel):
    """``basewatch nrr show --json``."""

    month: str
    reporting_currency: str
    mrr: Mrr
    bridge: Bridge
    month_over_month: MonthOverMonth
    trailing_12_months: Trailing
    trailing_3_months: Trailing
    attribution: dict[str, Any]
    ledger: Ledger


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AckBody(_Body):
    by: str | None = Field(None, description="left out, or the authenticated user's name")


class SnoozeBody(_Body):
    """Either ``until`` or ``hours`` (at most 8784, 366 days), and a reason."""

    by: str | None = None
    until: dt.datetime | None = None
    hours: float | None = None
    reason: str


class ResolveBody(_Body):
    by: str | None = None
    outcome: str = Field(description="won, lost or dismissed")
    note: str | None = None


class FeedbackBody(_Body):
    by: str | None = None
    useful: bool


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` that documents a JSON body (the routes parse it themselves:
    strict JSON, unknown fields refused, see ``basewatch.web.Request.json_body``)."""
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
