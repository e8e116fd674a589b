"""The numbering API end to end: reserve, confirm, release, void, series settings."""

from __future__ import annotations

import uuid

from tests.conftest import bearer
from tests.support.api_helpers import DOCUMENT, add_store, confirm, ledger_position, reserve


async def test_numbers_are_sequential_and_reserve_is_idempotent(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    first = await reserve(client, store["token"], "1")
    second = await reserve(client, store["token"], "2")
    assert (first["number"], second["number"]) == (1, 2)
    assert first["state"] == "reserved" and first["series"] == "invoice"
    assert first["period"] == "all"
    again = await reserve(client, store["token"], "1", expect=200)
    assert again["reservation_id"] == first["reservation_id"]
    assert again["receipt"] == first["receipt"]
    issued = await confirm(client, store["token"], first["reservation_id"])
    assert issued["state"] == "issued"
    assert issued["receipt"]["position"] > first["receipt"]["position"]
    after_issue = await reserve(client, store["token"], "1", expect=200)
    assert after_issue["reservation_id"] == first["reservation_id"]
    assert after_issue["state"] == "issued"
    assert (await confirm(client, store["token"], first["reservation_id"])) == issued


async def test_receipt_is_the_ledger_event(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    r = await reserve(client, store["token"], "1")
    resp = await client.get(
        f"/v1/events?after={r['receipt']['position'] - 1}&limit=1", headers=bearer(tokens.reader)
    )
    [event] = (await resp.json())["events"]
    assert event["type"] == "NumberReserved"
    assert event["hash"] == r["receipt"]["hash"]
    assert event["data"]["reservation_id"] == r["reservation_id"]


async def test_released_numbers_are_reused_lowest_first(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    token = store["token"]
    rs = [await reserve(client, token, str(i)) for i in range(1, 6)]  # numbers 1..5
    for victim in (rs[3], rs[1]):  # release 4, then 2
        resp = await client.post(
            f"/v1/reservations/{victim['reservation_id']}/release",
            headers=bearer(token),
            json={"reason": "mysql write failed"},
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["state"] == "released"
    assert (await reserve(client, token, "10"))["number"] == 2
    assert (await reserve(client, token, "11"))["number"] == 4
    assert (await reserve(client, token, "12"))["number"] == 6
    # The released document asks again: a new reservation with a new number.
    again = await reserve(client, token, "2", expect=201)
    assert again["reservation_id"] != rs[1]["reservation_id"]
    assert again["number"] == 7


async def test_release_of_issued_reservation_is_refused(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    r = await reserve(client, store["token"], "1")
    await confirm(client, store["token"], r["reservation_id"])
    before = await ledger_position(client)
    resp = await client.post(
        f"/v1/reservations/{r['reservation_id']}/release",
        headers=bearer(store["token"]),
        json={"reason": "oops"},
    )
    assert resp.status == 409
    assert "void" in (await resp.json())["error"]["message"]
    assert await ledger_position(client) == before


async def test_confirm_after_release_is_refused(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    r = await reserve(client, store["token"], "1")
    await client.post(
        f"/v1/reservations/{r['reservation_id']}/release",
        headers=bearer(tokens.operator),
        json={"reason": "operator cleanup"},
    )
    resp = await client.post(
        f"/v1/reservations/{r['reservation_id']}/confirm",
        headers=bearer(store["token"]),
        json={"document": DOCUMENT},
    )
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "reservation_released"


async def test_void_keeps_the_number_used(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    r = await reserve(client, store["token"], "1")
    await confirm(client, store["token"], r["reservation_id"])
    url = "/v1/numbers/invoice/all/1/void"
    resp = await client.post(url, headers=bearer(tokens.operator), json={"reason": "cancelled"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "void"
    repeat = await client.post(url, headers=bearer(tokens.operator), json={"reason": "cancelled"})
    assert repeat.status == 200
    assert (await reserve(client, store["token"], "2"))["number"] == 2
    missing = await client.post(
        "/v1/numbers/invoice/all/99/void", headers=bearer(tokens.operator), json={"reason": "x"}
    )
    assert missing.status == 404


async def test_event_id_makes_a_retry_return_the_same_answer(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    token = store["token"]
    event_id = str(uuid.uuid4())
    body = {"doctype": "invoice", "doc_id": "1", "date": "2026-03-01", "event_id": event_id}
    first = await client.post("/v1/reservations", headers=bearer(token), json=body)
    first_body = await first.json()
    await client.post(
        f"/v1/reservations/{first_body['reservation_id']}/release",
        headers=bearer(token),
        json={"reason": "write failed"},
    )
    # The reply of the first request was lost; the agent retries it after the release.
    retry = await client.post("/v1/reservations", headers=bearer(token), json=body)
    assert retry.status == 200
    retried = await retry.json()
    assert retried["reservation_id"] == first_body["reservation_id"]
    assert retried["number"] == first_body["number"]


async def test_yearly_reset_format_and_increment(client, tokens) -> None:
    resp = await client.put(
        "/v1/series/invoice",
        headers=bearer(tokens.operator),
        json={"reset": "yearly", "format": "INV-{YEAR}-{NUMBER:4}-{STORE}", "start": 100, "increment": 5},
    )
    assert resp.status == 200, await resp.text()
    store = await add_store(client, tokens.operator, "north")
    a = await reserve(client, store["token"], "1", date="2026-12-31")
    b = await reserve(client, store["token"], "2", date="2026-12-31")
    c = await reserve(client, store["token"], "3", date="2027-01-01")
    assert [a["formatted"], b["formatted"], c["formatted"]] == [
        "INV-2026-0100-north",
        "INV-2026-0105-north",
        "INV-2027-0100-north",
    ]
    assert (a["period"], c["period"]) == ("2026", "2027")


async def test_credit_notes_on_dedicated_counter(client, tokens) -> None:
    await client.put("/v1/series/creditnote", headers=bearer(tokens.operator), json={"format": "CN{NUMBER}"})
    store = await add_store(client, tokens.operator)
    token = store["token"]
    assert (await reserve(client, token, "1"))["number"] == 1
    cn = await reserve(client, token, "2", doctype="creditnote")
    assert (cn["series"], cn["number"], cn["formatted"]) == ("creditnote", 1, "CN1")
    assert (await reserve(client, token, "3"))["number"] == 2


async def test_credit_notes_on_shared_counter(client, tokens) -> None:
    resp = await client.put(
        "/v1/series/creditnote",
        headers=bearer(tokens.operator),
        json={"dedicated": False, "format": "CN{NUMBER}"},
    )
    assert resp.status == 200, await resp.text()
    store = await add_store(client, tokens.operator)
    token = store["token"]
    assert (await reserve(client, token, "1"))["number"] == 1
    shared = await reserve(client, token, "2", doctype="creditnote")
    assert (shared["series"], shared["number"], shared["formatted"]) == ("invoice", 2, "CN2")
    assert (await reserve(client, token, "3"))["number"] == 3
    # Leaving the shared counter now would make credit notes repeat numbers.
    before = await ledger_position(client)
    resp = await client.put(
        "/v1/series/creditnote", headers=bearer(tokens.operator), json={"dedicated": True}
    )
    assert resp.status == 409
    assert "dedicated" in (await resp.json())["error"]["message"]
    assert await ledger_position(client) == before


async def test_next_moves_forward_never_back(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    for i in range(3):
        await reserve(client, store["token"], str(i))
    before = await ledger_position(client)
    back = await client.put("/v1/series/invoice", headers=bearer(tokens.operator), json={"next": 3})
    assert back.status == 409
    assert "3" in (await back.json())["error"]["message"]
    assert await ledger_position(client) == before
    forward = await client.put("/v1/series/invoice", headers=bearer(tokens.operator), json={"next": 1000})
    assert forward.status == 200
    assert (await reserve(client, store["token"], "x"))["number"] == 1000
    series = await (await client.get("/v1/series", headers=bearer(tokens.reader))).json()
    invoice = next(s for s in series["series"] if s["name"] == "invoice")
    assert invoice["periods"] == [{"period": "all", "next": 1001, "highest": 1000, "released": []}]


async def test_list_pending_reservations(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    a = await reserve(client, store["token"], "1")
    b = await reserve(client, store["token"], "2")
    await confirm(client, store["token"], b["reservation_id"])
    resp = await client.get("/v1/reservations?state=reserved", headers=bearer(tokens.operator))
    rows = (await resp.json())["reservations"]
    assert [r["reservation_id"] for r in rows] == [a["reservation_id"]]
    assert rows[0]["store"] == "alpha"


async def test_reservations_listed_page_by_page_in_every_state(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    token = store["token"]
    made = [await reserve(client, token, str(i)) for i in range(1, 10)]
    for issued in made[::2]:
        await confirm(client, token, issued["reservation_id"])
    release = await client.post(
        f"/v1/reservations/{made[1]['reservation_id']}/release",
        headers=bearer(token),
        json={"reason": "gone"},
    )
    assert release.status == 200
    void = await client.post(
        f"/v1/numbers/invoice/all/{made[0]['number']}/void",
        headers=bearer(tokens.operator),
        json={"reason": "x"},
    )
    assert void.status == 200
    operator = bearer(tokens.operator)

    async def listed(query: str) -> list[dict]:
        resp = await client.get(f"/v1/reservations?{query}", headers=operator)
        assert resp.status == 200, await resp.text()
        return (await resp.json())["reservations"]

    everything = await listed("limit=1000")
    assert sorted(r["reservation_id"] for r in everything) == sorted(r["reservation_id"] for r in made)
    assert [(r["reserved_at"], r["reservation_id"]) for r in everything] == sorted(
        (r["reserved_at"], r["reservation_id"]) for r in everything
    )
    assert {r["state"] for r in everything} == {"reserved", "issued", "released", "void"}
    # Two at a time, each page after the last of the one before: the same list, once each.
    paged: list[dict] = []
    while page := await listed("limit=2" + (f"&after={paged[-1]['reservation_id']}" if paged else "")):
        assert len(page) <= 2
        paged += page
    assert paged == everything
    for state in ("reserved", "issued", "released", "void"):
        assert await listed(f"state={state}&limit=1000") == [r for r in everything if r["state"] == state]
    issued = [r for r in everything if r["state"] == "issued"]
    assert await listed(f"state=issued&after={issued[1]['reservation_id']}") == issued[2:]
    assert await listed(f"after={uuid.uuid4()}") == []  # an id that is no reservation
