"""The CSM workspace in a real browser (issue 15): Playwright's sync API drives Debian's
Chromium (``/usr/bin/chromium``, installed by ``scripts/bootstrap --browser``; Playwright's own
browser download is never used) against ``basewatch api`` on a free port and a real database.

A CSM signs in through the form, sees only their own alerts, acknowledges one, is shown the
result, and signs out (their page then sends the browser to ``/signin``); at 390 px width their
page has no horizontal overflow (a screenshot is kept in ``tmp_path``). A manager signs in and
opens the NRR.

Each page a person works from is a step function (``open_…``) that goes there and checks what
must be visible; a new page (the account page with its usage chart and component bars, the
manager's NRR report) is one more step called from the scenario.

Without ``/usr/bin/chromium`` the tests fail and say to run ``scripts/bootstrap --browser``: a
browser test that skips silently would let the pages break unseen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect, sync_playwright

from basewatch.users import create_user
from nrr.ledger import rebuild
from tests.basewatch.test_api import (
    REGISTRY,
    api_config,
    decline,
    raise_alerts,
    running,
    saturation,
)
from tests.nrr import fix_nrr as fx

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# The flags the machine notes give for a closed network: without the background-networking
# ones Chromium keeps trying Google's hosts at every start.
CHROMIUM_ARGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PASSWORD = "a long browser test password"
USERS = {  # username: (role, csm_id); acct-1 is csm-a's, acct-2 csm-b's (test_api.REGISTRY)
    "carla": ("csm", "csm-a"),
    "bert": ("csm", "csm-b"),
    "mona": ("manager", None),
}
NRR_MONTH = "2024-02"
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/bootstrap --browser (it installs Debian's "
            "chromium package for the browser tests)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def workspace(db_url: str) -> Iterator[str]:
    """The registry (two CSMs, an account each), one revenue month for the NRR, the users
    (Argon2 hashing is slow: once per module), and the API on a free port: its URL."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        fx.reset(connection)  # empties the registry too, so first
        fx.account(connection, "acme")
        fx.contract(connection, "a1", "acme", "2024-01-01", fee="1000")
        rebuild(
            connection, "EUR", since=fx.month("2024-01"), through=fx.month(NRR_MONTH), full=True
        )
        connection.execute(REGISTRY)
        for name, (role, csm_id) in USERS.items():
            create_user(connection, name, role, PASSWORD, csm_id=csm_id)
    with running(api_config(db_url)) as url:
        yield url


@pytest.fixture
def api(workspace: str) -> str:
    return workspace


@pytest.fixture
def conn(db_url: str, workspace: str) -> Iterator[psycopg.Connection]:
    """No alerts yet: each test raises its own."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE alerts, alert_history, outbox")
        yield connection


def new_page(browser: Browser, api: str, viewport: ViewportSize) -> Page:
    """A fresh browser profile (no cookies) on ``api``."""
    context = browser.new_context(base_url=api, viewport=viewport)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


# -- steps: each goes somewhere and checks what a person must see there --------------------------


def sign_in(page: Page, username: str, lands_on: str) -> None:
    page.goto("/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(lands_on) + r"$"))
    expect(page.get_by_text(f"Signed in as {username}")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))


def open_csm_page(page: Page, csm_id: str, mine: tuple[int, ...], others: tuple[int, ...]) -> None:
    page.goto(f"/csm/{csm_id}")
    for alert_id in mine:
        expect(alert_card(page, alert_id)).to_be_visible()
    for alert_id in others:
        expect(alert_card(page, alert_id)).to_have_count(0)


def alert_card(page: Page, alert_id: int) -> Locator:
    return page.locator(f"#alert-{alert_id}")


def acknowledge(page: Page, alert_id: int) -> None:
    alert_card(page, alert_id).get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_text(f"Alert #{alert_id} acknowledged")).to_be_visible()
    card = alert_card(page, alert_id)
    expect(card).to_contain_text("acknowledged")
    expect(card.get_by_role("button", name="Acknowledge")).to_have_count(0)


def screenshot_png(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000


def page_width_px(page: Page) -> int:
    """How wide the page is laid out: more than the viewport means horizontal scrolling."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert isinstance(width, int)
    return width


def open_nrr(page: Page, month: str) -> None:
    """The NRR as a manager opens it: today the JSON document of ``/nrr``."""
    answer = page.goto(f"/nrr?month={month}")
    assert answer is not None
    assert answer.status == 200
    document = answer.json()
    assert document["month"] == month
    assert document["mrr"]["total"] == "1000.00"


# -- the scenarios --------------------------------------------------------------------------------


def test_a_csm_signs_in_acknowledges_an_alert_and_signs_out(
    browser: Browser, api: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    # two alerts of carla's (csm-a's acct-1), one of bert's (csm-b's acct-2)
    first, second, others = raise_alerts(conn, saturation(), decline("acct-1"), decline("acct-2"))
    page = new_page(browser, api, PHONE)
    page.goto("/csm/csm-a")  # signed out: to the sign-in form
    expect(page).to_have_url(re.compile(r"/signin$"))

    sign_in(page, "carla", lands_on="/csm/csm-a")
    open_csm_page(page, "csm-a", mine=(first, second), others=(others,))
    expect(page.get_by_text("Brio Foods")).to_have_count(0)  # csm-b's account
    screenshot_png(page, tmp_path / "csm-page-390.png")

    acknowledge(page, first)
    still_open = alert_card(page, second).get_by_role("button", name="Acknowledge")
    expect(still_open).to_be_visible()
    row = conn.execute(
        "SELECT status, acknowledged_by FROM alerts WHERE alert_id = %s", (first,)
    ).fetchone()
    assert row == ("acknowledged", "carla")

    sign_out(page)
    page.goto("/csm/csm-a")
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.context.close()


def test_a_manager_signs_in_and_opens_the_nrr(
    browser: Browser, api: str, conn: psycopg.Connection
) -> None:
    page = new_page(browser, api, DESKTOP)
    sign_in(page, "mona", lands_on="/")
    open_nrr(page, NRR_MONTH)
    page.context.close()


def test_the_nrr_is_not_for_a_csm(browser: Browser, api: str, conn: psycopg.Connection) -> None:
    page = new_page(browser, api, DESKTOP)
    sign_in(page, "carla", lands_on="/csm/csm-a")
    answer = page.goto(f"/nrr?month={NRR_MONTH}")
    assert answer is not None
    assert answer.status == 403
    page.context.close()


@pytest.mark.xfail(
    strict=True,
    reason="the current CSM page is 419 px wide at 390 px: its alert cards' figures table"
    " (score, value, expected value, horizon, due) does not wrap; the new pages (issue 15)"
    " must fit, and this mark comes off when they land",
)
def test_the_csm_page_fits_a_phone(browser: Browser, api: str, conn: psycopg.Connection) -> None:
    raise_alerts(conn, saturation(), decline("acct-1"))
    page = new_page(browser, api, PHONE)
    sign_in(page, "carla", lands_on="/csm/csm-a")
    assert page_width_px(page) <= PHONE["width"]
    page.context.close()
