"""The HTML routes: the CSM pages of ``basewatch.pages`` (sign-in, alerts and their forms,
accounts, team, NRR report) behind FastAPI. Each route is a :class:`PageRoute` (its errors are
the error page) left out of ``/openapi.json`` (the schema describes the JSON API; pages are for
browsers); the page functions keep their ``(api, request) -> response`` form, run by
:meth:`basewatch.api.auth.Exchange.answer`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from starlette.responses import Response

from basewatch.api.auth import Exchange, Gate
from basewatch.api.errors import PageRoute
from basewatch.pages.accounts import page_account, page_all_accounts, page_csm_accounts
from basewatch.pages.alerts import page_csm, page_index, post_bulk_action, post_page_action
from basewatch.pages.review import page_review
from basewatch.pages.signin import page_signin, post_signin, post_signout
from basewatch.pages.team import page_nrr_report, page_team

router = APIRouter(route_class=PageRoute, include_in_schema=False, default_response_class=Response)

SignInPage = Annotated[Exchange, Depends(Gate(page=True, public=True))]
SignInForm = Annotated[Exchange, Depends(Gate(page=True, public=True, body="form"))]
Page = Annotated[Exchange, Depends(Gate(page=True))]
ManagersPage = Annotated[Exchange, Depends(Gate(page=True, managers=True))]
Form = Annotated[Exchange, Depends(Gate(page=True, body="form"))]
AlertAction = Literal["ack", "snooze", "resolve", "feedback"]


@router.get("/signin")
def signin_form(exchange: SignInPage) -> Response:
    return exchange.answer(page_signin)


@router.post("/signin")
def signin(exchange: SignInForm) -> Response:
    return exchange.answer(post_signin)


@router.post("/signout")
def signout(exchange: Form) -> Response:
    return exchange.answer(post_signout)


@router.get("/")
def index(exchange: Page) -> Response:
    return exchange.answer(page_index)


@router.get("/csm/{csm_id}")
def csm_alerts(exchange: Page, csm_id: str) -> Response:
    return exchange.answer(page_csm, csm_id)


@router.get("/csm/{csm_id}/accounts")
def csm_accounts(exchange: Page, csm_id: str) -> Response:
    return exchange.answer(page_csm_accounts, csm_id)


@router.get("/accounts")
def all_accounts(exchange: Page) -> Response:
    return exchange.answer(page_all_accounts)


@router.get("/accounts/{account_id}")
def account(exchange: Page, account_id: str) -> Response:
    return exchange.answer(page_account, account_id)


@router.get("/accounts/{account_id}/review")
def account_review(exchange: Page, account_id: str) -> Response:
    return exchange.answer(page_review, account_id)


@router.get("/team")
def team(exchange: ManagersPage) -> Response:
    return exchange.answer(page_team)


@router.get("/reports/nrr")
def nrr_report(exchange: ManagersPage) -> Response:
    return exchange.answer(page_nrr_report)


@router.post("/csm/{csm_id}/alerts/bulk")
def bulk_action(exchange: Form, csm_id: str) -> Response:
    return exchange.answer(post_bulk_action, csm_id)


@router.post("/csm/{csm_id}/alerts/{alert_id:int}/{action}")
def alert_action(
    exchange: Form,
    csm_id: str,
    alert_id: int,
    action: Literal["ack", "snooze", "resolve", "feedback"],
) -> Response:
    return exchange.answer(post_page_action, csm_id, str(alert_id), action)
