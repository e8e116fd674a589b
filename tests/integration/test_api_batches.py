"""Batch reserve and batch confirm: many documents per request, each answered on its own."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import asyncpg

from coordinator.ledger.writer import BULK_BESIDE_SINGLES
from tests.conftest import bearer
from tests.support.api_helpers import (
    DOCUMENT,
    add_store,
    ledger_held,
    ledger_position,
    reserve,
    until_writer_waits,
)


async def _post(client: Any, path: str, token: str, body: Any) -> tuple[int, Any]:
    resp = await client.post(path, headers=bearer(token), json=body)
    return resp.status, await resp.json()


def _doc(doc_id: str, day: str = "2026-03-01", **extra: Any) -> dict[str, Any]:
    return {"doctype": "invoice", "doc_id": doc_id, "date": day, **extra}


async def test_a_batch_is_numbered_in_date_then_id_order_and_answered_in_its_own(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    docs = [
        _doc("10", "2026-03-02"),
        _doc("9", "2026-03-02"),
        _doc("100", "2026-03-01"),
        _doc("2", "2026-03-01"),
    ]
    status, body = await _post(client, "/v1/reservations/batch", store["token"], {"documents": docs})
    assert status == 200, body
    assert [(r["status"], r["doc_id"], r["number"]) for r in body["results"]] == [
        (201, "10", 4),
        (201, "9", 3),
        (201, "100", 2),
        (201, "2", 1),
    ]
    # Asked again (a retry, one document repeated, one new): the same reservations, 200.
    status, again = await _post(
        client,
        "/v1/reservations/batch",
        store["token"],
        {"documents": [*docs, _doc("2"), _doc("11", "2026-03-03")]},
    )
    assert [r["status"] for r in again["results"]] == [200] * 5 + [201]
    assert [r["reservation_id"] for r in again["results"][:4]] == [
        r["reservation_id"] for r in body["results"]
    ]
    assert again["results"][4]["reservation_id"] == body["results"][3]["reservation_id"]
    assert again["results"][5]["number"] == 5


async def test_one_bad_item_never_fails_the_others(client, tokens) -> None:
    a = await add_store(client, tokens.operator, "a")
    b = await add_store(client, tokens.operator, "b")
    taken = str(uuid.uuid4())
    await _post(client, "/v1/reservations", a["token"], {**_doc("1"), "event_id": taken})
    status, body = await _post(
        client,
        "/v1/reservations/batch",
        b["token"],
        {"documents": [_doc("1"), {**_doc("2"), "event_id": taken}, _doc("3")]},
    )
    assert status == 200, body
    first, reused, third = body["results"]
    assert (first["status"], third["status"]) == (201, 201)
    assert (reused["status"], reused["error"]["code"]) == (409, "event_id_reused")
    assert (first["number"], third["number"]) == (2, 3)

    # Confirm: a foreign reservation and an unknown one refused, the store's own confirmed.
    foreign = (await reserve(client, a["token"], "9"))["reservation_id"]
    status, body = await _post(
        client,
        "/v1/reservations/confirm",
        b["token"],
        {
            "confirmations": [
                {"reservation_id": first["reservation_id"], "document": DOCUMENT},
                {"reservation_id": foreign, "document": DOCUMENT},
                {"reservation_id": str(uuid.uuid4()), "document": DOCUMENT},
                {"reservation_id": third["reservation_id"], "document": DOCUMENT},
            ]
        },
    )
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == [200, 403, 404, 200]
    assert [r.get("state") for r in body["results"]] == ["issued", None, None, "issued"]
    # A retry of the confirms answers the same.
    status, again = await _post(
        client,
        "/v1/reservations/confirm",
        b["token"],
        {"confirmations": [{"reservation_id": first["reservation_id"], "document": DOCUMENT}]},
    )
    assert again["results"] == body["results"][:1]


async def test_a_malformed_batch_is_refused_whole(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    before = await ledger_position(client)
    for documents in (
        [],
        [_doc("1"), {"doctype": "invoice", "doc_id": "2"}],
        [_doc(str(k)) for k in range(501)],
    ):
        status, body = await _post(client, "/v1/reservations/batch", store["token"], {"documents": documents})
        assert status == 400 and body["error"]["code"] == "invalid_body", body
    status, body = await _post(
        client,
        "/v1/reservations/confirm",
        store["token"],
        {"confirmations": [{"reservation_id": "x", "document": DOCUMENT}]},
    )
    assert status == 400, body
    assert await ledger_position(client) == before


async def test_five_hundred_documents_in_one_request(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    status, body = await _post(
        client,
        "/v1/reservations/batch",
        store["token"],
        {"documents": [_doc(str(k)) for k in range(500, 0, -1)]},
    )
    assert status == 200
    assert [r["number"] for r in body["results"]] == list(range(500, 0, -1))
    status, body = await _post(
        client,
        "/v1/reservations/confirm",
        store["token"],
        {
            "confirmations": [
                {"reservation_id": r["reservation_id"], "document": DOCUMENT} for r in body["results"]
            ]
        },
    )
    assert status == 200 and {r["state"] for r in body["results"]} == {"issued"}


async def test_a_single_request_does_not_wait_behind_a_big_batch(client, tokens, database_url: str) -> None:
    """While single requests flow, a ledger transaction takes the single requests waiting
    first and only a few batch items: a reserve sent while 500 documents wait is written
    before most of them."""
    big = await add_store(client, tokens.operator, "big")
    small = await add_store(client, tokens.operator, "small")
    async with ledger_held(database_url) as holder:
        first = asyncio.create_task(_post(client, "/v1/reservations", small["token"], _doc("1")))
        await until_writer_waits(holder)  # the first single request waits for the lock
        batch = asyncio.create_task(
            _post(
                client,
                "/v1/reservations/batch",
                big["token"],
                {"documents": [_doc(str(k)) for k in range(1, 501)]},
            )
        )
        single = asyncio.create_task(_post(client, "/v1/reservations", small["token"], _doc("2")))
        for _ in range(500):  # until both wait in the queue, at most 5 s
            if await _waiting(client, "single") and await _waiting(client, "batch") == 500:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the requests never reached the queue")
    (_, first_body), (status, batch_body), (single_status, single_body) = await asyncio.gather(
        first, batch, single
    )
    assert (first_body["number"], status, single_status) == (1, 200, 201)
    assert sorted(r["number"] for r in batch_body["results"])[-1] == 502
    # The single request's transaction (its events share their time) held few batch items.
    conn = await asyncpg.connect(database_url)
    try:
        alongside = await conn.fetchval(
            "SELECT count(*) FROM events WHERE recorded_at = (SELECT recorded_at FROM events"
            " WHERE position = $1)",
            single_body["receipt"]["position"],
        )
    finally:
        await conn.close()
    assert alongside <= 1 + BULK_BESIDE_SINGLES, alongside


async def _waiting(client: Any, lane: str) -> int:
    text = await (await client.get("/metrics")).text()
    found = re.search(rf'^concord_ledger_queued_commands\{{lane="{lane}"\}} (\S+)$', text, re.M)
    assert found, "the queue's gauge is missing"
    return int(float(found.group(1)))
