"""The agent's Get feed against a generated WHMCS store in MariaDB, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from agent.client import CoordinatorClient
from agent.numbering import Numbering
from agent.rules import RulesHolder
from agent.server import create_agent_app
from agent.webservice import AgentFeed
from agent.whmcs.database import create_agent_tables, create_pool, parse_mysql_url
from agent.whmcs.queries import DueRules
from getfeed.query import BILLING_EXTENSION_PATH
from getfeed.vies import ViesSettings
from simulator.generator import StoreGenerator
from simulator.whmcs import fetch_all
from tests.support.fake_vies import PATH as VIES_PATH
from tests.support.fake_vies import FakeVies

TOKEN = "webservice-secret"
CLIENT_FIELDS = {
    "UserID",
    "Firstname",
    "Lastname",
    "ClientName",
    "CompanyName",
    "Email",
    "Address1",
    "Address2",
    "City",
    "State",
    "PostCode",
    "Country",
    "PhoneNumber",
    "Currency",
    "TaxExempt",
    "CustomFields",
    "Europe",
}
DOC_FIELDS = {
    "Type",
    "ID",
    "Num",
    "Status",
    "Date",
    "DueDate",
    "DatePaid",
    "Subtotal",
    "Credit",
    "Tax",
    "Tax2",
    "TaxRate",
    "TaxRate2",
    "PaymentMethod",
    "Items",
}
ITEM_FIELDS = {"ID", "Type", "RelID", "Description", "Amount", "Taxed"}
EXTRA_FIELDS = {"ClientData": {"TaxID"}, "DocData": {"Total"}}  # ours, beside the contract's
AMOUNT = re.compile(r"-?\d+\.\d{2}")


@dataclass
class Store:
    generator: StoreGenerator
    pool: Any

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            return await fetch_all(conn, sql, args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)


@pytest.fixture
async def store(whmcs_database_factory) -> AsyncIterator[Store]:
    generator = StoreGenerator(11, "alpha", clients=30, invoices=150, numbered_until=date(2025, 1, 15))
    url = whmcs_database_factory(generator)
    pool = await create_pool(parse_mysql_url(url))
    await create_agent_tables(pool)
    yield Store(generator, pool)
    pool.close()
    await pool.wait_closed()


async def feed_client(
    aiohttp_client,
    store: Store,
    *,
    token: str = TOKEN,
    timezone: str = "Europe/Amsterdam",
    country: str = "NL",
    vies_url: str = "",
    credit_note_rule: str = "negative_total",
) -> Any:
    feed = AgentFeed(
        pool=store.pool,
        rules=DueRules("payment", "payment", credit_note_rule),
        has_invoicedata=True,
        token=token,
        timezone=timezone,
        country=country,
        vies=ViesSettings(vies_url, 2.0, 7, 50),
    )
    numbering = Numbering(
        store.pool,
        CoordinatorClient("http://127.0.0.1:9", "unused"),
        RulesHolder("negative_total"),
        10,
        asyncio.Event(),
    )
    return await aiohttp_client(create_agent_app(numbering, "", {}, feed))


async def get(
    client: Any, path: str = "/webservice", *, as_json: bool = False, **fields: Any
) -> tuple[int, Any]:
    body = {"action": "Get", "token": TOKEN, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    resp = await (client.post(path, json=body) if as_json else client.post(path, data=body))
    assert resp.content_type == "application/json"
    return resp.status, json.loads(await resp.read())


def money(value: Decimal) -> str:
    return f"{value:.2f}"


async def test_every_field_of_an_invoice_and_a_credit_note(aiohttp_client, store: Store) -> None:
    client = await feed_client(aiohttp_client, store)
    invoice = (
        await store.rows(
            "SELECT i.* FROM tblinvoices i JOIN mod_invoicedata s ON s.invoiceid = i.id"
            " WHERE i.invoicenum <> '' AND i.total > 0 AND s.clientsdetails LIKE '{%%'"
            " AND i.status = 'Paid' ORDER BY i.id LIMIT 1"
        )
    )[0]
    credit = (
        await store.rows("SELECT * FROM tblinvoices WHERE invoicenum <> '' AND total < 0 ORDER BY id LIMIT 1")
    )[0]
    for row, doc_type in ((invoice, "Invoice"), (credit, "CreditNote")):
        status, answer = await get(client, invoiceid=str(row["id"]))
        assert status == 200
        assert list(answer) == [str(row["id"])]
        document = answer[str(row["id"])]
        # Transactions: the extension the KashFlow sync reads (WHMCS's tblaccounts rows).
        assert set(document) == {"ClientData", "DocData", "Transactions"}
        client_data, doc = document["ClientData"], document["DocData"]
        assert set(client_data) == CLIENT_FIELDS | EXTRA_FIELDS["ClientData"]
        assert set(doc) == DOC_FIELDS | EXTRA_FIELDS["DocData"]
        assert doc["Type"] == doc_type
        assert (doc["ID"], doc["Num"], doc["Status"]) == (row["id"], row["invoicenum"], row["status"])
        assert doc["Date"] == row["date"].isoformat()
        assert doc["DueDate"] == row["duedate"].isoformat()
        paid = row["datepaid"]
        assert doc["DatePaid"] == (paid.strftime("%Y-%m-%d %H:%M:%S") if isinstance(paid, datetime) else "")
        for name, column in (
            ("Subtotal", "subtotal"),
            ("Credit", "credit"),
            ("Tax", "tax"),
            ("Tax2", "tax2"),
            ("TaxRate", "taxrate"),
            ("TaxRate2", "taxrate2"),
            ("Total", "total"),
        ):
            assert doc[name] == money(row[column]), name
            assert AMOUNT.fullmatch(doc[name])
        assert doc["PaymentMethod"] == row["paymentmethod"].strip()
        items = await store.rows("SELECT * FROM tblinvoiceitems WHERE invoiceid = %s ORDER BY id", row["id"])
        assert [set(i) for i in doc["Items"]] == [ITEM_FIELDS] * len(items)
        assert doc["Items"] == [
            {
                "ID": i["id"],
                "Type": i["type"],
                "RelID": i["relid"],
                "Description": i["description"].strip(),
                "Amount": money(i["amount"]),
                "Taxed": bool(i["taxed"]),
            }
            for i in items
        ]
        assert client_data["UserID"] == row["userid"]
        assert client_data["TaxExempt"] in ("0", "1")
        assert isinstance(client_data["Currency"], int)
        assert all(set(f) == {"id", "fieldname", "value"} for f in client_data["CustomFields"])
        for value in client_data.values():
            if isinstance(value, str):
                assert value == value.strip()
    # The snapshot is what the invoice shows, trimmed.
    [snapshot] = await store.rows("SELECT * FROM mod_invoicedata WHERE invoiceid = %s", invoice["id"])
    details, fields = json.loads(snapshot["clientsdetails"]), json.loads(snapshot["customfields"])
    _, answer = await get(client, invoiceid=str(invoice["id"]))
    client_data = answer[str(invoice["id"])]["ClientData"]
    assert client_data["Firstname"] == details["firstname"].strip()
    assert client_data["ClientName"] == f"{details['firstname'].strip()} {details['lastname'].strip()}"
    assert client_data["City"] == details["city"].strip()
    assert client_data["Country"] == details["country"].strip()
    assert client_data["Currency"] == details["currency"]
    assert client_data["TaxExempt"] == ("1" if details["taxexempt"] else "0")
    assert client_data["CustomFields"] == [
        {"id": f["id"], "fieldname": f["fieldname"].strip(), "value": f["value"].strip()} for f in fields
    ]


async def test_an_unpaid_numbered_invoice_has_an_empty_date_paid(aiohttp_client, store) -> None:
    [row] = await store.rows(
        "SELECT id FROM tblinvoices WHERE status = 'Unpaid' AND total > 0 ORDER BY id LIMIT 1"
    )
    await store.execute("UPDATE tblinvoices SET invoicenum = 'U-1' WHERE id = %s", row["id"])
    client = await feed_client(aiohttp_client, store)
    _, answer = await get(client, invoicenum="u-1")  # values are case-insensitive
    assert answer[str(row["id"])]["DocData"]["DatePaid"] == ""
    assert answer[str(row["id"])]["DocData"]["Status"] == "Unpaid"


async def test_snapshot_first_else_the_live_client(aiohttp_client, store: Store) -> None:
    [row] = await store.rows(
        "SELECT i.id, i.userid FROM tblinvoices i JOIN mod_invoicedata s ON s.invoiceid = i.id"
        " WHERE i.invoicenum <> '' AND s.clientsdetails LIKE '{%%' ORDER BY i.id LIMIT 1"
    )
    [snapshot] = await store.rows(
        "SELECT clientsdetails FROM mod_invoicedata WHERE invoiceid = %s", row["id"]
    )
    await store.execute(
        "UPDATE tblclients SET city = '  Elsewhere ', companyname = 'Moved Ltd' WHERE id = %s", row["userid"]
    )
    client = await feed_client(aiohttp_client, store)
    _, answer = await get(client, invoiceid=str(row["id"]))
    assert (
        answer[str(row["id"])]["ClientData"]["City"] == json.loads(snapshot["clientsdetails"])["city"].strip()
    )
    await store.execute("DELETE FROM mod_invoicedata WHERE invoiceid = %s", row["id"])
    _, answer = await get(client, invoiceid=str(row["id"]))
    live = answer[str(row["id"])]["ClientData"]
    assert (live["City"], live["CompanyName"]) == ("Elsewhere", "Moved Ltd")
    # A PHP-serialized snapshot (very old WHMCS) cannot be read: the live client stands in.
    await store.execute(
        "INSERT INTO mod_invoicedata (invoiceid, clientsdetails, customfields)"
        " VALUES (%s, 'a:1:{s:4:\"city\";s:3:\"Old\";}', 'a:0:{}')",
        row["id"],
    )
    _, answer = await get(client, invoiceid=str(row["id"]))
    assert answer[str(row["id"])]["ClientData"]["City"] == "Elsewhere"


async def test_filters_and_order(aiohttp_client, store: Store) -> None:
    client = await feed_client(aiohttp_client, store)
    every = await store.rows("SELECT id, date, total, invoicenum FROM tblinvoices ORDER BY date, id")
    numbered = [r for r in every if r["invoicenum"]]
    assert len(numbered) > 40 and len(every) > len(numbered)
    status, answer = await get(client)
    assert status == 200
    assert list(answer) == [str(r["id"]) for r in every]  # date, then ID
    _, answer = await get(client, start="All", doctype="CreditNotes")
    assert list(answer) == [str(r["id"]) for r in every if r["total"] < 0]
    assert {d["DocData"]["Type"] for d in answer.values()} == {"CreditNote"}
    _, answer = await get(client, doctype="invoice", as_json=True)
    assert list(answer) == [str(r["id"]) for r in every if r["total"] >= 0]
    first, last = every[len(every) // 4]["date"], every[len(every) // 2]["date"]
    _, answer = await get(client, start=first.isoformat(), end=last.isoformat())
    assert list(answer) == [str(r["id"]) for r in every if first <= r["date"] <= last]
    assert all(first.isoformat() <= d["DocData"]["Date"] <= last.isoformat() for d in answer.values())
    # A date start without end runs to today: every document from then on.
    _, answer = await get(client, start=first.isoformat())
    assert list(answer) == [str(r["id"]) for r in every if r["date"] >= first]
    target = numbered[3]
    _, answer = await get(client, invoicenum=target["invoicenum"], start="Today")
    assert list(answer) == [str(target["id"])]
    _, answer = await get(
        client,
        invoiceid=target["id"],
        doctype="CreditNote" if target["total"] >= 0 else "Invoice",
        as_json=True,
    )
    assert answer == {}
    _, answer = await get(client, invoiceid=str(every[-1]["id"] + 1000))
    assert answer == {}  # no such document
    _, answer = await get(client, start="1")
    assert answer == {}  # the generated store lies in the past


async def test_unnumbered_documents_are_served_with_an_empty_num(aiohttp_client, store: Store) -> None:
    """The contract's "leave empty to get all invoices": Drafts and invoices still waiting
    for their number are in the agent's feed, by the same filters, with ``Num`` empty."""
    client = await feed_client(aiohttp_client, store)
    [draft] = await store.rows(
        "SELECT id, date FROM tblinvoices WHERE status = 'Draft'"
        " AND invoicenum = '' AND total >= 0 ORDER BY id LIMIT 1"
    )
    [unpaid] = await store.rows(
        "SELECT id FROM tblinvoices WHERE status = 'Unpaid'"
        " AND invoicenum = '' AND total > 0 ORDER BY id LIMIT 1"
    )
    [credit] = await store.rows(
        "SELECT id FROM tblinvoices WHERE invoicenum = '' AND total < 0 ORDER BY id LIMIT 1"
    )
    for row, doc_type, doc_status in (
        (draft, "Invoice", "Draft"),
        (unpaid, "Invoice", "Unpaid"),
        (credit, "CreditNote", None),
    ):
        status, answer = await get(client, invoiceid=str(row["id"]))
        assert status == 200
        doc = answer[str(row["id"])]["DocData"]
        assert (doc["ID"], doc["Num"], doc["Type"]) == (row["id"], "", doc_type)
        assert doc_status is None or doc["Status"] == doc_status
        assert set(doc) == DOC_FIELDS | EXTRA_FIELDS["DocData"]
    day = draft["date"].isoformat()
    _, answer = await get(client, start=day, end=day, doctype="Invoices")
    assert str(draft["id"]) in answer
    _, answer = await get(client, start=day, end=day, doctype="CreditNotes")
    assert str(draft["id"]) not in answer
    # Numbered later: the same document, now with its number.
    await store.execute("UPDATE tblinvoices SET invoicenum = 'N-7' WHERE id = %s", unpaid["id"])
    _, answer = await get(client, invoicenum="N-7")
    assert answer[str(unpaid["id"])]["DocData"]["Num"] == "N-7"


async def test_the_credit_note_rule_decides_the_type(aiohttp_client, store: Store) -> None:
    """CONCORD_AGENT_CREDIT_NOTE_RULE=none: every row is an invoice, as the numbering sees it."""
    client = await feed_client(aiohttp_client, store, credit_note_rule="none")
    every = await store.rows("SELECT id, total FROM tblinvoices ORDER BY date, id")
    assert any(r["total"] < 0 for r in every)
    _, answer = await get(client, doctype="CreditNotes")
    assert answer == {}
    _, answer = await get(client, doctype="Invoices")
    assert list(answer) == [str(r["id"]) for r in every]
    assert {d["DocData"]["Type"] for d in answer.values()} == {"Invoice"}


async def test_today_is_the_configured_time_zone(aiohttp_client, store: Store) -> None:
    east, west = "Pacific/Kiritimati", "Pacific/Pago_Pago"  # UTC+14 and UTC-11: never one date
    now = datetime.now(UTC)
    days = {zone: now.astimezone(ZoneInfo(zone)).date() for zone in (east, west)}
    rows = await store.rows("SELECT id FROM tblinvoices WHERE invoicenum <> '' ORDER BY id LIMIT 2")
    for row, zone in zip(rows, (east, west), strict=True):
        await store.execute("UPDATE tblinvoices SET date = %s WHERE id = %s", days[zone], row["id"])
    for row, zone in zip(rows, (east, west), strict=True):
        client = await feed_client(aiohttp_client, store, timezone=zone)
        _, answer = await get(client, start="Today")
        assert list(answer) == [str(row["id"])], zone
        _, answer = await get(client, start="0")
        assert list(answer) == [str(row["id"])], zone


@pytest.mark.parametrize(
    ("fields", "status", "named"),
    [
        ({"token": None}, 401, "token"),
        ({"token": "wrong"}, 401, "token"),
        ({"action": None}, 400, "action"),
        ({"action": "Delete"}, 400, "'Delete'"),
        ({"start": "2019-02-30"}, 400, "'2019-02-30'"),
        ({"end": "2019-06-15"}, 400, "end"),
        ({"start": "Today", "end": "2019-06-15"}, 400, "'Today'"),
        ({"invoicenum": "2019-1", "invoiceid": "1"}, 400, "only one"),
        ({"invoiceid": "one"}, 400, "'one'"),
        ({"doctype": "Receipt"}, 400, "'Receipt'"),
    ],
)
async def test_errors_in_the_contract_shape(aiohttp_client, store, fields, status, named) -> None:
    client = await feed_client(aiohttp_client, store)
    got, answer = await get(client, **fields)
    assert got == status
    assert answer["result"] == "error"
    assert named in answer["message"]


async def test_bad_bodies_and_a_switched_off_feed(aiohttp_client, store: Store) -> None:
    client = await feed_client(aiohttp_client, store)
    # PHP's curl given an array posts multipart/form-data: that is a form too.
    form = aiohttp.FormData({"action": "Get", "token": TOKEN, "invoiceid": "1"})
    form.add_field("attachment", b"ignored", filename="x.txt")
    resp = await client.post("/webservice", data=form)
    assert resp.status == 200 and resp.content_type == "application/json"
    resp = await client.post("/webservice", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["result"] == "error"
    off = await feed_client(aiohttp_client, store, token="")
    status, answer = await get(off, token="")
    assert status == 403
    assert "CONCORD_AGENT_WEBSERVICE_TOKEN" in answer["message"]


async def test_the_billing_extension_path_is_an_alias(aiohttp_client, store: Store) -> None:
    client = await feed_client(aiohttp_client, store)
    _, direct = await get(client, start="All", doctype="Invoices")
    status, alias = await get(client, BILLING_EXTENSION_PATH, ws="einvoice", start="All", doctype="Invoices")
    assert status == 200
    assert alias == direct and alias
    status, answer = await get(client, BILLING_EXTENSION_PATH)
    assert status == 400
    assert "ws=einvoice" in answer["message"]


async def _client_invoice(store: Store, client_id: int, country: str, postcode: str, tax_id: str) -> int:
    """A numbered invoice of this client that shows the live client (no snapshot)."""
    await store.execute(
        "UPDATE tblclients SET country = %s, postcode = %s, tax_id = %s, state = '' WHERE id = %s",
        country,
        postcode,
        tax_id,
        client_id,
    )
    await store.execute(
        "DELETE v FROM tblcustomfieldsvalues v JOIN tblcustomfields f"
        " ON f.id = v.fieldid WHERE v.relid = %s AND f.fieldname = 'VAT Number'",
        client_id,
    )
    [row] = await store.rows(
        "SELECT id FROM tblinvoices WHERE userid = %s AND invoicenum <> '' ORDER BY id LIMIT 1", client_id
    )
    await store.execute("DELETE FROM mod_invoicedata WHERE invoiceid = %s", row["id"])
    return row["id"]


async def test_europe_vies_and_moss(aiohttp_client, aiohttp_server, store: Store) -> None:
    vies = FakeVies({"DE123456789"})
    server = await aiohttp_server(vies.app())
    client = await feed_client(aiohttp_client, store, country="NL", vies_url=str(server.make_url(VIES_PATH)))
    owners = [
        r["userid"]
        for r in await store.rows(
            "SELECT DISTINCT userid FROM tblinvoices WHERE invoicenum <> '' ORDER BY userid LIMIT 7"
        )
    ]
    cases = {
        "business": ("DE", "10115", "DE 123 456 789"),
        "consumer": ("DE", "10115", ""),
        "home": ("NL", "1011 AB", ""),
        "canary": ("ES", "35001", ""),
        "outside": ("US", "10001", "12-3456789"),
        "unregistered": ("FR", "75001", "FR12345678901"),
        "later": ("IT", "00100", "IT01234567890"),
    }
    invoices = {
        name: await _client_invoice(store, owner, *case)
        for (name, case), owner in zip(cases.items(), owners, strict=True)
    }

    async def europe(name: str) -> dict[str, Any] | None:
        status, answer = await get(client, invoiceid=str(invoices[name]))
        assert status == 200
        return answer[str(invoices[name])]["ClientData"]["Europe"]

    assert await europe("business") == {
        "MemberState": "DE",
        "Region": "Europe",
        "MonetaryUnion": True,
        "VIES": True,
        "MOSS": False,
    }
    assert await europe("consumer") == {
        "MemberState": "DE",
        "Region": "Europe",
        "MonetaryUnion": True,
        "VIES": False,
        "MOSS": True,
    }
    assert (await europe("home"))["MOSS"] is False
    assert await europe("canary") == {
        "MemberState": "ES",
        "Region": "Africa",
        "MonetaryUnion": True,
        "VIES": False,
        "MOSS": False,
    }
    assert await europe("outside") is None
    assert await europe("unregistered") == {
        "MemberState": "FR",
        "Region": "Europe",
        "MonetaryUnion": True,
        "VIES": False,
        "MOSS": True,
    }
    assert sorted(vies.calls) == [("DE", "123456789"), ("FR", "12345678901")]
    # Verdicts are cached: asking again does not call VIES.
    assert (await europe("business"))["VIES"] is True
    assert len(vies.calls) == 2
    cached = await store.rows("SELECT country, number, valid FROM mod_concord_vies ORDER BY country")
    assert [(r["country"], r["number"], r["valid"]) for r in cached] == [
        ("DE", "123456789", 1),
        ("FR", "12345678901", 0),
    ]
    # VIES down: the feed still answers; a number never confirmed counts as unconfirmed.
    vies.outage = True
    vies.registered.add("IT01234567890")
    assert await europe("later") == {
        "MemberState": "IT",
        "Region": "Europe",
        "MonetaryUnion": True,
        "VIES": False,
        "MOSS": True,
    }
    assert (await europe("business"))["VIES"] is True  # cached before the outage
    # Back up: the number is asked again and confirmed.
    vies.outage = False
    assert (await europe("later"))["VIES"] is True
    assert vies.calls.count(("IT", "01234567890")) == 2


async def test_vies_unreachable_does_not_fail_the_feed(aiohttp_client, store: Store) -> None:
    client = await feed_client(aiohttp_client, store, vies_url="http://127.0.0.1:9/check-vat-number")
    status, answer = await get(client)
    assert status == 200 and answer
    blocks = [d["ClientData"]["Europe"] for d in answer.values()]
    assert all(b is None or b["VIES"] is False for b in blocks)
    assert any(b is not None for b in blocks)


async def test_concurrent_answers_all_complete(aiohttp_client, store: Store) -> None:
    """Each answer holds several pooled connections: many at once must not starve the pool."""
    client = await feed_client(aiohttp_client, store)
    answers = await asyncio.wait_for(asyncio.gather(*(get(client) for _ in range(4))), 30)
    assert all(status == 200 for status, _ in answers)
    assert all(answer == answers[0][1] and answer for _, answer in answers)
