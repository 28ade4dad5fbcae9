"""The CSM workspace in a real browser (issue 15): Playwright's sync API drives Debian's
Chromium (``/usr/bin/chromium``, installed by ``scripts/bootstrap --browser``; Playwright's own
browser download is never used) against ``basewatch api`` on a free port and a real database.

A CSM signs in through the form, sees only their own alerts, acknowledges one, is shown the
result, and signs out (their page then sends the browser to ``/signin``); at 390 px width their
page has no horizontal overflow (a screenshot is kept in ``tmp_path``). After acknowledging,
the CSM opens the account page of their account (``/accounts/<id>``): its daily usage chart
and one component life bar per machine and catalogued component render. A manager signs in
and opens the NRR, as JSON (``/nrr``) and as the monthly report page (``/reports/nrr``, with its
charts).

Each page a person works from is a step function (``open_…``) that goes there and checks what
must be visible; a new page is one more step called from a scenario. acct-1 (carla's) has
:data:`MACHINES`, each with the components of :data:`COMPONENTS` and :data:`USAGE_DAYS` days of
telemetry rolled up as the scheduler does (on either engine), and the ledger has
:data:`NRR_MONTH`. The steps find elements by their accessible names (an SVG chart has
``role="img"`` and a ``<title>``, a life bar ``role="img"`` and an ``aria-label``), and
:func:`expect_drawn` checks that each is visible and takes room, so an empty or collapsed
chart fails.

Without ``/usr/bin/chromium`` the tests fail and say to run ``scripts/bootstrap --browser``: a
browser test that skips silently would let the pages break unseen.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Response,
    ViewportSize,
    expect,
    sync_playwright,
)
from psycopg.types.json import Jsonb

from basewatch.users import create_user
from nrr.ledger import rebuild
from signals.rollups import refresh_rollups
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
# acct-1's machines (asset-7 is the subject of test_api.saturation()) and their components
# (kind: rated life in running hours); a component bar per machine and component
MACHINES = ("asset-7", "asset-8")
COMPONENTS = {"air_filter": 4000, "oil_filter": 4000, "separator": 8000}
BARS = len(MACHINES) * len(COMPONENTS)
USAGE_DAYS = 14  # days of telemetry before today, four readings a day


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
    seed_machines(db_url, "acct-1")
    with running(api_config(db_url)) as url:
        yield url


def seed_machines(db_url: str, account_id: str) -> None:
    """:data:`MACHINES` in ``account_id`` with :data:`COMPONENTS`, and :data:`USAGE_DAYS` days
    of flow and running-hours readings up to yesterday, rolled up as the scheduler does (daily
    rollups are continuous aggregates on TimescaleDB, so they come from telemetry here too):
    what an account page's usage chart and component life bars are drawn from."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - dt.timedelta(days=USAGE_DAYS)
    readings = []
    for number, asset_id in enumerate(MACHINES):
        for step in range(USAGE_DAYS * 4):
            at = first + dt.timedelta(hours=6 * step)
            metrics = {"flow_m3_min": 9.5 + number + step % 3, "running_hours": 2000 + 6 * step}
            readings.append((asset_id, at, at, Jsonb(metrics)))
    with psycopg.connect(db_url) as connection:
        for number, asset_id in enumerate(MACHINES):
            connection.execute(
                "INSERT INTO assets (asset_id, account_id, model) VALUES (%s, %s, 'GA75 VSD')",
                (asset_id, account_id),
            )
            for kind, life_hours in COMPONENTS.items():
                connection.execute(
                    "INSERT INTO components (asset_id, kind, rated_life_hours,"
                    " installed_at_running_hours) VALUES (%s, %s, %s, %s)",
                    (asset_id, kind, life_hours, 500 * number),
                )
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
                " VALUES (%s, %s, %s, %s)",
                readings,
            )
        connection.commit()
        refresh_rollups(connection, workers=1)


@pytest.fixture
def api(workspace: str) -> str:
    return workspace


@pytest.fixture
def conn(db_url: str, workspace: str) -> Iterator[psycopg.Connection]:
    """No alerts yet: each test raises its own."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE alerts, alert_history, outbox")
        yield connection


NewPage = Callable[[ViewportSize], Page]


@pytest.fixture
def new_page(browser: Browser, api: str) -> Iterator[NewPage]:
    """Opens a page in a fresh browser profile (no cookies) on ``api`` at a viewport size;
    every profile is closed after the test, whether it passed or not."""
    contexts: list[BrowserContext] = []

    def open_page(viewport: ViewportSize) -> Page:
        context = browser.new_context(base_url=api, viewport=viewport)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def signed_in(new_page: NewPage, username: str, viewport: ViewportSize = DESKTOP) -> Page:
    """A fresh page signed in as ``username`` (of :data:`USERS`), on the page they land on."""
    page = new_page(viewport)
    sign_in(page, username, lands_on=landing(username))
    return page


def landing(username: str) -> str:
    """Where signing in takes ``username``: a CSM to their page, everyone else home."""
    role, csm_id = USERS[username]
    return f"/csm/{csm_id}" if role == "csm" else "/"


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


def goto_ok(page: Page, path: str) -> Response:
    """Open ``path``; it must answer 200 (not an error page, not a redirect to sign-in)."""
    answer = page.goto(path)
    assert answer is not None
    assert answer.status == 200, f"{path}: {answer.status}"
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    return answer


def expect_drawn(locator: Locator, count: int | None = None) -> None:
    """What ``locator`` finds (``count`` elements, or at least one) is visible and takes room
    on the page: a chart or bar that renders, not an empty or collapsed box."""
    if count is None:
        expect(locator.first).to_be_visible()
    else:
        expect(locator).to_have_count(count)
    for element in locator.all():
        expect(element).to_be_visible()
        box = element.bounding_box()
        assert box is not None, element
        assert box["width"] > 0, (element, box)
        assert box["height"] > 0, (element, box)


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


def open_account_page(page: Page, account_id: str) -> None:
    """The account page: its usage chart (daily, from the rollups) and every machine's
    component life bars are drawn."""
    goto_ok(page, f"/accounts/{account_id}")
    expect_drawn(page.get_by_role("img", name=re.compile("air delivered per day", re.I)))
    expect_drawn(page.get_by_role("img", name=re.compile("of rated life")), BARS)


def open_nrr_report(page: Page, month: str) -> None:
    """The monthly NRR report as the app renders it, with its charts."""
    goto_ok(page, f"/reports/nrr?month={month}")
    expect(page.get_by_role("heading", name=re.compile("Net revenue retention"))).to_be_visible()
    expect_drawn(page.get_by_role("img").first)


def open_nrr(page: Page, month: str) -> None:
    """The NRR as a manager opens it: today the JSON document of ``/nrr``."""
    document = goto_ok(page, f"/nrr?month={month}").json()
    assert document["month"] == month
    assert document["mrr"]["total"] == "1000.00"


# -- the scenarios --------------------------------------------------------------------------------


def test_a_csm_signs_in_acknowledges_an_alert_and_signs_out(
    new_page: NewPage, conn: psycopg.Connection, tmp_path: Path
) -> None:
    # two alerts of carla's (csm-a's acct-1), one of bert's (csm-b's acct-2)
    first, second, others = raise_alerts(conn, saturation(), decline("acct-1"), decline("acct-2"))
    page = new_page(PHONE)
    page.goto("/csm/csm-a")  # signed out: to the sign-in form
    expect(page).to_have_url(re.compile(r"/signin$"))

    sign_in(page, "carla", lands_on=landing("carla"))
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

    open_account_page(page, "acct-1")
    sign_out(page)
    page.goto("/csm/csm-a")
    expect(page).to_have_url(re.compile(r"/signin$"))


def test_a_manager_signs_in_and_opens_the_nrr(new_page: NewPage, conn: psycopg.Connection) -> None:
    page = signed_in(new_page, "mona")
    open_nrr(page, NRR_MONTH)
    open_nrr_report(page, NRR_MONTH)


def test_the_nrr_is_not_for_a_csm(new_page: NewPage, conn: psycopg.Connection) -> None:
    page = signed_in(new_page, "carla")
    answer = page.goto(f"/nrr?month={NRR_MONTH}")
    assert answer is not None
    assert answer.status == 403


def test_the_csm_page_fits_a_phone(new_page: NewPage, conn: psycopg.Connection) -> None:
    raise_alerts(conn, saturation(), decline("acct-1"))
    page = signed_in(new_page, "carla", PHONE)
    assert page_width_px(page) <= PHONE["width"]
