"""The agent numbers and confirms in batches: one reserve request and one MySQL transaction
for many documents, one confirm request for many outbox rows.

What a store relies on: a batch is written all or nothing, only into empty ``invoicenum``s;
due documents are never hidden behind a long tail of unpaid ones; a SIGKILL between the
coordinator's answer and the MySQL commit (of the numbers, or of the confirms) loses and
doubles nothing, and the restarted agent writes the very numbers reserved before; and a
burst of 2,000 invoices created at once in three stores is numbered gaplessly, each store's
in date order. The cluster tests use the real processes of tests/test_agent_stores.py.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncmy.errors
import asyncpg
import pytest
from aiohttp import web

from agent.client import CoordinatorClient, CoordinatorRefused
from agent.whmcs import queries
from agent.whmcs.database import create_agent_tables, create_pool
from agent.whmcs.database import parse_mysql_url as parse_agent_url
from simulator.generator import InvoiceRows, StoreGenerator
from simulator.whmcs import (
    connection,
    create_invoice,
    fetch_all,
    invoice_tables,
    load_store,
    update_invoice,
)
from tests.conftest import Tokens
from tests.e2e.test_agent_stores import (
    Cluster,
    Rules,
    Series,
    Store,
    assert_clean_logs,
    empty_store_tables,
    read_ledger,
    read_store,
    running_cluster,
    summary,
    verify,
    wait_settled,
)
from tests.support.mysql_fixtures import WhmcsDatabaseFactory

T = TypeVar("T")


# -- helpers ---------------------------------------------------------------------------------


async def new_store(make_whmcs: WhmcsDatabaseFactory, name: str) -> tuple[str, StoreGenerator]:
    generator = StoreGenerator(17, name, clients=8, invoices=40)
    url = make_whmcs()
    async with connection(url) as conn:
        await load_store(conn, empty_store_tables(generator))
    return url, generator


async def create_at_once(url: str, documents: Sequence[tuple[int, InvoiceRows]]) -> list[int]:
    """The documents appear in one transaction, as a WHMCS cron run creates them."""
    async with connection(url) as conn:
        await load_store(conn, invoice_tables(documents))
    return [invoice_id for invoice_id, _ in documents]


def reservation(number: int) -> dict[str, Any]:
    """A reservation as the coordinator answers it (for the query tests without one)."""
    return {
        "reservation_id": str(uuid.uuid4()),
        "doctype": "invoice",
        "series": "invoice",
        "period": "all",
        "number": number,
        "formatted": f"N-{number}",
        "state": "reserved",
        "receipt": {"position": number, "hash": f"{number:064x}"},
    }


async def wait_for(what: str, check: Callable[[], Awaitable[T]], within: float = 60.0) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within:.0f}s: {what}")


async def ledger_reservations(cluster: Cluster, store: Store) -> dict[str, dict[str, Any]]:
    """doc_id -> the store's reservations in the ledger (all states)."""
    ledger = await read_ledger(cluster.database_url)
    return {r["doc_id"]: r for r in ledger.reservations if r["peer_id"] == store.peer_id}


async def lock_waits(url: str) -> int:
    """Transactions waiting for a row lock in this WHMCS database."""
    async with connection(url) as conn:
        (row,) = await fetch_all(
            conn,
            "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX t"
            " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
            " WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()",
        )
    return int(row["n"])


# -- the batch write, against MariaDB ----------------------------------------------------------


async def test_a_batch_is_written_all_or_nothing_and_only_into_empty_numbers(
    whmcs_database_factory: WhmcsDatabaseFactory,
) -> None:
    url, generator = await new_store(whmcs_database_factory, "delta")
    ids = await create_at_once(url, [(i, generator.new_invoice(status="Paid")) for i in range(1, 7)])
    async with connection(url) as conn:
        await update_invoice(conn, ids[1], {"invoicenum": "WH-7"})  # WHMCS numbered it itself
    pool = await create_pool(parse_agent_url(url))
    try:
        await create_agent_tables(pool)
        batch = {invoice_id: reservation(n) for n, invoice_id in enumerate(ids[:4], 1)}
        # The third was written by an earlier round that crashed before its confirm.
        assert await queries.write_numbers(pool, {ids[2]: batch[ids[2]]}) == {ids[2]: "written"}

        assert await queries.write_numbers(pool, batch) == {
            ids[0]: "written",
            ids[1]: "WH-7",
            ids[2]: "already",
            ids[3]: "written",
        }

        # One row that cannot be recorded: none of the batch is written.
        broken = {ids[4]: reservation(5), ids[5]: {**reservation(6), "formatted": "N" * 65}}
        with pytest.raises(asyncmy.errors.DataError):
            await queries.write_numbers(pool, broken)
    finally:
        pool.close()
        await pool.wait_closed()
    async with connection(url) as conn:
        numbers = {
            r["id"]: r["invoicenum"] for r in await fetch_all(conn, "SELECT id, invoicenum FROM tblinvoices")
        }
        outbox = {
            r["invoice_id"]: r["reservation_id"]
            for r in await fetch_all(conn, "SELECT invoice_id, reservation_id FROM mod_concord_outbox")
        }
        receipts = {
            r["invoice_id"]: r["reserved_position"]
            for r in await fetch_all(conn, "SELECT invoice_id, reserved_position FROM mod_concord_receipts")
        }
    assert numbers == {ids[0]: "N-1", ids[1]: "WH-7", ids[2]: "N-3", ids[3]: "N-4", ids[4]: "", ids[5]: ""}
    written = (ids[0], ids[2], ids[3])
    assert outbox == {i: batch[i]["reservation_id"] for i in written}
    assert receipts == {i: batch[i]["number"] for i in written}


async def test_due_documents_are_not_hidden_behind_older_unpaid_ones(
    whmcs_database_factory: WhmcsDatabaseFactory,
) -> None:
    """A store with 300 old unpaid invoices and numbering on payment: a batch of 10 still
    finds the paid ones (a LIMIT taken before the due rule would find none, for ever)."""
    url, generator = await new_store(whmcs_database_factory, "echo")
    first = date(2025, 1, 1)
    plan = [("Unpaid", False, first + timedelta(days=i % 90)) for i in range(300)]
    plan += [
        ("Paid", False, date(2025, 6, 3)),
        ("Paid", True, date(2025, 6, 1)),
        ("Unpaid", True, date(2025, 6, 2)),
        ("Draft", False, date(2024, 12, 1)),
    ]
    documents = [
        (i, generator.new_invoice(status=status, credit_note=credit, date=day))
        for i, (status, credit, day) in enumerate(plan, 1)
    ]
    await create_at_once(url, documents)
    refunded = generator.new_invoice(status="Refunded", date=date(2025, 6, 1))
    async with connection(url) as conn:
        documents.append((await create_invoice(conn, refunded), refunded))
    kinds = {
        i: (
            "creditnote" if rows.invoice["total"] < 0 else "invoice",
            rows.invoice["status"],
            rows.invoice["date"],
        )
        for i, rows in documents
    }

    def expected(invoice_on: str, creditnote_on: str, limit: int) -> list[tuple[int, str]]:
        def due(doctype: str, status: str) -> bool:
            on = invoice_on if doctype == "invoice" else creditnote_on
            return status in ("Paid", "Refunded") if on == "payment" else status != "Draft"

        ordered = sorted(
            (day, i, doctype) for i, (doctype, status, day) in kinds.items() if due(doctype, status)
        )
        return [(i, doctype) for _, i, doctype in ordered[:limit]]

    pool = await create_pool(parse_agent_url(url))
    try:
        for invoice_on, creditnote_on in (
            ("payment", "payment"),
            ("payment", "creation"),
            ("creation", "creation"),
        ):
            rules = queries.DueRules(invoice_on, creditnote_on, "negative_total")
            async with pool.acquire() as conn:
                due = await queries.due_documents(conn, rules, 10)
            assert [(d.invoice_id, d.doctype) for d in due] == expected(invoice_on, creditnote_on, 10), (
                invoice_on,
                creditnote_on,
            )
    finally:
        pool.close()
        await pool.wait_closed()
    assert len(expected("payment", "payment", 10)) == 3  # the test means something


# -- the batch protocol ------------------------------------------------------------------------


async def test_items_the_ledger_could_not_write_are_sent_again_as_they_were(aiohttp_server: Any) -> None:
    """The coordinator answers some items of a batch 503 (its ledger did not answer in time
    for them), refuses one and numbers the rest: the client sends exactly the 503 items
    again, unchanged, and hands back one result per document in the request's order. (The
    real coordinator gives such answers only under a timing fault, hence this stand-in.)"""
    sent: list[list[dict[str, Any]]] = []

    async def reserve_batch(request: web.Request) -> web.Response:
        items = (await request.json())["documents"]
        sent.append(items)
        results: list[dict[str, Any]] = []
        for n, item in enumerate(items):
            if item["doc_id"] == "13":
                results.append({"status": 403, "error": {"code": "peer_retired", "message": "retired"}})
            elif len(sent) == 1 and n % 2:
                results.append(
                    {"status": 503, "error": {"code": "unavailable", "message": "no answer in time"}}
                )
            else:
                results.append({"status": 201, "doc_id": item["doc_id"], "state": "reserved"})
        return web.json_response({"results": results})

    app = web.Application()
    app.router.add_post("/v1/reservations/batch", reserve_batch)
    server = await aiohttp_server(app)
    async with CoordinatorClient(str(server.make_url("")), "token", patience=10) as client:
        documents = [("invoice", str(doc_id), date(2025, 5, doc_id)) for doc_id in range(10, 16)]
        results = await client.reserve_many(documents)
    assert len(sent) == 2
    assert sent[1] == [sent[0][1], sent[0][5]]  # "11" and "15"; "13" was refused, not resent
    assert [r["doc_id"] if isinstance(r, dict) else r.code for r in results] == [
        "10",
        "11",
        "12",
        "peer_retired",
        "14",
        "15",
    ]
    assert isinstance(results[3], CoordinatorRefused)


# -- crashes around a batch --------------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_between_the_coordinators_answer_and_the_mysql_commit(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    """An agent reserves a batch of 150 and is SIGKILLed while its write waits for MySQL;
    restarted, it writes and confirms them and is SIGKILLed again before it records the
    confirms. Meanwhile another store numbers its own documents. Restarted once more: every
    document carries the number reserved before the first kill, nothing released, no gap."""
    rules = Rules(invoice=Series(format="INV-{NUMBER:5}"), creditnote=Series(format="CN-{NUMBER:5}"))
    async with running_cluster(
        database_url, tokens, whmcs_database_factory, tmp_path, rules, seed=53
    ) as cluster:
        alpha, bravo = cluster.stores[0], cluster.stores[1]
        alpha.agent.kill()
        rng = random.Random(53)
        days = [date(2025, 4, 1) + timedelta(days=n) for n in range(20)]
        ids = await create_at_once(
            alpha.whmcs_url,
            [
                (
                    i,
                    alpha.generator.new_invoice(
                        status="Paid", credit_note=rng.random() < 0.2, date=rng.choice(days)
                    ),
                )
                for i in range(1, 151)
            ],
        )
        marks = ",".join(map(str, ids))

        # 1. The numbers' transaction waits for rows this test holds: kill it there.
        async with connection(alpha.whmcs_url, autocommit=False) as holder:
            await fetch_all(holder, f"SELECT id FROM tblinvoices WHERE id IN ({marks}) FOR UPDATE")
            alpha.agent.spawn()

            async def reserved_and_writing() -> dict[str, dict[str, Any]] | None:
                mine = await ledger_reservations(cluster, alpha)
                if len(mine) == len(ids) and await lock_waits(alpha.whmcs_url):
                    return mine
                return None

            before = await wait_for("alpha reserved its batch and waits to write it", reserved_and_writing)
            alpha.agent.kill()
            await holder.rollback()
        assert {r["state"] for r in before.values()} == {"reserved"}
        state = await read_store(alpha)
        assert {row["invoicenum"] for row in state.invoices} == {""}
        assert state.outbox == [] and state.receipts == []

        # Another store goes on numbering past the reserved batch.
        await create_at_once(
            bravo.whmcs_url,
            [(i, bravo.generator.new_invoice(status="Paid", date=rng.choice(days))) for i in range(1, 21)],
        )

        # 2. Confirmed by the coordinator, not yet recorded in MySQL: kill it there.
        async with connection(alpha.whmcs_url, autocommit=False) as holder:
            await fetch_all(
                holder, "SELECT invoice_id FROM mod_concord_documents WHERE invoice_id >= 1 FOR UPDATE"
            )
            alpha.agent.spawn()

            async def issued_and_recording() -> bool:
                mine = await ledger_reservations(cluster, alpha)
                issued = [r for r in mine.values() if r["state"] == "issued"]
                return len(issued) == len(ids) and bool(await lock_waits(alpha.whmcs_url))

            await wait_for("alpha's confirms acknowledged, their record waiting", issued_and_recording)
            alpha.agent.kill()
            await holder.rollback()
        state = await read_store(alpha)
        assert {row["id"]: row["invoicenum"] for row in state.invoices} == {
            int(doc_id): r["formatted"] for doc_id, r in before.items()
        }
        assert len(state.outbox) == len(ids)
        assert [row for row in state.outbox if row["confirmed_at"] is not None] == []

        # 3. Restarted: the confirms repeat and are recorded; nothing else changes.
        await alpha.agent.start(60)
        await wait_settled(cluster)
        ledger = await verify(cluster)
        assert_clean_logs(cluster)
        after = await ledger_reservations(cluster, alpha)
    assert {doc_id: (r["id"], r["number"], r["state"]) for doc_id, r in after.items()} == {
        doc_id: (r["id"], r["number"], "issued") for doc_id, r in before.items()
    }
    counts = summary(ledger)
    assert counts["released_then_reused"] == 0
    assert sum(v for k, v in counts.items() if "/" in k) == len(ids) + 20
    print(f"issued {counts}")


@pytest.mark.slow
async def test_a_batch_larger_than_the_coordinators_body_limit_is_confirmed(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    """30 paid invoices of ~400 KB each (bundles of long item lines): their confirms, about
    12 MB together, exceed the coordinator's 8 MiB request body, yet all are issued."""
    rules = Rules(invoice=Series(), creditnote=Series())
    async with running_cluster(
        database_url, tokens, whmcs_database_factory, tmp_path, rules, seed=61
    ) as cluster:
        alpha = cluster.stores[0]
        documents = []
        for invoice_id in range(1, 31):
            rows = alpha.generator.new_invoice(status="Paid", date=date(2025, 2, 1))
            line = rows.items[0]
            rows.items += [
                {**line, "description": f"{n}: " + "usage record " * 4000, "amount": 0} for n in range(8)
            ]
            documents.append((invoice_id, rows))
        await create_at_once(alpha.whmcs_url, documents)
        await wait_settled(cluster)
        ledger = await verify(cluster)
        assert_clean_logs(cluster)
    assert summary(ledger) == {"invoice/all": 30, "released_then_reused": 0}
    sizes = [len(str(doc["snapshot"])) for doc in ledger.documents.values()]
    assert sum(sizes) > 10 * 1024 * 1024, "the confirms must exceed the coordinator's limit"


# -- a burst ---------------------------------------------------------------------------------

BURST = 2000


@pytest.mark.slow
async def test_a_burst_of_2000_invoices_created_at_once_across_three_stores(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    """WHMCS's daily cron in three stores creates 2,000 unpaid invoices at the same moment,
    numbered on creation: all are numbered within a minute, gaplessly across the stores,
    each store's in date order (ids given in an order unrelated to the dates)."""
    rules = Rules(
        invoice=Series(format="INV-{NUMBER:6}", assign_on="creation"),
        creditnote=Series(format="CN-{NUMBER:6}", assign_on="creation"),
    )
    rng = random.Random(59)
    first = date(2025, 9, 1)
    async with running_cluster(
        database_url, tokens, whmcs_database_factory, tmp_path, rules, seed=59
    ) as cluster:
        shares = [BURST // 3 + (n < BURST % 3) for n in range(3)]

        def documents(store: Store, count: int) -> list[tuple[int, InvoiceRows]]:
            return [
                (
                    i,
                    store.generator.new_invoice(
                        status="Unpaid", date=first + timedelta(days=rng.randrange(30))
                    ),
                )
                for i in range(1, count + 1)
            ]

        runs = [
            await asyncio.to_thread(documents, store, count)
            for store, count in zip(cluster.stores, shares, strict=True)
        ]
        started = time.monotonic()
        await asyncio.gather(
            *(create_at_once(store.whmcs_url, run) for store, run in zip(cluster.stores, runs, strict=True))
        )
        took = await wait_settled(cluster, within=60)
        elapsed = time.monotonic() - started
        ledger = await verify(cluster)
        assert_clean_logs(cluster)
        states = [await read_store(store) for store in cluster.stores]
    assert summary(ledger) == {"invoice/all": BURST, "released_then_reused": 0}
    for store, state in zip(cluster.stores, states, strict=True):
        by_date = sorted(state.invoices, key=lambda row: (row["date"], row["id"]))
        numbers = [int(row["invoicenum"].removeprefix("INV-")) for row in by_date]
        assert numbers == sorted(numbers), f"{store.name}: numbers not in date order"
    assert elapsed <= 60, f"{BURST} invoices took {elapsed:.1f}s"
    print(
        f"{BURST} invoices numbered and confirmed {took:.1f}s after they were created ({BURST / took:.0f}/s)"
    )


async def test_an_agent_numbers_its_backlog_before_it_scans_for_changes(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    """An agent starts on a store where an issued invoice changed while it was down, and 300
    paid invoices wait for a number: it numbers and confirms the backlog first; the change scan
    and the reconciliation, which read every issued document, run once it has caught up."""
    rules = Rules(invoice=Series(format="INV-{NUMBER:6}"), creditnote=Series(format="CN-{NUMBER:6}"))
    async with running_cluster(
        database_url,
        tokens,
        whmcs_database_factory,
        tmp_path,
        rules,
        seed=61,
        agent_env={"CONCORD_AGENT_BATCH_SIZE": "5"},
    ) as cluster:
        store = cluster.stores[0]
        [issued] = await create_at_once(store.whmcs_url, [(1, store.generator.new_invoice(status="Paid"))])
        await wait_settled(cluster)
        store.agent.stop()
        async with connection(store.whmcs_url) as conn:
            await update_invoice(conn, issued, {"status": "Refunded"})
        backlog = [(i, store.generator.new_invoice(status="Paid")) for i in range(2, 302)]
        await create_at_once(store.whmcs_url, backlog)
        store.agent.spawn()
        await store.agent.wait_healthy(60)
        await wait_settled(cluster)
        positions = await event_positions(cluster.database_url, store.peer_id)
        assert_clean_logs(cluster)
    assert len(positions["NumberReserved"]) == 301
    assert positions["DocumentUpdated"]  # the refund reached the ledger
    # After the backlog was numbered and confirmed.
    assert min(positions["DocumentUpdated"]) > max(positions["NumberReserved"] + positions["NumberIssued"])


async def event_positions(database_url: str, peer_id: str) -> dict[str, list[int]]:
    """Ledger positions of each type of the store's events."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT type, position FROM events WHERE data->>'peer_id' = $1 ORDER BY position", peer_id
        )
    finally:
        await conn.close()
    positions: dict[str, list[int]] = {}
    for row in rows:
        positions.setdefault(row["type"], []).append(row["position"])
    return positions
