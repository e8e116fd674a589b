"""What the agent reports for the KashFlow sync, from a WHMCS store in MariaDB to a fake
KashFlow: its currencies by code in the heartbeat, and each document's transactions
(tblaccounts) with its snapshot, through a live coordinator on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

from agent.changes import ChangeReporter
from agent.heartbeat import beat
from agent.numbering import Numbering
from agent.relay import Relay
from coordinator.accounting.kashflow import KashFlowClient
from coordinator.accounting.sync import RunReport, run_sync
from coordinator.ledger.writer import open_ledger
from simulator.whmcs import (
    add_payment,
    connection,
    create_invoice,
    fetch_all,
    insert_rows,
)
from tests.support.agent_parts import Agent
from tests.support.fake_kashflow import FakeKashFlow
from tests.support.kashflow_ledger import mapping, serve_fake


async def sync(database_url: str, fake_url: str) -> RunReport:
    """A sync run with no kashflow_currencies: currencies come from the heartbeat."""
    kashflow = KashFlowClient(fake_url, "concord", "secret", timeout=5)
    try:
        async with open_ledger(database_url, pool_size=3) as (pool, writer):
            return await run_sync(pool, writer, kashflow, mapping(currencies={}), 200)
    finally:
        await kashflow.aclose()


def all_currencies(fake: FakeKashFlow, codes: list[str]) -> None:
    fake.currencies = [
        {"CurrencyId": n, "CurrencyCode": code, "ExchangeRate": "1", "isDefault": 0}
        for n, code in enumerate(codes, start=1)
    ]


async def test_heartbeat_reports_the_store_currencies_by_code(agent: Agent, database_url: str) -> None:
    await beat(agent.pool, agent.client, agent.rules, {})
    expected = {str(r["id"]): r["code"] for r in await agent.rows("SELECT id, code FROM tblcurrencies")}
    assert len(expected) >= 2
    async with open_ledger(database_url, pool_size=2) as (pool, _):
        reported = await pool.fetchval("SELECT reported->'Currencies' FROM peers")
    assert reported == expected


async def test_transactions_travel_with_the_snapshot_and_reach_kashflow_once_each(
    agent: Agent, database_url: str
) -> None:
    await beat(agent.pool, agent.client, agent.rules, {})  # series rules and currencies
    rows = agent.generator.new_invoice(status="Unpaid")
    async with connection(agent.whmcs_url) as conn:
        invoice_id = await create_invoice(conn, rows)
        total = (await fetch_all(conn, "SELECT total FROM tblinvoices WHERE id = %s", (invoice_id,)))[0][
            "total"
        ]
        first = await add_payment(
            conn,
            invoice_id,
            Decimal("20.00"),
            datetime(2026, 3, 1, 9),
            "stripe",
            transid="ch_1",
            fees=Decimal("0.88"),
        )
        second = await add_payment(
            conn, invoice_id, None, datetime(2026, 3, 2, 10), "paypal", transid="PP-9", fees=Decimal("3.20")
        )
    # Paid: the agent numbers it and confirms its snapshot, transactions included.
    assert await Numbering(agent.pool, agent.client, agent.rules, 10, asyncio.Event()).round() == 1
    assert await Relay(agent.pool, agent.client, agent.rules, True, 10).round() == 1
    [invoice] = await agent.rows("SELECT invoicenum FROM tblinvoices WHERE id = %s", invoice_id)
    number = invoice["invoicenum"]

    fake = FakeKashFlow()
    all_currencies(fake, [r["code"] for r in await agent.rows("SELECT code FROM tblcurrencies")])
    async with serve_fake(fake) as fake_url:
        report = await sync(database_url, fake_url)
        assert (report.posted, report.payments, report.refunds, report.held) == (1, 2, 0, 0)
        [posted] = fake.invoice_by_reference(number)
        kashflow_number = int(posted["InvoiceNumber"])
        assert [
            (Decimal(p["PayAmount"]), p["PayDate"], p["PayNote"]) for p in fake.payments_of(kashflow_number)
        ] == [
            (
                Decimal("20.00"),
                "2026-03-01T09:00:00",
                f"{number} WHMCS payment {first} via stripe, gateway transaction ch_1, gateway fees 0.88",
            ),
            (
                total - Decimal("20.00"),
                "2026-03-02T10:00:00",
                f"{number} WHMCS payment {second} via paypal, gateway transaction PP-9, gateway fees 3.20",
            ),
        ]

        # A partial refund leaves the invoice's row as it was: the change scan still sees it.
        async with connection(agent.whmcs_url) as conn:
            await insert_rows(
                conn,
                "tblaccounts",
                [
                    {
                        "userid": rows.invoice["userid"],
                        "currency": 0,
                        "gateway": "paypal",
                        "date": datetime(2026, 3, 5, 8),
                        "description": "Partial refund",
                        "amountin": Decimal(0),
                        "fees": Decimal(0),
                        "amountout": Decimal("5.00"),
                        "rate": Decimal(1),
                        "transid": "PP-10",
                        "invoiceid": invoice_id,
                        "refundid": second,
                    }
                ],
            )
        caught_up = asyncio.Event()
        caught_up.set()
        reporter = ChangeReporter(agent.pool, agent.client, agent.rules, True, caught_up)
        assert await reporter.scan() == 1
        assert await reporter.scan() == 0
        report = await sync(database_url, fake_url)
        assert (report.posted, report.payments, report.refunds) == (1, 0, 1)
        assert [Decimal(p["PayAmount"]) for p in fake.payments_of(kashflow_number)][-1] == Decimal("-5.00")
        assert (await sync(database_url, fake_url)).refunds == 0
    assert len(fake.payments) == 3 and len(fake.invoices) == 1
