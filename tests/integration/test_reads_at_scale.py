"""Reads that must not grow with the ledger, on 20,000 issued invoices (40,000 events).

The ledger's followers, the billing checks and the KashFlow sync, catch up on a long history
reading each event about once, on a ledger PostgreSQL has no statistics of yet: a new
installation's first burst or import, before autovacuum's first ANALYZE (a minute at the
soonest). With a range bounded by the head alone, PostgreSQL then fetched and sorted every
event up to the head for each transaction (its default estimate is 0.5 % of the table), so
that a catch-up cost grew with the square of its length. A page of ``GET /v1/reservations``
reads about its own rows (it read and sorted the whole table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from coordinator.accounting.queue import catch_up, due
from coordinator.db import connect, create_pool
from coordinator.ledger import queries
from coordinator.ledger.writer import LedgerWriter, open_ledger
from coordinator.monitors.billing import BillingMonitor
from getfeed.vies import ViesSettings
from tests.support.ledger_preload import backends_gone, never_analysed_ledger, table_reads

PRELOADED = 20_000  # issued invoices: 40,000 events
VIES_OFF = ViesSettings(url="", timeout_seconds=1.0, cache_days=1, lookups_per_answer=0)

Follower = Callable[[asyncpg.Pool, LedgerWriter], Awaitable[int]]


async def events_read(url: str, conn: asyncpg.Connection, follow: Follower) -> tuple[int, int]:
    """What ``follow`` says it read, and the rows of ``events`` PostgreSQL read for it."""
    before = (await table_reads(conn, ["events"]))["events"]
    async with open_ledger(url, pool_size=3) as (pool, writer):
        told = await follow(pool, writer)
    await backends_gone(conn)
    after = (await table_reads(conn, ["events"]))["events"]
    seq_rows, index_rows = after[1] - before[1], after[2] - before[2]
    return told, seq_rows + index_rows


@pytest.mark.slow
async def test_followers_catch_up_reading_each_event_about_once(database_url: str) -> None:
    events = await never_analysed_ledger(database_url, PRELOADED)
    conn = await connect(database_url)
    try:
        await backends_gone(conn)

        async def billing(pool: asyncpg.Pool, writer: LedgerWriter) -> int:
            return await BillingMonitor(pool, writer, VIES_OFF).check()

        async def kashflow(pool: asyncpg.Pool, writer: LedgerWriter) -> int:
            return await catch_up(pool)

        for follow in (billing, kashflow):
            told, rows = await events_read(database_url, conn, follow)
            assert told >= PRELOADED, f"{follow.__name__} read {told} events"
            # Each transaction looks at a bounded window of positions: consecutive windows
            # overlap, so an event may be fetched twice, never once per transaction.
            assert rows <= 3 * events, f"{follow.__name__}: {rows} rows read for {events} events"
        # Both got to the head: nothing left for their next run.
        assert await conn.fetchval("SELECT position FROM billing_checkpoint") == events
        assert await conn.fetchval("SELECT position FROM kashflow_checkpoint") == events
        # The sync then walks the invoices due for KashFlow, a page at a time.
        tables = ["kashflow_invoices", "documents"]
        before = await table_reads(conn, tables)
        pool = await create_pool(database_url, size=1)
        try:
            async with asyncio.timeout(60):  # a quadratic walk would take hours: fail instead
                walked = [invoice async for invoice in due(pool)]
        finally:
            await pool.close()
        await backends_gone(conn)
        after = await table_reads(conn, tables)
        assert len(walked) == PRELOADED
        for table in tables:
            rows = after[table][1] + after[table][2] - before[table][1] - before[table][2]
            assert rows <= 3 * PRELOADED, f"{table}: {rows} rows read for {PRELOADED} invoices due"
        # Few left due, far apart (most posted): each is still walked, in ledger order.
        await conn.execute(
            "UPDATE kashflow_invoices SET settled_at = now() WHERE position NOT IN"
            " (SELECT position FROM kashflow_invoices ORDER BY position OFFSET 7 LIMIT 60)"
            " AND position % 997 <> 0"
        )
        left = [
            r["position"]
            for r in await conn.fetch(
                "SELECT position FROM kashflow_invoices WHERE settled_at IS NULL ORDER BY position"
            )
        ]
        assert 60 < len(left) < 100
        pool = await create_pool(database_url, size=1)
        try:
            async with asyncio.timeout(60):
                assert [invoice.position async for invoice in due(pool)] == left
        finally:
            await pool.close()
    finally:
        await conn.close()


@pytest.mark.slow
async def test_a_page_of_reservations_reads_about_its_own_rows(database_url: str) -> None:
    await never_analysed_ledger(database_url, PRELOADED)
    conn = await connect(database_url)
    try:
        await conn.execute("ANALYZE")  # as autovacuum leaves it
        middle = await conn.fetchval(
            "SELECT id::text FROM reservations ORDER BY reserved_at, id OFFSET 9000 LIMIT 1"
        )
        for state, after in ((None, None), (None, middle), ("issued", middle), ("void", None)):
            await backends_gone(conn)
            before = (await table_reads(conn, ["reservations"]))["reservations"]
            reader = await connect(database_url)
            try:
                page = await queries.reservations(reader, state, 100, after)
            finally:
                await reader.close()
            await backends_gone(conn)
            after_reads = (await table_reads(conn, ["reservations"]))["reservations"]
            assert len(page) == (0 if state == "void" else 100)
            rows = after_reads[1] + after_reads[2] - before[1] - before[2]
            # At most a page from each state's range, and the reservation the page follows.
            assert rows <= 4 * 100 + 1, f"state {state}, after {after}: {rows} rows read for a page"
    finally:
        await conn.close()
