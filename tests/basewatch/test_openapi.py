"""schemathesis against ``/openapi.json`` of a running ``basewatch api`` on a real database
(issue 15): generated requests for every JSON operation, signed in as the admin, and every
answer checked: no 5xx, a status the schema names, the content type it names, a body that
matches its schema. The database holds the registry, alerts (one per kind of test), a health
row and a two-month NRR ledger, so that the 200 answers are checked too, not only the 4xx."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from psycopg.types.json import Jsonb
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from basewatch.api.app import openapi_document
from nrr.ledger import rebuild
from tests.basewatch.test_api import (
    NOW,
    REGISTRY,
    api_config,
    decline,
    personal_token,
    raise_alerts,
    running,
    saturation,
)
from tests.nrr import fix_nrr as fx

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclasses.dataclass(frozen=True)
class Served:
    url: str
    token: str
    document: dict[str, Any]


def _seed(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        fx.reset(conn)
        conn.execute("TRUNCATE account_health")
        conn.execute(REGISTRY)
        fx.contract(conn, "a1", "acct-1", "2024-01-01", fee="1000")
        fx.contract(conn, "b1", "acct-2", "2024-01-01", "2024-01-31", fee="500")
        rebuild(conn, "EUR", since=fx.month("2024-01"), through=fx.month("2024-02"), full=True)
        findings = [dataclasses.replace(saturation(), subject=f"asset-{n}") for n in range(5)]
        raise_alerts(conn, *findings, decline())
        conn.execute(
            "INSERT INTO account_health (account_id, as_of, probability, horizon_days, method,"
            " factors) VALUES ('acct-1', %s, 0.3, 90, 'weighted', %s)",
            (NOW - dt.timedelta(days=1), Jsonb({"top": [{"text": "usage down 30%"}]})),
        )


@pytest.fixture(scope="module")
def served(db_url: str) -> Iterator[Served]:
    _seed(db_url)
    token = personal_token(db_url, "ada")
    with running(api_config(db_url)) as url:
        with urllib.request.urlopen(f"{url}/openapi.json", timeout=10) as answer:  # public
            document = json.load(answer)
        yield Served(url, token, document)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    # one keep-alive connection for every generated request: a client that leaves its idle
    # connections open holds them (BASEWATCH_API_MAX_CONNECTIONS) until the keep-alive timeout
    with requests.Session() as opened:
        yield opened


# the schema as the app builds it (no server, no database); the test below checks that the
# server serves this very document
schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_matches_the_schema(
    case: Any, served: Served, session: requests.Session
) -> None:
    case.call_and_validate(
        base_url=served.url,
        session=session,
        headers={"Authorization": f"Bearer {served.token}"},
        checks=CHECKS,
        timeout=20,
    )


def test_the_schema_names_every_json_route_and_the_problem_shape(served: Served) -> None:
    assert served.document == openapi_document()
    paths = served.document["paths"]
    assert {"/alerts", "/alerts/{alert_id}", "/nrr", "/readyz"} <= set(paths)
    assert not {"/", "/signin", "/csm/{csm_id}"} & set(paths)  # pages are for browsers
    problem = served.document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "error"}
    listing = {p["name"] for p in paths["/alerts"]["get"]["parameters"]}
    assert {"limit", "offset", "status", "owner", "kind", "account", "family"} <= listing
