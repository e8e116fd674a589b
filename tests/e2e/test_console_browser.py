"""The operator console in a real browser: Playwright drives Debian's chromium (Playwright
cannot download its own browsers here) against a coordinator on a real port and database.

With CONCORD_CONSOLE_SCREENSHOTS=DIR set, each page visited is saved there as a PNG (how
docs/console/*.png are made)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coordinator.app import create_app
from coordinator.http.keys import POOL, WRITER
from coordinator.monitors.pending_reservations import flag_overdue

playwright = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = os.environ.get("CONCORD_CONSOLE_SCREENSHOTS")
TIMEOUT_MS = 10_000

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("no /usr/bin/chromium: apt-get install chromium", allow_module_level=True)

# Each test drives a chromium of its own against a live app.
pytestmark = pytest.mark.slow


@dataclass
class Console:
    base: str
    app: Any
    operator: str
    reader: str
    browser: Any

    async def api(self, method: str, path: str, token: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, self.base + path, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            return resp.status, await resp.json()

    async def signed_in(self, token: str, width: int = 1280) -> Any:
        context = await self.browser.new_context(viewport={"width": width, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []  # CSP violations, script errors, requests elsewhere
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: r.url.startswith(self.base) or problems.append(r.url))
        page.problems = problems
        await page.goto(self.base + "/console/")
        await page.get_by_label("Token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(self.base + "/console/")
        return page


def _shot_path(name: str) -> Path:
    Path(SHOTS or ".").mkdir(parents=True, exist_ok=True)
    return Path(SHOTS or ".") / f"{name}.png"


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=str(_shot_path(name)), full_page=True)


@pytest.fixture
async def console(aiohttp_server, settings, tokens) -> AsyncIterator[Console]:
    server = await aiohttp_server(create_app(settings))
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield Console(
                f"http://127.0.0.1:{server.port}", server.app, tokens.operator, tokens.reader, browser
            )
        finally:
            await browser.close()


async def issue(console: Console, store_token: str, doc_id: str) -> dict[str, Any]:
    _, r = await console.api(
        "POST",
        "/v1/reservations",
        store_token,
        {"doctype": "invoice", "doc_id": doc_id, "date": "2026-03-01"},
    )
    status, issued = await console.api(
        "POST",
        f"/v1/reservations/{r['reservation_id']}/confirm",
        store_token,
        {"document": {"ClientData": {"UserID": 7}, "DocData": {"Total": "12.10"}}},
    )
    assert status == 200
    return issued


async def test_numbers_issued_through_the_api_appear_without_a_reload(console) -> None:
    _, store = await console.api(
        "POST", "/v1/peers", console.operator, {"name": "north", "url": "http://127.0.0.1:8701"}
    )
    page = await console.signed_in(console.operator)
    expect = playwright.expect
    await expect(page.locator("#issued")).to_contain_text("None this month")
    for doc in ("1", "2", "3"):
        await issue(console, store["token"], doc)
    # htmx polls the overview: the numbers show up on the page as it is.
    await expect(page.locator("#issued")).to_contain_text("north", timeout=15_000)
    await expect(page.locator("#issued td").nth(2)).to_have_text("3")
    await expect(page.locator("figcaption")).to_contain_text("3 numbers in 7 days")
    await shot(page, "overview")
    # 360 px wide: nothing wider than the screen but the tables' own scroll boxes.
    narrow = await console.signed_in(console.operator, width=360)
    assert await narrow.evaluate("document.documentElement.scrollWidth") <= 360
    await shot(narrow, "overview-360")
    assert page.problems == [] and narrow.problems == []


async def test_edit_a_series_with_its_consequences(console) -> None:
    _, store = await console.api(
        "POST", "/v1/peers", console.operator, {"name": "north", "url": "http://127.0.0.1:8701"}
    )
    await issue(console, store["token"], "1")
    page = await console.signed_in(console.operator)
    await page.get_by_role("link", name="Series", exact=True).click()
    await page.get_by_text("Edit invoice").click()
    await page.get_by_label("Format").first.fill("INV-{NUMBER:5}")
    await page.locator("#invoice-next").fill("1200")
    await shot(page, "series")
    await page.get_by_role("button", name="Review the change").first.click()
    expect = playwright.expect
    await expect(page.locator("#consequences")).to_contain_text("next may not move to or below 1")
    await expect(page.locator("#consequences")).to_contain_text("INV-01200")
    await shot(page, "series-review")
    await page.get_by_role("button", name="Confirm the change").click()
    await expect(page.locator(".notice")).to_contain_text("next 1,200 in all")
    _, series = await console.api("GET", "/v1/series", console.reader)
    assert series["series"][0]["periods"][0]["next"] == 1200
    assert page.problems == []
    # A change the ledger refuses is explained in words, and nothing is written.
    await page.get_by_text("Edit invoice").click()
    await page.locator("#invoice-next").fill("1")
    await page.get_by_role("button", name="Review the change").first.click()
    await page.get_by_role("button", name="Confirm the change").click()
    await expect(page.locator(".error")).to_contain_text("is not above 1")
    assert page.problems == ["Failed to load resource: the server responded with a status of 409 (Conflict)"]
    _, series = await console.api("GET", "/v1/series", console.reader)
    assert series["series"][0]["periods"][0]["next"] == 1200


async def test_add_and_rotate_a_store_with_the_token_shown_once(console) -> None:
    page = await console.signed_in(console.operator)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.get_by_role("link", name="Stores", exact=True).click()
    await page.get_by_label("Name").fill("eu-1")
    await page.get_by_label("Agent URL").fill("http://10.0.0.5:8701")
    await page.get_by_role("button", name="Add the store").click()
    first = await page.locator("#store-token").inner_text()
    await page.get_by_role("button", name="Copy the token").click()
    await playwright.expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert await page.evaluate("navigator.clipboard.readText()") == first
    await shot(page, "store-token")
    beat = {"agent_version": "1.0", "settings": {}}
    assert (await console.api("POST", "/v1/heartbeat", first, beat))[0] == 200
    await page.get_by_role("link", name="Back to the stores").click()
    await shot(page, "stores")
    await page.get_by_role("link", name="Rotate the token of eu-1").click()
    await page.get_by_role("button", name="Rotate the token").click()
    second = await page.locator("#store-token").inner_text()
    assert second != first
    assert (await console.api("POST", "/v1/heartbeat", first, beat))[0] == 401
    assert (await console.api("POST", "/v1/heartbeat", second, beat))[0] == 200
    assert page.problems == []


async def test_resolve_a_warning(console) -> None:
    _, store = await console.api(
        "POST", "/v1/peers", console.operator, {"name": "north", "url": "http://127.0.0.1:8701"}
    )
    await console.api(
        "POST",
        "/v1/reservations",
        store["token"],
        {"doctype": "invoice", "doc_id": "9", "date": "2026-03-01"},
    )
    assert await flag_overdue(console.app[POOL], console.app[WRITER], minutes=0) == 1
    page = await console.signed_in(console.operator)
    await page.get_by_role("link", name="Warnings", exact=True).click()
    await page.get_by_label("Kind").fill("reservation_pending")
    await page.get_by_role("button", name="Filter").click()
    await shot(page, "warnings")
    await page.get_by_role("button", name=re.compile("^Resolve reservation_pending")).click()
    await playwright.expect(page.locator("#warnings-live")).to_contain_text("No open warning matches")
    _, warnings = await console.api("GET", "/v1/warnings?state=resolved", console.reader)
    assert [w["code"] for w in warnings["warnings"]] == ["reservation_pending"]
    assert page.problems == []


async def test_search_a_number_and_open_its_history(console) -> None:
    _, store = await console.api(
        "POST", "/v1/peers", console.operator, {"name": "north", "url": "http://127.0.0.1:8701"}
    )
    issued = await issue(console, store["token"], "41")
    page = await console.signed_in(console.reader)
    await page.get_by_role("link", name="Numbers", exact=True).click()
    await page.get_by_label("Value").fill(issued["formatted"])
    await page.get_by_role("button", name="Search").click()
    await shot(page, "numbers")
    await page.get_by_role("link", name=issued["formatted"]).click()
    history = page.locator("#history tbody tr")
    await playwright.expect(history).to_have_count(2)
    await playwright.expect(history.nth(1)).to_contain_text(f"{issued['receipt']['position']}NumberIssued")
    await playwright.expect(history.nth(1)).to_contain_text(issued["receipt"]["hash"])
    await playwright.expect(page.locator(".snapshot")).to_contain_text('"UserID": 7')
    await shot(page, "history")
    await page.get_by_role("link", name="Ledger", exact=True).click()
    await playwright.expect(page.locator("#events tr").first).to_contain_text("NumberIssued")
    await shot(page, "ledger")
    assert page.problems == []


async def test_a_reader_cannot_change_anything(console) -> None:
    _, store = await console.api(
        "POST", "/v1/peers", console.operator, {"name": "north", "url": "http://127.0.0.1:8701"}
    )
    await console.api(
        "POST",
        "/v1/reservations",
        store["token"],
        {"doctype": "invoice", "doc_id": "9", "date": "2026-03-01"},
    )
    await flag_overdue(console.app[POOL], console.app[WRITER], minutes=0)
    page = await console.signed_in(console.reader)
    for link in ("Series", "Stores", "Warnings"):
        await page.get_by_role("link", name=link, exact=True).click()
        # Only the sign-out form: no control that changes anything is offered.
        assert await page.locator("form[method=post]").count() == 1
        assert await page.locator("form[method=post] button").all_inner_texts() == ["Sign out"]
    # Sent anyway, with the reader's own CSRF token, the change is refused.
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    resp = await page.request.post(
        console.base + "/console/stores", form={"csrf": csrf, "name": "x", "url": "http://x:1"}
    )
    assert resp.status == 403 and "changes nothing" in await resp.text()
    _, peers = await console.api("GET", "/v1/peers", console.reader)
    assert [p["name"] for p in peers["peers"]] == ["north"]


async def test_a_forged_form_is_refused(console) -> None:
    page = await console.signed_in(console.operator)
    await shot(page, "overview-empty")
    # A form on the console's own page, without the CSRF token.
    await page.evaluate(
        """base => {
        const f = document.createElement('form');
        f.method = 'post'; f.action = base + '/console/stores';
        for (const [k, v] of [['name', 'forged'], ['url', 'http://127.0.0.1:1']]) {
            const i = document.createElement('input'); i.name = k; i.value = v; f.append(i);
        }
        document.body.append(f); f.submit();
    }""",
        console.base,
    )
    await playwright.expect(page.locator("h1")).to_have_text("Form refused")
    # From another site the session cookie (SameSite=Strict) is not even sent.
    other = await page.context.new_page()
    await other.set_content(
        f'<form method="post" action="{console.base}/console/stores">'
        '<input name="name" value="forged"><input name="url" value="http://127.0.0.1:1">'
        "<button>go</button></form>"
    )
    await other.get_by_role("button", name="go").click()
    await playwright.expect(other.locator("h1")).to_have_text("Signed out")
    _, peers = await console.api("GET", "/v1/peers", console.reader)
    assert peers["peers"] == []
