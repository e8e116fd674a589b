"""Ledger and fake-KashFlow set-up shared by the KashFlow tests.

Documents are issued through the ledger writer with the real commands (reserve, confirm,
update), and their snapshots are built by getfeed/snapshot.py from WHMCS-shaped
rows, exactly as the agent builds them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import httpx
from aiohttp import web

from agent.whmcs.queries import TRANSACTIONS, transaction
from coordinator.accounting.kashflow import KashFlowClient
from coordinator.accounting.options import GatewayMapping, SyncMapping
from coordinator.accounting.sync import RunReport, run_sync
from coordinator.db import connect, create_pool
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter
from coordinator.migrations import migrate
from coordinator.peers.tokens import new_token, token_sha256
from getfeed.snapshot import document
from tests.support.fake_kashflow import FakeKashFlow

GATEWAYS = {"paypal": {"method": 22, "account": 12}, "stripe": {"method": 21, "account": 11}}


@dataclass
class Ledger:
    pool: asyncpg.Pool
    writer: LedgerWriter

    async def add_store(self, name: str) -> str:
        result = await self.writer.execute(
            c.RegisterPeer(name=name, url="http://127.0.0.1:8701", token_sha256=token_sha256(new_token()))
        )
        return result["peer_id"]

    async def issue(self, peer_id: str, doc_id: int, *, doctype: str = "invoice", **fields: Any) -> str:
        """Reserve and confirm a number; returns the formatted number."""
        reserved = await self.writer.execute(
            c.Reserve(peer_id=peer_id, doctype=doctype, doc_id=str(doc_id), date=date(2026, 3, 1))
        )
        formatted = reserved["formatted"]
        await self.writer.execute(
            c.Confirm(
                reservation_id=reserved["reservation_id"],
                peer_id=peer_id,
                document=snapshot(doc_id, formatted, doctype=doctype, **fields),
            )
        )
        return formatted

    async def update(self, peer_id: str, doc_id: int, formatted: str, **fields: Any) -> None:
        await self.writer.execute(
            c.UpdateDocument(
                peer_id=peer_id,
                doctype="invoice",
                doc_id=str(doc_id),
                document=snapshot(doc_id, formatted, **fields),
            )
        )

    async def warnings(self, code: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT subject, message FROM warnings WHERE code = $1 AND state = 'open' ORDER BY raised_at",
            code,
        )


def snapshot(
    doc_id: int,
    formatted: str,
    *,
    doctype: str = "invoice",
    user_id: int = 1,
    status: str = "Paid",
    gateway: str = "paypal",
    currency: int = 1,
    items: tuple[tuple[str, str, bool], ...] = (("Web hosting", "100.00", True),),
    tax_rate: str = "20.00",
    credit: str = "0.00",
    tax_exempt: bool = False,
    address: str = "1 High Street",
    country: str = "GB",
    state: str = "",
    postcode: str = "N1 9GU",
    transactions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A snapshot as the agent sends it. ``transactions``: tblaccounts rows (id, amountin,
    amountout, fees, gateway, date, transid); by default a paid invoice has one payment of
    its total, and a refunded one also its refund."""
    subtotal = sum((float(amount) for _, amount, _ in items), 0.0)
    tax = sum(float(amount) for _, amount, taxed in items if taxed) * float(tax_rate) / 100
    tax = 0.0 if tax_exempt else round(tax, 2)
    invoice = {
        "id": doc_id,
        "userid": user_id,
        "status": status,
        "date": "2026-03-01",
        "duedate": "2026-03-15",
        "datepaid": "2026-03-02 10:11:12" if status == "Paid" else None,
        "subtotal": subtotal,
        "credit": credit,
        "tax": tax,
        "tax2": 0,
        "taxrate": tax_rate,
        "taxrate2": 0,
        "total": round(subtotal + tax - float(credit), 2),
        "paymentmethod": gateway,
    }
    rows = [
        {
            "id": doc_id * 10 + n,
            "type": "Hosting",
            "relid": n,
            "description": text,
            "amount": amount,
            "taxed": int(taxed),
        }
        for n, (text, amount, taxed) in enumerate(items)
    ]
    client = {
        "firstname": "Ada",
        "lastname": f"Client{user_id}",
        "companyname": "",
        "email": f"client{user_id}@example.test",
        "address1": address,
        "address2": "",
        "city": "London",
        "state": state,
        "postcode": postcode,
        "country": country,
        "phonenumber": "+44.2071234567",
        "currency": currency,
        "taxexempt": int(tax_exempt),
    }
    if transactions is None:
        transactions = (
            [tblaccounts(doc_id * 10, invoice["total"], gateway=gateway)]
            if status in ("Paid", "Refunded") and invoice["total"] > 0
            else []
        )
        if status == "Refunded" and transactions:
            transactions.append(
                tblaccounts(doc_id * 10 + 1, 0, out=invoice["total"], gateway=gateway, refund_of=doc_id * 10)
            )
    return {
        **document(doctype, formatted, invoice, rows, client, None, []),
        TRANSACTIONS: [transaction(row) for row in transactions],
    }


def tblaccounts(
    row_id: int,
    amount_in: float | str,
    *,
    out: float | str = 0,
    fees: str = "0",
    gateway: str = "paypal",
    when: str = "2026-03-02 10:11:12",
    transid: str = "",
    refund_of: int = 0,
) -> dict[str, Any]:
    return {
        "id": row_id,
        "date": when,
        "gateway": gateway,
        "amountin": amount_in,
        "amountout": out,
        "fees": fees,
        "transid": transid,
        "refundid": refund_of,
    }


@contextlib.asynccontextmanager
async def open_ledger(database_url: str) -> AsyncIterator[Ledger]:
    owner = await connect(database_url)  # migrations run as the ledger's owner, not the pool's role
    try:
        await migrate(owner)
    finally:
        await owner.close()
    pool = await create_pool(database_url, size=4)
    writer = LedgerWriter(pool)
    await writer.start()
    try:
        await writer.execute(
            c.ConfigureSeries(
                series="invoice",
                changes={"format": "INV-{NUMBER:5}"},
                next=None,
                period=None,
                today=date(2026, 3, 1),
            )
        )
        yield Ledger(pool, writer)
    finally:
        await writer.stop()
        await pool.close()


@contextlib.asynccontextmanager
async def serve_fake(fake: FakeKashFlow) -> AsyncIterator[str]:
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/api/service.asmx"
    finally:
        await runner.cleanup()


def mapping(
    currencies: dict[str, dict[str, str]] | None = None, gateways: dict[str, dict[str, int]] | None = None
) -> SyncMapping:
    return SyncMapping(
        gateways={k: GatewayMapping(**v) for k, v in (GATEWAYS if gateways is None else gateways).items()},
        currencies=currencies if currencies is not None else {"alpha": {"1": "GBP"}, "be-ta": {"1": "GBP"}},
    )


async def sync(
    ledger: Ledger,
    url: str,
    the_mapping: SyncMapping | None = None,
    *,
    limit: int = 200,
    http: httpx.AsyncClient | None = None,
    password: str = "secret",
) -> RunReport:
    client = KashFlowClient(url, "concord", password, timeout=0.5, http=http)
    try:
        return await run_sync(ledger.pool, ledger.writer, client, the_mapping or mapping(), limit)
    finally:
        await client.aclose()


async def issue_many(
    ledger: Ledger, peer_id: str, count: int, *, first_id: int = 1, clients: int = 30, **fields: Any
) -> list[str]:
    """``count`` paid invoices, confirmed concurrently (group commit keeps their order)."""
    return list(
        await asyncio.gather(
            *(
                ledger.issue(peer_id, doc_id, user_id=1 + doc_id % clients, **fields)
                for doc_id in range(first_id, first_id + count)
            )
        )
    )
