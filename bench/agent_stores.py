"""The agent benchmark's WHMCS stores: paid invoices without a number (after a numbered
history), bulk-inserted into a WHMCS database each (or unpaid, and then a payment run), and
how far the agents have got."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import asyncmy.errors

from bench.agent_preload import Numbered, remember_numbered
from bench.processes import Process
from simulator.generator import StoreGenerator
from simulator.whmcs import (
    MySQLURL,
    connection,
    create_database,
    fetch_all,
    insert_rows,
    load_schema,
    load_store,
)

STORES = ("alpha", "bravo", "charlie")
POLL_SECONDS = 0.05  # how often the benchmark looks whether the stores are done
INSERT_CHUNK = 500
SEED = 20251122


@dataclass
class Store:
    name: str
    database: str
    url: str
    invoices: int
    peer_id: str = ""
    token: str = ""
    port: int = 0
    agent: Process | None = None
    numbered: list[Numbered] = field(default_factory=list)  # before the run (--preload)


INVOICE_TABLES = ("tblinvoices", "tblinvoiceitems", "tblaccounts", "mod_invoicedata")


def paid_invoices(
    generator: StoreGenerator,
    count: int,
    rng: random.Random,
    numbered: Sequence[Numbered] = (),
    *,
    unpaid: bool = False,
) -> dict[str, list[Any]]:
    """The store's ``numbered`` history (invoice ids 1..k, with their numbers and dates), then
    ``count`` Paid invoices without a number, dated over 2024 in random order of id; with
    ``unpaid``, still Unpaid (with their payments: ``pay_all`` is the payment run)."""
    tables: dict[str, list[Any]] = {table: [] for table in INVOICE_TABLES}
    first = date(2024, 1, 1)
    if [n.invoice_id for n in numbered] != list(range(1, len(numbered) + 1)):
        raise ValueError("the numbered history must hold invoice ids 1..k")
    wanted = [(n.day, n.formatted) for n in numbered] + [
        (first + timedelta(days=rng.randrange(366)), None) for _ in range(count)
    ]
    for invoice_id, (day, invoicenum) in enumerate(wanted, 1):
        rows = generator.new_invoice(status="Paid", date=day, invoicenum=invoicenum)
        invoice = {"id": invoice_id, **rows.invoice}
        if unpaid and invoicenum is None:
            invoice["status"] = "Unpaid"
        tables["tblinvoices"].append(invoice)
        tables["tblinvoiceitems"] += [{**item, "invoiceid": invoice_id} for item in rows.items]
        tables["tblaccounts"] += [{**pay, "invoiceid": invoice_id} for pay in rows.payments]
        if rows.snapshot is not None:
            tables["mod_invoicedata"].append({**rows.snapshot, "invoiceid": invoice_id})
    return tables


async def create_store(
    admin: MySQLURL,
    database: str,
    store: str,
    count: int,
    numbered: Sequence[Numbered] = (),
    *,
    unpaid: bool = False,
) -> str:
    """A WHMCS database with the store's clients and settings, its ``numbered`` history (and
    the agent's tables as they are once it is confirmed) and ``count`` unnumbered paid
    invoices (Unpaid until ``pay_all`` with ``unpaid``); returns its URL."""
    generator = StoreGenerator(SEED, store, clients=60, invoices=40)
    base = {table: ([] if table in INVOICE_TABLES else rows) for table, rows in generator.base().items()}
    # In a thread: building a large history takes seconds of CPU, during which the event loop
    # must go on serving the other stores' MariaDB connections.
    invoices = await asyncio.to_thread(
        paid_invoices, generator, count, random.Random(f"{SEED}:{store}"), numbered, unpaid=unpaid
    )
    url = await create_database(admin, database)
    async with connection(url) as conn:
        await load_schema(conn)
        await load_store(conn, base)
        for table in INVOICE_TABLES:
            rows = invoices[table]
            for start in range(0, len(rows), INSERT_CHUNK):
                await insert_rows(conn, table, rows[start : start + INSERT_CHUNK])
    await remember_numbered(url, numbered)
    return url


async def pay_all(conn: Any) -> None:
    """The payment run: every Unpaid invoice becomes Paid in one statement, as a gateway's
    batch of captures or an accountant's bulk action does."""
    async with conn.cursor() as cur:
        await cur.execute("UPDATE tblinvoices SET status = 'Paid' WHERE status = 'Unpaid'")


async def server_now(conn: Any) -> datetime:
    """MariaDB's clock, which stamps the outbox rows."""
    rows = await fetch_all(conn, "SELECT NOW(6) AS now")
    return rows[0]["now"]


async def store_progress(conn: Any, since: datetime) -> tuple[int, int]:
    """(outbox rows, confirmed outbox rows) of one store since ``since`` (MariaDB's clock).

    The agent writes an invoice's number and its outbox row in one transaction, so outbox
    rows = numbered invoices (checked again at the end). Rows still unconfirmed or confirmed
    since the start are this run's: a range of the outbox's ``pending`` index, so polling
    reads this run's rows, not the store's history.
    """
    try:
        rows = await fetch_all(
            conn,
            "SELECT COUNT(*) AS outbox, COUNT(confirmed_at) AS confirmed FROM mod_concord_outbox"
            " WHERE confirmed_at IS NULL OR confirmed_at >= %s",
            (since,),
        )
    except asyncmy.errors.ProgrammingError:  # the agent has not created its tables yet
        return 0, 0
    return int(rows[0]["outbox"]), int(rows[0]["confirmed"])
