"""The operator console over HTTP: sign-in and sessions, CSRF, read-only readers, security
headers, and each page and form against a real ledger (the browser tests drive the same
pages in chromium: tests/test_console_browser.py)."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from coordinator.app import create_app
from coordinator.console.guard import CONTENT_SECURITY_POLICY
from coordinator.console.overview import IssuedCounts, Remembered
from coordinator.console.overview import read as read_overview
from coordinator.console.pages import REMEMBERED
from coordinator.console.setup import WARM_UP
from coordinator.http.keys import POOL, WRITER
from coordinator.ledger import queries
from coordinator.monitors.pending_reservations import flag_overdue
from tests.conftest import bearer
from tests.support.api_helpers import add_store, confirm, ledger_position, reserve

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


async def sign_in(client: Any, token: str) -> str:
    """Sign in with ``token``; the session's CSRF token."""
    page = await (await client.get("/console/sign-in")).text()
    resp = await client.post(
        "/console/sign-in", allow_redirects=False, data={"csrf": CSRF.search(page)[1], "token": token}
    )
    assert resp.status == 303, await resp.text()
    return CSRF.search(await (await client.get("/console/")).text())[1]


async def test_pages_need_a_session_and_a_token_of_operator_or_reader(client, tokens) -> None:
    resp = await client.get("/console/series", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/sign-in"
    store = await add_store(client, tokens.operator)
    page = await (await client.get("/console/sign-in")).text()
    csrf = CSRF.search(page)[1]
    for wrong in ("not-a-token", store["token"]):  # a store's token does not sign in
        resp = await client.post("/console/sign-in", data={"csrf": csrf, "token": wrong})
        assert resp.status == 401
        assert "not an operator or reader token" in await resp.text()
    resp = await client.post("/console/sign-in", data={"csrf": "0" * 64, "token": tokens.operator})
    assert resp.status == 403  # the sign-in form has its CSRF token too


async def test_session_cookie_is_httponly_strict_and_not_the_token(client, tokens) -> None:
    page = await (await client.get("/console/sign-in")).text()
    resp = await client.post(
        "/console/sign-in",
        allow_redirects=False,
        data={"csrf": CSRF.search(page)[1], "token": tokens.operator},
    )
    cookie = resp.cookies["concord_console"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/console"
    assert tokens.operator not in resp.headers.getall("Set-Cookie")[0]
    async with client.server.app[POOL].acquire() as conn:
        stored = [tuple(r) for r in await conn.fetch("SELECT * FROM console_sessions")]
    assert stored and tokens.operator not in repr(stored) and cookie.value not in repr(stored)
    resp = await client.get("/console/")
    assert resp.status == 200
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert resp.headers["X-Frame-Options"] == "DENY"
    html = await resp.text()
    # No third-party request: every src and href is the console's own.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script>" not in html and "style=" not in html


async def test_a_poll_after_the_session_ended_leads_to_sign_in(client, tokens) -> None:
    resp = await client.get("/console/overview/live", headers={"HX-Request": "true"})
    assert resp.status == 401
    assert resp.headers["HX-Redirect"] == "/console/sign-in"


async def test_sign_out_ends_the_session(client, tokens) -> None:
    csrf = await sign_in(client, tokens.reader)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/console/"))
    resp = await client.post("/console/sign-out", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303
    client.session.cookie_jar.update_cookies(cookie)  # the old cookie, replayed
    resp = await client.get("/console/", allow_redirects=False)
    assert resp.status == 303


async def test_a_form_without_the_session_csrf_token_changes_nothing(client, tokens) -> None:
    await sign_in(client, tokens.operator)
    before = await ledger_position(client)
    for data in (
        {"name": "forged", "url": "http://127.0.0.1:1"},
        {"name": "forged", "url": "http://127.0.0.1:1", "csrf": "f" * 64},
    ):
        resp = await client.post("/console/stores", data=data)
        assert resp.status == 403
        assert "CSRF" in await resp.text()
    assert await ledger_position(client) == before


async def test_a_reader_sees_everything_and_changes_nothing(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    csrf = await sign_in(client, tokens.reader)
    for page in (
        "/console/",
        "/console/series",
        "/console/stores",
        "/console/warnings",
        "/console/numbers",
        "/console/ledger",
    ):
        resp = await client.get(page)
        assert resp.status == 200, page
        assert 'method="post"' not in (await resp.text()).replace(
            'method="post" action="/console/sign-out"', ""
        )
    before = await ledger_position(client)
    for path, data in [
        ("/console/stores", {"name": "x", "url": "http://127.0.0.1:1"}),
        (f"/console/stores/{store['peer_id']}/rotate", {}),
        ("/console/series/invoice", {"start": "5"}),
    ]:
        resp = await client.post(path, data={**data, "csrf": csrf})
        assert resp.status == 403, path
        assert "reader" in await resp.text()
    assert await ledger_position(client) == before


async def test_overview_counts_issued_numbers_per_series_and_store(client, tokens) -> None:
    store = await add_store(client, tokens.operator, "north")
    for doc in ("1", "2", "3"):
        await confirm(client, store["token"], (await reserve(client, store["token"], doc))["reservation_id"])
    await reserve(client, store["token"], "4")  # reserved, not issued: not counted
    await sign_in(client, tokens.reader)
    html = await (await client.get("/console/overview/live")).text()
    issued = re.search(r'<tbody id="issued">(.*?)</tbody>', html, re.S)[1]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", issued) == ["invoice", "north", "3", "3"]
    assert "3 numbers in 7 days" in html
    position = await ledger_position(client)
    assert f'id="head-position">{position:,}<' in html


async def test_series_edit_shows_its_consequences_then_writes_or_explains(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    for doc in ("1", "2"):
        await reserve(client, store["token"], doc)
    csrf = await sign_in(client, tokens.operator)
    resp = await client.post(
        "/console/series/invoice/review", data={"csrf": csrf, "next": "100", "format": "INV-{NUMBER:5}"}
    )
    review = await resp.text()
    assert resp.status == 200
    assert "next may not move to or below 2" in review
    assert "INV-00100" in review
    before = await ledger_position(client)
    assert await ledger_position(client) == before  # the review wrote nothing
    resp = await client.post(
        "/console/series/invoice", data={"csrf": csrf, "next": "100", "format": "INV-{NUMBER:5}"}
    )
    assert resp.status == 200 and "next 100 in all" in await resp.text()
    series = await (await client.get("/v1/series", headers=bearer(tokens.reader))).json()
    invoice = series["series"][0]
    assert invoice["settings"]["format"] == "INV-{NUMBER:5}"
    assert invoice["periods"][0]["next"] == 100
    at = await ledger_position(client)
    resp = await client.post("/console/series/invoice", data={"csrf": csrf, "next": "1"})
    assert resp.status == 409
    assert "is not above 2, the highest number already handed out" in await resp.text()
    resp = await client.post("/console/series/invoice", data={"csrf": csrf, "increment": "x"})
    assert resp.status == 400 and "increment" in await resp.text()
    resp = await client.post("/console/series/invoice", data={"csrf": csrf, "increment": "1"})
    assert resp.status == 400 and "Nothing to change" in await resp.text()
    assert await ledger_position(client) == at


async def test_stores_added_rotated_and_retired_with_tokens_shown_once(client, tokens) -> None:
    csrf = await sign_in(client, tokens.operator)
    resp = await client.post(
        "/console/stores", data={"csrf": csrf, "name": "eu-1", "url": "http://10.0.0.5:8701"}
    )
    first = re.search(r'<code id="store-token">([^<]+)</code>', await resp.text())[1]
    beat = {"agent_version": "1", "settings": {}}
    assert (await client.post("/v1/heartbeat", headers=bearer(first), json=beat)).status == 200
    resp = await client.post("/console/stores", data={"csrf": csrf, "name": "eu 1", "url": "x"})
    assert resp.status == 400
    peers = (await (await client.get("/v1/peers", headers=bearer(tokens.reader))).json())["peers"]
    peer_id = peers[0]["peer_id"]
    confirm_page = await (await client.get(f"/console/stores/{peer_id}/rotate")).text()
    assert "current token stops working" in confirm_page
    resp = await client.post(f"/console/stores/{peer_id}/rotate", data={"csrf": csrf})
    second = re.search(r'<code id="store-token">([^<]+)</code>', await resp.text())[1]
    assert (await client.post("/v1/heartbeat", headers=bearer(first), json=beat)).status == 401
    assert (await client.post("/v1/heartbeat", headers=bearer(second), json=beat)).status == 200
    resp = await client.post(f"/console/stores/{peer_id}/retire", data={"csrf": csrf})
    assert resp.status == 200 and "retired" in await resp.text()
    assert (await client.post("/v1/heartbeat", headers=bearer(second), json=beat)).status == 401


async def test_warnings_filtered_and_resolved(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    await reserve(client, store["token"], "7")
    app = client.server.app
    assert await flag_overdue(app[POOL], app[WRITER], minutes=0) == 1
    csrf = await sign_in(client, tokens.operator)
    page = await (await client.get("/console/warnings?kind=peer_silent")).text()
    assert "No open warning matches" in page
    other = await add_store(client, tokens.operator, "other")
    page = await (await client.get(f"/console/warnings?store={other['peer_id']}")).text()
    assert "No open warning matches" in page
    page = await (await client.get(f"/console/warnings?store={store['peer_id']}")).text()
    assert "reservation_pending" in page and "<td>alpha</td>" in page  # its reservation's
    page = await (await client.get("/console/warnings?kind=reservation_pending")).text()
    warning_id = re.search(r'action="/console/warnings/([0-9a-f-]{36})/resolve"', page)[1]
    resp = await client.post(
        f"/console/warnings/{warning_id}/resolve",
        allow_redirects=False,
        data={"csrf": csrf, "back": "kind=reservation_pending&x=1"},
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/console/warnings?kind=reservation_pending"
    resolved = await (await client.get("/console/warnings?state=resolved")).text()
    assert "reservation_pending" in resolved
    assert "No open warning" in await (await client.get("/console/warnings")).text()


async def test_search_a_number_and_read_its_history(client, tokens) -> None:
    store = await add_store(client, tokens.operator, "north")
    resp = await client.post(
        "/v1/heartbeat",
        headers=bearer(store["token"]),
        json={"agent_version": "1", "settings": {"country": "DE", "timezone": "UTC"}},
    )
    assert resp.status == 200
    r = await reserve(client, store["token"], "41")
    resp = await client.post(
        f"/v1/reservations/{r['reservation_id']}/confirm",
        headers=bearer(store["token"]),
        json={
            "document": {
                "ClientData": {"UserID": 7, "Country": "NL", "TaxID": "NL123456789B01"},
                "DocData": {"Date": "2026-03-01", "Total": "12.10"},
            }
        },
    )
    assert resp.status == 200, await resp.text()
    issued = await resp.json()
    # A verdict the feed recorded: the history shows it and asks VIES nothing.
    async with client.server.app[POOL].acquire() as conn:
        await conn.execute(
            "INSERT INTO vies_cache (country, number, valid, checked_at)"
            " VALUES ('NL', '123456789B01', true, now())"
        )
    await sign_in(client, tokens.reader)
    found = await (await client.get(f"/console/numbers?by=number&q={r['formatted']}")).text()
    assert f"/console/numbers/history?number={r['formatted']}" in found
    by_doc = await (await client.get(f"/console/numbers?by=document&q=41&store={store['peer_id']}")).text()
    assert "invoice 41" in by_doc
    history = await (await client.get(f"/console/numbers/history?number={r['formatted']}")).text()
    rows = re.findall(r'<td class="num">(\d+)</td><td>(\w+)</td>', history)
    assert rows == [
        (str(r["receipt"]["position"]), "NumberReserved"),
        (str(issued["receipt"]["position"]), "NumberIssued"),
    ]
    assert issued["receipt"]["hash"] in history
    shown = json.loads(html.unescape(re.search(r'<pre class="snapshot"[^>]*>(.*?)</pre>', history, re.S)[1]))
    assert shown["Store"] == "north"
    assert shown["ClientData"]["Europe"]["MemberState"] == "NL"
    assert shown["ClientData"]["Europe"]["VIES"] is True
    assert "VIES: the verdict last recorded by the feed" in history
    resp = await client.post(
        "/v1/webservice", data={"action": "Get", "token": tokens.reader, "invoiceid": "41"}
    )
    assert shown == (await resp.json())["north/41"]  # exactly the feed's document
    assert (await client.get("/console/numbers?by=number&q=a%00b")).status == 400


async def test_ledger_pages_newest_first(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    for doc in range(60):
        await reserve(client, store["token"], str(doc))
    await sign_in(client, tokens.reader)
    head = await ledger_position(client)
    page = await (await client.get("/console/ledger")).text()
    positions = [int(p) for p in re.findall(r'<tr><td class="num">(\d+)</td>', page)]
    assert positions == list(range(head, head - 50, -1))
    older = await (await client.get(f"/console/ledger?before={positions[-1]}")).text()
    assert [int(p) for p in re.findall(r'<tr><td class="num">(\d+)</td>', older)] == list(
        range(positions[-1] - 1, 0, -1)
    )


async def test_issued_counts_are_remembered_until_a_number_is_voided(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    issued = [
        await confirm(
            client, store["token"], (await reserve(client, store["token"], str(doc)))["reservation_id"]
        )
        for doc in range(1, 5)
    ]
    middle = issued[2]["receipt"]["position"]  # numbers 1 and 2 before it, 3 and 4 from it
    head = await ledger_position(client)
    cache = IssuedCounts()

    async def counted() -> list[int]:
        async with client.server.app[POOL].acquire() as conn:
            rows = await cache.between(conn, [1, middle, head + 1], head)
        return [sum(r["issued"] for r in interval) for interval in rows]

    assert await counted() == [2, 2]
    assert list(cache.known) == [(1, middle)]  # the interval up to the head is not final
    resp = await client.post(
        f"/v1/numbers/invoice/all/{issued[0]['number']}/void",
        headers=bearer(tokens.operator),
        json={"reason": "test"},
    )
    assert resp.status == 200, await resp.text()
    assert await counted() == [1, 2]  # the void made the remembered count stale: recounted


class _Recorder:
    """A connection that runs every statement and keeps it, with its arguments."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.conn, name)

        async def run(sql: str, *args: Any) -> Any:
            self.statements.append((sql, args))
            return await method(sql, *args)

        return run


async def test_every_console_read_has_an_index_to_take(client, tokens) -> None:
    """Sequential scans off, the planner still finds a plan without one for every read of
    the overview, the searches, the history, the warnings and the ledger (bench/console.py
    times them at 1M events)."""
    store = await add_store(client, tokens.operator, "north")
    r = await reserve(client, store["token"], "41")
    await confirm(client, store["token"], r["reservation_id"])
    await sign_in(client, tokens.reader)
    app = client.server.app
    async with app[POOL].acquire() as conn:
        recorder = _Recorder(conn)
        await read_overview(recorder, "UTC", Remembered())
        await queries.reservations_numbered(recorder, r["formatted"])
        await queries.documents_numbered(recorder, r["formatted"])
        await queries.documents_by_id(recorder, "41", None)
        await queries.documents_of_client(recorder, "7", store["peer_id"])
        await queries.stream_events(recorder, [f"reservation-{r['reservation_id']}"])
        await queries.recent_warnings(recorder, "open", "peer_silent", store["peer_id"], 200)
        await queries.newest_events(recorder, 3, 50)
        await conn.execute("SET enable_seqscan = off")
        for sql, args in recorder.statements:
            plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *args))
            for table in ("events", "reservations", "documents", "warnings"):
                assert f"Seq Scan on {table}" not in plan, f"{sql}\n{plan}"


async def test_a_started_coordinator_counts_the_closed_intervals_before_the_first_overview(
    aiohttp_client, client, tokens, settings
) -> None:
    store = await add_store(client, tokens.operator)
    for doc in ("1", "2"):
        await confirm(client, store["token"], (await reserve(client, store["token"], doc))["reservation_id"])
    started = await aiohttp_client(create_app(settings))  # another replica, started now
    console = started.server.app._subapps[0]
    await console[WARM_UP]
    async with started.server.app[POOL].acquire() as conn:
        recorder = _Recorder(conn)
        seen = await read_overview(recorder, "Europe/Amsterdam", console[REMEMBERED])
    counted = [args[0] for sql, args in recorder.statements if "width_bucket" in sql]
    # Only what is still open is counted: the current hour, and today.
    assert [len(bounds) - 1 for bounds in counted] == [1, 1]
    assert seen.chart.total == 2 and [r["today"] for r in seen.issued] == [2]
