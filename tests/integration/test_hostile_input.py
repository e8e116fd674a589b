"""Hostile input is refused at the boundary with a 4xx that says why, and hurts no one.

Each input of issue 11 goes through a real app (the coordinator's API and Get feed, the
agent's Get feed): the answer is a 4xx in the usual error shape naming the problem, the
ledger head has not moved, and a good request right after is served as usual.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from coordinator.events.canonical import MAX_DEPTH, NotCanonical, ensure_canonical
from coordinator.ledger.numbering import MAX_START
from getfeed.query import BILLING_EXTENSION_PATH
from tests.conftest import bearer
from tests.integration.test_webservice_agent import TOKEN as AGENT_TOKEN
from tests.integration.test_webservice_agent import feed_client
from tests.integration.test_webservice_agent import store as whmcs_store  # noqa: F401  # a fixture
from tests.support.api_helpers import DOCUMENT, add_store, confirm, ledger_position, reserve

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
HUGE = "9" * 5000


def nested(depth: int) -> Any:
    """A list holding a list … ``depth`` levels of lists in all."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def refused(
    client: Any, method: str, path: str, status: int, named: str, **request: Any
) -> dict[str, Any]:
    """Send a request that must be refused with ``status``, its message naming ``named``,
    and must leave the ledger as it was."""
    before = await ledger_position(client)
    resp = await client.request(method, path, **request)
    body = await resp.json()
    assert resp.status == status, body
    error = body["error"]
    assert named in error["code"] + " " + error["message"], error
    assert await ledger_position(client) == before
    return error


# -- the nesting limit itself --------------------------------------------------------------------


def test_nesting_up_to_the_limit_is_accepted_one_more_is_refused() -> None:
    ensure_canonical(nested(MAX_DEPTH))
    ensure_canonical({"a": nested(MAX_DEPTH - 1)})
    with pytest.raises(NotCanonical, match=f"deeper than {MAX_DEPTH}"):
        ensure_canonical(nested(MAX_DEPTH + 1))
    with pytest.raises(NotCanonical, match=r"^data\.a(\[0\]){31}: nested deeper than 32"):
        ensure_canonical({"a": nested(MAX_DEPTH)})


# -- the API -------------------------------------------------------------------------------------


async def test_reserve_refuses_nul_integer_dates_and_other_digits(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    auth = bearer(store["token"])
    good = {"doctype": "invoice", "doc_id": "1", "date": "2026-03-01"}
    for body, named in [
        ({**good, "doc_id": "a\x00b"}, "NUL"),
        ({**good, "date": 0}, "YYYY-MM-DD"),
        ({**good, "date": 1767225600}, "YYYY-MM-DD"),
        ({**good, "date": "2026-03-01T00:00:00"}, "YYYY-MM-DD"),
        ({**good, "date": "2026-03-01".translate(ARABIC_INDIC)}, "YYYY-MM-DD"),
        ({**good, "date": "2026-02-30"}, "date"),
        ({**good, "doc_id": 1}, "doc_id"),
        ({**good, "doc_id": "x" * 65}, "doc_id"),
        ({**good, "pad": nested(400)}, "nested deeper than 32"),
        ({**good, "pad": 2**63}, "integer out of range"),
        ({**good, "pad": 1.5}, "decimal numbers"),
    ]:
        await refused(client, "POST", "/v1/reservations", 400, named, json=body, headers=auth)
    # A lone surrogate cannot even be read as JSON; nor can bytes that are not UTF-8.
    for raw in (
        b'{"doctype": "invoice", "doc_id": "\\ud800", "date": "2026-03-01"}',
        b'{"doctype": "invoice", "doc_id": "\xff", "date": "2026-03-01"}',
    ):
        await refused(
            client,
            "POST",
            "/v1/reservations",
            400,
            "invalid_json",
            data=raw,
            headers={**auth, "Content-Type": "application/json"},
        )
    reservation = await reserve(client, store["token"], "1")
    assert reservation["number"] == 1 and reservation["date"] == "2026-03-01"


async def test_documents_refuse_nul_keys_and_deep_nesting(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    auth = bearer(store["token"])
    reservation = await reserve(client, store["token"], "1")
    path = f"/v1/reservations/{reservation['reservation_id']}/confirm"
    for document, named in [
        ({**DOCUMENT, "DocData": {"Items": nested(400)}}, "nested deeper than 32"),
        ({**DOCUMENT, "DocData": {"a\x00": "x"}}, "NUL"),
        ({**DOCUMENT, "ClientData": {"Name": "a\x00"}}, "NUL"),
        ({**DOCUMENT, "DocData": {"Total": 2**63 - 1 + 1}}, "integer out of range"),
    ]:
        await refused(client, "POST", path, 400, named, json={"document": document}, headers=auth)
    issued = await confirm(client, store["token"], reservation["reservation_id"])
    assert issued["state"] == "issued"
    for doc_id, named in [("a%00b", "NUL"), ("x" * 65, "longer than 64")]:
        await refused(
            client,
            "PUT",
            f"/v1/documents/invoice/{doc_id}",
            400,
            named,
            json={"document": DOCUMENT},
            headers=auth,
        )
    resp = await client.put("/v1/documents/invoice/1", json={"document": DOCUMENT}, headers=auth)
    assert resp.status == 200, await resp.text()


async def test_series_numbers_stay_within_bigint(client, tokens) -> None:
    operator = bearer(tokens.operator)
    for body, named in [
        ({"next": 2**63}, "integer out of range"),
        ({"next": 2**63 - 1}, "next"),
        ({"next": MAX_START + 1}, "next"),
        ({"start": MAX_START + 1}, "start"),
        ({"increment": 10**6 + 1}, "increment"),
        ({"start": "5"}, "start"),
        ({"start": 5.0}, "decimal numbers"),
        ({"dedicated": 1}, "dedicated"),
        ({"format": "{NUMBER}" + "x" * 60}, "format"),
        ({"format": "{NUMBER:" + "5".translate(ARABIC_INDIC) + "}"}, "format"),
        ({"next": 5, "period": "2026".translate(ARABIC_INDIC)}, "period"),
    ]:
        await refused(client, "PUT", "/v1/series/invoice", 400, named, json=body, headers=operator)
    # The highest next a series takes still leaves room to count on.
    resp = await client.put(
        "/v1/series/invoice", json={"next": MAX_START, "increment": 10**6}, headers=operator
    )
    assert resp.status == 200, await resp.text()
    store = await add_store(client, tokens.operator)
    first = await reserve(client, store["token"], "1")
    second = await reserve(client, store["token"], "2")
    assert (first["number"], second["number"]) == (MAX_START, MAX_START + 10**6)


async def test_void_release_peer_and_heartbeat_refuse_hostile_text(client, tokens) -> None:
    operator = bearer(tokens.operator)
    store = await add_store(client, tokens.operator)
    reservation = await reserve(client, store["token"], "1")
    release = f"/v1/reservations/{reservation['reservation_id']}/release"
    await refused(client, "POST", release, 400, "NUL", json={"reason": "no\x00pe"}, headers=operator)
    for number, named in [
        ("²", "invalid_number"),
        ("1".translate(ARABIC_INDIC), "0-9"),
        ("9" * 20, "at most 19"),
        (HUGE, "invalid_number"),
    ]:
        await refused(
            client,
            "POST",
            f"/v1/numbers/invoice/all/{number}/void",
            400,
            named,
            json={"reason": "typo"},
            headers=operator,
        )
    arabic_year = "2026".translate(ARABIC_INDIC)
    await refused(
        client,
        "POST",
        f"/v1/numbers/invoice/{arabic_year}/1/void",
        400,
        "period",
        json={"reason": "typo"},
        headers=operator,
    )
    await refused(
        client,
        "POST",
        "/v1/peers",
        400,
        "NUL",
        json={"name": "beta", "url": "http://x\x00y"},
        headers=operator,
    )
    peer = bearer(store["token"])
    for body, named in [
        ({"agent_version": "1.0\x00"}, "NUL"),
        ({"agent_version": "1.0", "settings": {"k\x00": 1}}, "NUL"),
        ({"agent_version": "1.0", "settings": nested(40)}, "settings"),
    ]:
        await refused(client, "POST", "/v1/heartbeat", 400, named, json=body, headers=peer)
    resp = await client.post(release, json={"reason": "cancelled"}, headers=operator)
    assert resp.status == 200 and (await resp.json())["state"] == "released"
    resp = await client.post("/v1/heartbeat", json={"agent_version": "1.0"}, headers=peer)
    assert resp.status == 200, await resp.text()


async def test_query_and_path_parameters(client, tokens) -> None:
    operator = bearer(tokens.operator)
    for path, status, named in [
        ("/v1/events?limit=" + "10".translate(ARABIC_INDIC), 400, "0-9"),
        ("/v1/events?after=" + HUGE, 400, "invalid_query"),
        ("/v1/events?limit=", 400, "invalid_query"),
        ("/v1/reservations?after=" + "1" * 32, 400, "reservation id"),
        ("/v1/reservations?status=reserved", 400, "unknown query parameter 'status'"),
    ]:
        await refused(client, "GET", path, status, named, headers=operator)
    for path in (
        "/v1/peers/" + "1".translate(ARABIC_INDIC) * 32 + "/rotate-token",
        "/v1/warnings/" + "a" * 5000 + "/resolve",
    ):
        error = await refused(client, "POST", path, 404, "not_found", headers=operator)
        assert len(error["message"]) < 200
    resp = await client.get("/v1/events?limit=1", headers=operator)
    assert resp.status == 200 and "events" in await resp.json()


# -- the Get feeds -------------------------------------------------------------------------------

FEED_REFUSALS = [
    ({"start": HUGE}, "longer than 200"),
    ({"start": "9" * 150}, "before year 1"),
    ({"start": "5".translate(ARABIC_INDIC)}, "start"),
    ({"start": "2026-03-01".translate(ARABIC_INDIC)}, "start"),
    ({"start": "2026-03-01", "end": "2026-03-05".translate(ARABIC_INDIC)}, "end"),
    ({"invoiceid": HUGE[:300]}, "longer than 200"),
    ({"invoiceid": "9" * 20}, "invoiceid"),
    ({"invoiceid": "7".translate(ARABIC_INDIC)}, "invoiceid"),
    ({"invoicenum": "A\x00"}, "NUL"),
    ({"store": "x" * 201}, "longer than 200"),
]


async def test_coordinator_feed_refuses_hostile_fields(client, tokens) -> None:
    for fields, named in FEED_REFUSALS:
        for as_json in (False, True):
            body = {"action": "Get", "token": tokens.reader, **fields}
            resp = await (
                client.post("/v1/webservice", json=body)
                if as_json
                else client.post("/v1/webservice", data=body)
            )
            answer = await resp.json()
            assert resp.status == 400 and answer["result"] == "error", (fields, answer)
            assert named in answer["message"], answer
    # Nested 1000 deep where a text is expected: refused, not a crash while quoting it.
    deep = '{"action": "Get", "ws": ' + "[" * 1000 + "]" * 1000 + "}"
    resp = await client.post(BILLING_EXTENSION_PATH, data=deep, headers={"Content-Type": "application/json"})
    assert resp.status == 400 and "ws must be a string" in (await resp.json())["message"]
    resp = await client.post("/v1/webservice", data={"action": "Get", "token": tokens.reader})
    assert resp.status == 200 and await resp.json() == {}


@pytest.mark.parametrize("path", ["/v1/webservice", BILLING_EXTENSION_PATH])
async def test_unreadable_form_bodies_are_refused_without_a_token(client, tokens, path: str) -> None:
    for content_type, body in [
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=zz", b"garbage"),
        ("multipart/form-data; boundary=zz", b"--zz\r\n-1825--zz--\r\n"),
        ("application/x-www-form-urlencoded; charset=nonsense", b"a=b"),
    ]:
        resp = await client.post(path, data=body, headers={"Content-Type": content_type})
        answer = await resp.json()
        assert resp.status == 400, answer
        assert answer["result"] == "error" and "form body" in answer["message"]
    form = {"action": "Get", "token": tokens.reader, "ws": "einvoice"}
    resp = await client.post(path, data=aiohttp.FormData(form))
    assert resp.status == 200


async def test_agent_feed_refuses_hostile_fields(aiohttp_client, whmcs_store) -> None:  # noqa: F811
    agent = await feed_client(aiohttp_client, whmcs_store)
    for fields, named in FEED_REFUSALS:
        body = {"action": "Get", "token": AGENT_TOKEN, **fields}
        resp = await agent.post("/webservice", data=body)
        answer = await resp.json()
        assert resp.status == 400 and answer["result"] == "error", (fields, answer)
        assert named in answer["message"], answer
    resp = await agent.post(
        BILLING_EXTENSION_PATH, data=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}
    )
    assert resp.status == 400 and "form body" in (await resp.json())["message"]
    resp = await agent.post("/webservice", data={"action": "Get", "token": AGENT_TOKEN, "start": "All"})
    assert resp.status == 200 and await resp.json()
