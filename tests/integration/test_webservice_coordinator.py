"""POST /v1/webservice: the Get feed over every store's issued documents, from the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from coordinator.app import create_app
from coordinator.http.keys import POOL
from coordinator.settings import Settings
from coordinator.webservice import feed as feed_module
from getfeed.query import BILLING_EXTENSION_PATH
from tests.conftest import Tokens, bearer
from tests.support.api_helpers import add_store, reserve
from tests.support.fake_vies import PATH as VIES_PATH
from tests.support.fake_vies import FakeVies


def snapshot(
    doc_id: int,
    day: str,
    *,
    status: str = "Unpaid",
    country: str = "DE",
    tax_id: str = "",
    credit_note: bool = False,
) -> dict[str, Any]:
    sign = "-" if credit_note else ""
    return {
        "ClientData": {
            "UserID": 5,
            "Firstname": "Anna",
            "Lastname": "Müller",
            "ClientName": "Anna Müller",
            "CompanyName": "",
            "Email": "anna@example.com",
            "Address1": "Hauptstraße 1",
            "Address2": "",
            "City": "Berlin",
            "State": "Berlin",
            "PostCode": "10115",
            "Country": country,
            "PhoneNumber": "+49.301234567",
            "Currency": 1,
            "TaxExempt": "0",
            "TaxID": tax_id,
            "CustomFields": [{"id": 3, "fieldname": "PO", "value": "PO-1"}],
        },
        "DocData": {
            "Type": "CreditNote" if credit_note else "Invoice",
            "ID": doc_id,
            "Num": "",
            "Status": status,
            "Date": day,
            "DueDate": day,
            "DatePaid": "",
            "Subtotal": f"{sign}10.00",
            "Credit": "0.00",
            "Tax": f"{sign}1.90",
            "Tax2": "0.00",
            "TaxRate": "19.00",
            "TaxRate2": "0.00",
            "Total": f"{sign}11.90",
            "PaymentMethod": "paypal",
            "Items": [
                {
                    "ID": doc_id * 10,
                    "Type": "Hosting",
                    "RelID": 4,
                    "Description": "VPS Medium",
                    "Amount": f"{sign}10.00",
                    "Taxed": True,
                }
            ],
        },
    }


async def issue(client: Any, token: str, doc_id: int, day: str, **kwargs: Any) -> str:
    doctype = "creditnote" if kwargs.get("credit_note") else "invoice"
    reservation = await reserve(client, token, str(doc_id), doctype=doctype, date=day)
    document = snapshot(doc_id, day, **kwargs)
    document["DocData"]["Num"] = reservation["formatted"]
    resp = await client.post(
        f"/v1/reservations/{reservation['reservation_id']}/confirm",
        headers=bearer(token),
        json={"document": document},
    )
    assert resp.status == 200, await resp.text()
    return reservation["formatted"]


async def report_country(client: Any, token: str, country: str) -> None:
    resp = await client.post(
        "/v1/heartbeat",
        headers=bearer(token),
        json={"agent_version": "1", "settings": {"country": country, "timezone": "UTC"}},
    )
    assert resp.status == 200


@pytest.fixture
async def vies(aiohttp_server) -> AsyncIterator[tuple[FakeVies, str]]:
    fake = FakeVies({"DE123456789"})
    server = await aiohttp_server(fake.app())
    yield fake, str(server.make_url(VIES_PATH))


@pytest.fixture
async def feed(aiohttp_client, settings: Settings, tokens: Tokens, vies) -> Any:
    _, url = vies
    return await aiohttp_client(create_app(settings.model_copy(update={"vies_url": url})))


async def get(
    client: Any,
    token: str | None,
    path: str = "/v1/webservice",
    headers: dict[str, str] | None = None,
    **fields: str,
) -> tuple[int, Any]:
    body = {"action": "Get", **fields}
    if token is not None:
        body["token"] = token
    resp = await client.post(path, data=body, headers=headers or {})
    assert resp.content_type == "application/json"
    return resp.status, await resp.json()


@pytest.fixture
async def stores(feed, tokens: Tokens) -> dict[str, dict[str, Any]]:
    alpha = await add_store(feed, tokens.operator, "alpha")
    beta = await add_store(feed, tokens.operator, "beta")
    await report_country(feed, alpha["token"], "NL")
    await report_country(feed, beta["token"], "DE")
    await issue(feed, alpha["token"], 7, "2026-03-02")
    await issue(feed, alpha["token"], 10, "2026-03-01", tax_id="DE123456789")
    await issue(feed, beta["token"], 3, "2026-03-01")
    await issue(feed, beta["token"], 12, "2026-03-05", country="US")
    await issue(feed, beta["token"], 13, "2026-03-03", credit_note=True)
    resp = await feed.post(
        "/v1/documents/import",
        headers=bearer(beta["token"]),
        json={
            "documents": [
                {
                    "doctype": "invoice",
                    "doc_id": "2",
                    "number": "OLD-2",
                    "document": snapshot(2, "2025-12-30", status="Paid"),
                }
            ]
        },
    )
    assert (await resp.json())["imported"] == 1
    return {"alpha": alpha, "beta": beta}


ALL_KEYS = ["beta/2", "beta/3", "alpha/10", "alpha/7", "beta/13", "beta/12"]


async def test_every_store_in_date_then_id_order(feed, tokens, stores, monkeypatch) -> None:
    status, answer = await get(feed, tokens.reader)
    assert status == 200
    assert list(answer) == ALL_KEYS
    for key, document in answer.items():
        store, doc_id = key.split("/")
        assert document["Store"] == store
        assert document["DocData"]["ID"] == int(doc_id)
        assert set(document) == {"Store", "ClientData", "DocData"}
    assert answer["alpha/7"]["DocData"]["Items"][0] == {
        "ID": 70,
        "Type": "Hosting",
        "RelID": 4,
        "Description": "VPS Medium",
        "Amount": "10.00",
        "Taxed": True,
    }
    # Keyset pages of two still give every document once, in order.
    monkeypatch.setattr(feed_module, "PAGE_SIZE", 2)
    _, paged = await get(feed, tokens.reader)
    assert paged == answer


async def test_filters(feed, tokens, stores) -> None:
    async def keys(**fields: str) -> list[str]:
        status, answer = await get(feed, tokens.reader, **fields)
        assert status == 200, answer
        return list(answer)

    assert await keys(store="beta") == ["beta/2", "beta/3", "beta/13", "beta/12"]
    assert await keys(store="alpha", doctype="Invoices") == ["alpha/10", "alpha/7"]
    assert await keys(doctype="creditnote") == ["beta/13"]
    assert await keys(start="2026-03-01", end="2026-03-02") == ["beta/3", "alpha/10", "alpha/7"]
    assert await keys(start="2026-03-03") == ["beta/13", "beta/12"]  # to today
    assert await keys(invoiceid="7") == ["alpha/7"]
    assert await keys(invoiceid="3", store="alpha") == []
    assert await keys(invoicenum="old-2") == ["beta/2"]
    assert await keys(start="All", doctype="") == ALL_KEYS


async def test_token_in_the_body_or_as_bearer(feed, tokens, stores) -> None:
    assert (await get(feed, tokens.operator))[0] == 200
    status, answer = await get(feed, None, headers=bearer(tokens.reader))
    assert (status, list(answer)) == (200, ALL_KEYS)
    for token, expected in ((None, 401), ("not-a-token", 401), (stores["alpha"]["token"], 403)):
        status, answer = await get(feed, token)
        assert status == expected
        assert answer["result"] == "error" and "token" in answer["message"]


async def test_a_document_updated_after_issue_shows_its_new_status(feed, tokens, stores) -> None:
    paid = snapshot(7, "2026-03-02", status="Paid")
    paid["DocData"]["DatePaid"] = "2026-03-04 10:11:12"
    resp = await feed.put(
        "/v1/documents/invoice/7", headers=bearer(stores["alpha"]["token"]), json={"document": paid}
    )
    assert (await resp.json())["changed"] is True
    _, answer = await get(feed, tokens.reader, invoiceid="7")
    assert answer["alpha/7"]["DocData"]["Status"] == "Paid"
    assert answer["alpha/7"]["DocData"]["DatePaid"] == "2026-03-04 10:11:12"
    assert list((await get(feed, tokens.reader))[1]) == ALL_KEYS  # still once, same place


async def test_europe_from_each_stores_reported_country(feed, tokens, stores, vies) -> None:
    fake, _ = vies
    _, answer = await get(feed, tokens.reader)
    consumer = {"MemberState": "DE", "Region": "Europe", "MonetaryUnion": True, "VIES": False}
    # A German consumer is MOSS for the Dutch store, not for the German one.
    assert answer["alpha/7"]["ClientData"]["Europe"] == {**consumer, "MOSS": True}
    assert answer["beta/3"]["ClientData"]["Europe"] == {**consumer, "MOSS": False}
    assert answer["alpha/10"]["ClientData"]["Europe"] == {**consumer, "VIES": True, "MOSS": False}
    assert answer["beta/12"]["ClientData"]["Europe"] is None
    assert fake.calls == [("DE", "123456789")]
    async with feed.server.app[POOL].acquire() as conn:
        cached = await conn.fetch("SELECT country, number, valid FROM vies_cache")
    assert [tuple(r) for r in cached] == [("DE", "123456789", True)]
    # An outage after the verdict was cached changes nothing.
    fake.outage = True
    _, again = await get(feed, tokens.reader)
    assert again == answer
    assert len(fake.calls) == 1


async def test_errors_and_the_billing_extension_alias(feed, tokens, stores) -> None:
    status, answer = await get(feed, tokens.reader, store="gamma")
    assert status == 400
    assert "'gamma'" in answer["message"] and "alpha, beta" in answer["message"]
    status, answer = await get(feed, tokens.reader, start="yesterday", end="2026-03-01")
    assert (status, answer["result"]) == (400, "error")
    assert "end '2026-03-01'" in answer["message"]
    status, answer = await get(feed, tokens.reader, BILLING_EXTENSION_PATH, ws="einvoice", store="alpha")
    assert (status, list(answer)) == (200, ["alpha/10", "alpha/7"])
    status, answer = await get(feed, tokens.reader, BILLING_EXTENSION_PATH)
    assert status == 400 and "ws=einvoice" in answer["message"]


async def test_no_documents_is_an_empty_object(feed, tokens) -> None:
    assert await get(feed, tokens.reader) == (200, {})
    resp = await feed.post(
        "/v1/webservice", data={"action": "Get", "token": tokens.reader}, headers={"X-Request-Id": "trace-me"}
    )
    assert resp.headers["X-Request-Id"] == "trace-me"  # set before the stream starts
