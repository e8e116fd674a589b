"""The billing-error monitor against real PostgreSQL: documents issued and updated through the
ledger writer, warnings raised per document and resolved once a snapshot corrects them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest

from coordinator.ledger import commands as c
from coordinator.monitors.billing import BillingMonitor
from getfeed.snapshot import document
from getfeed.vies import ViesSettings
from tests.support.fake_vies import PATH as VIES_PATH
from tests.support.fake_vies import FakeVies
from tests.support.kashflow_ledger import Ledger, open_ledger

VIES_OFF = ViesSettings(url="", timeout_seconds=1, cache_days=7, lookups_per_answer=10)


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(database_url) as opened:
        yield opened


def snapshot(
    doc_id: int,
    number: str,
    *,
    day: str = "2026-03-02",
    status: str = "Unpaid",
    items: tuple[str, ...] = ("100.00",),
    subtotal: str | None = None,
    tax: str | None = None,
    rate: str = "21.00",
    paid_at: str | None = None,
    country: str = "NL",
    vat: str = "",
    doctype: str = "invoice",
) -> dict[str, Any]:
    """A snapshot as the agent builds it from WHMCS rows; by default figures WHMCS computed
    (exclusive tax on the total)."""
    amounts = [float(a) for a in items]
    exact_subtotal = round(sum(amounts), 2)
    exact_tax = round(sum(amounts) * float(rate) / 100 + 1e-9, 2)
    invoice = {
        "id": doc_id,
        "userid": 7,
        "status": status,
        "date": day,
        "duedate": day,
        "datepaid": paid_at or ("2026-03-02 10:11:12" if status == "Paid" else None),
        "subtotal": subtotal or exact_subtotal,
        "credit": 0,
        "tax": tax or exact_tax,
        "tax2": 0,
        "taxrate": rate,
        "taxrate2": 0,
        "total": float(subtotal or exact_subtotal) + float(tax or exact_tax),
        "paymentmethod": "banktransfer",
    }
    rows = [
        {
            "id": doc_id * 10 + n,
            "type": "Hosting",
            "relid": n,
            "description": "VPS",
            "amount": amount,
            "taxed": 1,
        }
        for n, amount in enumerate(items)
    ]
    client = {
        "firstname": "Ann",
        "lastname": "Smit",
        "companyname": "Smit Hosting BV",
        "email": "ann@example.test",
        "country": country,
        "postcode": "1011 AB",
        "tax_id": vat,
        "currency": 1,
        "taxexempt": 0,
    }
    return document(doctype, number, invoice, rows, client, None, [])


async def issue(ledger: Ledger, peer_id: str, doc_id: int, **fields: Any) -> str:
    day = date.fromisoformat(fields.get("day", "2026-03-02"))
    reserved = await ledger.writer.execute(
        c.Reserve(peer_id=peer_id, doctype="invoice", doc_id=str(doc_id), date=day)
    )
    number = reserved["formatted"]
    await ledger.writer.execute(
        c.Confirm(
            reservation_id=reserved["reservation_id"],
            peer_id=peer_id,
            document=snapshot(doc_id, number, **fields),
        )
    )
    return number


async def update(ledger: Ledger, peer_id: str, doc_id: int, number: str, **fields: Any) -> None:
    await ledger.writer.execute(
        c.UpdateDocument(
            peer_id=peer_id,
            doctype="invoice",
            doc_id=str(doc_id),
            document=snapshot(doc_id, number, **fields),
        )
    )


async def open_warnings(ledger: Ledger) -> dict[tuple[str, str], str]:
    rows = await ledger.pool.fetch(
        "SELECT code, subject, message FROM warnings WHERE state = 'open' AND code LIKE 'billing_%'"
    )
    return {(r["code"], r["subject"]): r["message"] for r in rows}


async def test_errors_raise_a_warning_each_and_a_correction_resolves_them(ledger: Ledger) -> None:
    monitor = BillingMonitor(ledger.pool, ledger.writer, VIES_OFF)
    store = await ledger.add_store("eu-1")
    good = await issue(ledger, store, 101)
    bad = await issue(
        ledger,
        store,
        102,
        items=("40.00", "59.90"),
        subtotal="100.00",
        tax="20.00",
        status="Paid",
        paid_at="0000-00-00 00:00:00",
    )
    assert await monitor.check() == 2
    subject = f"{store}/invoice/102"
    found = await open_warnings(ledger)
    assert set(found) == {
        ("billing_items_subtotal", subject),
        ("billing_tax", subject),
        ("billing_paid_without_date", subject),
    }
    message = found["billing_items_subtotal", subject]
    assert f"store eu-1, invoice 102 ({bad})" in message
    assert "Subtotal is 100.00" in message and "sum to 99.90" in message
    assert "Tax is 20.00" in found["billing_tax", subject]
    assert good != bad
    assert await monitor.check() == 0  # nothing new since its checkpoint

    # Other wrong figures: the warning is raised again with the new numbers.
    await update(
        ledger, store, 102, bad, items=("40.00", "59.90"), subtotal="100.00", tax="19.00", status="Paid"
    )
    await monitor.check()
    found = await open_warnings(ledger)
    assert set(found) == {("billing_items_subtotal", subject), ("billing_tax", subject)}
    assert "Tax is 19.00" in found["billing_tax", subject]
    # Corrected in WHMCS: the agent's update resolves every warning of the document.
    await update(ledger, store, 102, bad, items=("40.00", "59.90"), status="Paid")
    await monitor.check()
    assert await open_warnings(ledger) == {}
    resolved = await ledger.pool.fetch("SELECT data->>'by' AS by FROM events WHERE type = 'WarningResolved'")
    assert {r["by"] for r in resolved} == {"billing check: figures changed", "billing check: corrected"}


async def test_the_store_reported_tax_settings_decide_the_rounding(ledger: Ledger) -> None:
    monitor = BillingMonitor(ledger.pool, ledger.writer, VIES_OFF)
    store = await ledger.add_store("eu-1")
    # Three items of 0.35 at 19 %: 0.21 per line, 0.20 on the total. Not reported yet:
    # both are WHMCS's.
    await issue(ledger, store, 1, items=("0.35",) * 3, rate="19.00", tax="0.21")
    await ledger.writer.execute(
        c.ReportPeerConfig(
            peer_id=store,
            agent_version="1",
            settings={"TaxEnabled": "on", "TaxType": "Exclusive", "TaxL2Compound": "", "TaxPerLineItem": "1"},
        )
    )
    await issue(ledger, store, 2, items=("0.35",) * 3, rate="19.00", tax="0.21")
    await issue(ledger, store, 3, items=("0.35",) * 3, rate="19.00", tax="0.20")
    await monitor.check()
    found = await open_warnings(ledger)
    assert set(found) == {("billing_tax", f"{store}/invoice/3")}
    assert "per line item" in found["billing_tax", f"{store}/invoice/3"]


async def test_a_number_dated_before_the_previous_one_of_its_store(ledger: Ledger) -> None:
    monitor = BillingMonitor(ledger.pool, ledger.writer, VIES_OFF)
    east, west = await ledger.add_store("east"), await ledger.add_store("west")
    first = await issue(ledger, east, 1, day="2026-03-05")
    await issue(ledger, west, 1, day="2026-03-01")  # another store: not compared
    second = await issue(ledger, east, 2, day="2026-03-04")
    await monitor.check()
    found = await open_warnings(ledger)
    assert set(found) == {("billing_date_order", f"{east}/invoice/2")}
    message = found["billing_date_order", f"{east}/invoice/2"]
    assert f"invoice 2 ({second}) is dated 2026-03-04" in message
    assert f"invoice 1 ({first}), dated 2026-03-05" in message
    # The earlier number's date corrected: the later one is in order again.
    await update(ledger, east, 1, first, day="2026-03-03")
    await monitor.check()
    assert await open_warnings(ledger) == {}


async def test_duplicate_numbers_the_agent_reports(ledger: Ledger) -> None:
    monitor = BillingMonitor(ledger.pool, ledger.writer, VIES_OFF)
    store = await ledger.add_store("eu-1")

    async def report(duplicates: dict[str, list[int]]) -> None:
        await ledger.writer.execute(
            c.ReportPeerConfig(peer_id=store, agent_version="1", settings={"DuplicateNumbers": duplicates})
        )
        await monitor.check()

    await report({"INV-58": [12, 40], "INV-60": [14, 41]})
    found = await open_warnings(ledger)
    assert set(found) == {
        ("billing_duplicate_number", f"{store}/number/INV-58"),
        ("billing_duplicate_number", f"{store}/number/INV-60"),
    }
    assert "INV-58 is on 2 documents" in found["billing_duplicate_number", f"{store}/number/INV-58"]
    assert "ids 12, 40" in found["billing_duplicate_number", f"{store}/number/INV-58"]
    await report({"INV-60": [14, 41]})
    assert set(await open_warnings(ledger)) == {("billing_duplicate_number", f"{store}/number/INV-60")}
    await report({})
    assert await open_warnings(ledger) == {}


async def test_vat_numbers_vies_rejects(ledger: Ledger, aiohttp_server) -> None:
    fake = FakeVies({"NL123456789B01"})
    server = await aiohttp_server(fake.app())
    vies = ViesSettings(
        url=str(server.make_url(VIES_PATH)), timeout_seconds=2, cache_days=7, lookups_per_answer=10
    )
    monitor = BillingMonitor(ledger.pool, ledger.writer, vies)
    store = await ledger.add_store("eu-1")
    await issue(ledger, store, 1, vat="NL123456789B01")
    rejected = await issue(ledger, store, 2, vat="NL999999999B01")
    await issue(ledger, store, 3, country="US", vat="12-3456789")  # outside the EU: not asked
    await monitor.check()
    found = await open_warnings(ledger)
    assert set(found) == {("billing_vat_rejected", f"{store}/invoice/2")}
    message = found["billing_vat_rejected", f"{store}/invoice/2"]
    assert f"invoice 2 ({rejected})" in message and "NL999999999B01" in message
    assert "VIES rejects it" in message
    assert sorted(fake.calls) == [("NL", "123456789B01"), ("NL", "999999999B01")]

    # VIES away: no verdict, no warning; the document waits and is judged on a later run.
    fake.outage = True
    await issue(ledger, store, 4, vat="NL888888888B01")
    await monitor.check()
    assert set(await open_warnings(ledger)) == {("billing_vat_rejected", f"{store}/invoice/2")}
    fake.outage = False
    await monitor.check()
    assert set(await open_warnings(ledger)) == {
        ("billing_vat_rejected", f"{store}/invoice/2"),
        ("billing_vat_rejected", f"{store}/invoice/4"),
    }
    assert await ledger.pool.fetchval("SELECT count(*) FROM billing_vies_pending") == 0
    # The client's number corrected: resolved, from the cache's verdict.
    await update(ledger, store, 2, rejected, vat="NL123456789B01")
    calls = len(fake.calls)
    await monitor.check()
    assert set(await open_warnings(ledger)) == {("billing_vat_rejected", f"{store}/invoice/4")}
    assert len(fake.calls) == calls


async def test_replicas_check_each_event_once(ledger: Ledger) -> None:
    monitors = [BillingMonitor(ledger.pool, ledger.writer, VIES_OFF) for _ in range(3)]
    store = await ledger.add_store("eu-1")
    for doc_id in range(1, 41):
        await issue(ledger, store, doc_id, tax="1.00" if doc_id % 10 == 0 else None)
    reads = await asyncio.gather(*(m.check() for m in monitors))
    reads += await asyncio.gather(*(m.check() for m in monitors))  # whoever skipped, catches up
    assert sum(reads) == 40
    assert len(await open_warnings(ledger)) == 4
    raised = await ledger.pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'WarningRaised' AND data->>'code' = 'billing_tax'"
    )
    assert raised == 4
