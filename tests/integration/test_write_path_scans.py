"""The write path reads rows by index only, on a ledger of 100,000 issued invoices: no batch
scans reservations, documents or events, whatever the plans cached on the writer's
connection and with no ANALYZE after the ledger grew, or none ever (issue 11, "constant
cost per number").

Counted from pg_stat_user_tables, which a backend flushes when it exits: each measurement
closes the writer's connection and waits for its backend to end before reading.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import asyncpg
import pytest

from coordinator.db import connect
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter, open_ledger
from coordinator.migrations import migrate
from tests.support.ledger_preload import (
    backends_gone,
    never_analysed_ledger,
    preload,
    register_peers,
    table_reads,
)

PRELOADED = 100_000
WATCHED = ("reservations", "documents", "events")
TODAY = date(2026, 3, 1)
DOCUMENT = {"ClientData": {"Name": "Ada"}, "DocData": {"Total": "12.10"}}


async def one_of_each(
    writer: LedgerWriter,
    conn: asyncpg.Connection,
    peers: list[str],
    tag: str,
    old_doc: str | None,
    old_number: int | None,
) -> tuple[int, dict[str, Any]]:
    """A batch of every kind the ledger writes, one command each; returns how many, and the
    receipt of the last (the ledger's head). ``old_doc`` and ``old_number``: a document of
    ``peers[0]`` to update and a number to void (made here when None)."""
    batches = 0

    async def run(command: c.Command) -> dict[str, Any]:
        nonlocal batches
        batches += 1
        return await writer.execute(command)

    a, b = peers[0], peers[1]
    reserved = await run(
        c.Reserve(peer_id=a, doctype="invoice", doc_id=f"{tag}-1", date=TODAY, event_id=str(uuid.uuid4()))
    )
    confirm = c.Confirm(
        reservation_id=reserved["reservation_id"], peer_id=a, document=DOCUMENT, event_id=str(uuid.uuid4())
    )
    await run(confirm)
    await run(confirm)  # a retry: answered from the event already in the ledger
    await run(
        c.UpdateDocument(
            peer_id=a,
            doctype="invoice",
            doc_id=old_doc or f"{tag}-1",
            document={**DOCUMENT, "DocData": {"Total": tag}},
        )
    )
    released = await run(c.Reserve(peer_id=a, doctype="invoice", doc_id=f"{tag}-2", date=TODAY))
    await run(c.Release(reservation_id=released["reservation_id"], peer_id=a, reason="failed"))
    pending = await run(c.Reserve(peer_id=a, doctype="invoice", doc_id=f"{tag}-3", date=TODAY))
    await run(c.FlagPendingReservation(reservation_id=pending["reservation_id"], minutes=10))
    await run(c.Confirm(reservation_id=pending["reservation_id"], peer_id=a, document=DOCUMENT))
    await run(
        c.Void(series="invoice", period="all", number=old_number or reserved["number"], reason="cancelled")
    )
    await run(
        c.ImportDocuments(
            peer_id=b,
            documents=(
                c.ImportedDocument(
                    doctype="invoice", doc_id=f"{tag}-old", formatted=f"OLD-{tag}", document=DOCUMENT
                ),
                c.ImportedDocument(
                    doctype="invoice",
                    doc_id=f"{tag}-clash",
                    formatted=str(reserved["formatted"]),
                    document=DOCUMENT,
                ),
            ),
        )
    )
    for numbering in ("on", "off"):  # raises, then resolves, a warning
        await run(
            c.ReportPeerConfig(
                peer_id=b, agent_version=tag, settings={"SequentialInvoiceNumbering": numbering}
            )
        )
    await run(c.RaiseWarning(code="test", subject=tag, message="a test warning"))
    warning_id = await conn.fetchval("SELECT id::text FROM warnings WHERE subject = $1", tag)
    await run(c.ResolveWarning(warning_id=warning_id, by="operator"))
    await run(
        c.ConfigureSeries(
            series="creditnote",
            changes={"format": f"CN-{tag}-{{NUMBER}}"},
            next=None,
            period=None,
            today=TODAY,
        )
    )
    peer = await run(
        c.RegisterPeer(
            name=f"s-{tag}", url="http://127.0.0.1:1", token_sha256=hashlib.sha256(tag.encode()).hexdigest()
        )
    )
    await run(
        c.RotatePeerToken(peer_id=peer["peer_id"], token_sha256=hashlib.sha256(tag.encode() * 2).hexdigest())
    )
    last = await run(c.Reserve(peer_id=a, doctype="invoice", doc_id=f"{tag}-4", date=TODAY))
    return batches, last["receipt"]  # its one event is the head


async def measured(
    conn: asyncpg.Connection, url: str, work: Callable[[LedgerWriter], Awaitable[int]]
) -> tuple[int, dict[str, Any]]:
    """Run ``work`` on a new writer (a fresh connection); the reads it caused per table."""
    before = await table_reads(conn, WATCHED)
    async with open_ledger(url, pool_size=2) as (_, writer):
        batches = await work(writer)
    await backends_gone(conn)
    after = await table_reads(conn, WATCHED)
    return batches, {t: tuple(x - y for x, y in zip(after[t], before[t], strict=True)) for t in WATCHED}


def assert_by_index(batches: int, reads: dict[str, Any]) -> None:
    for table, (seq_scans, seq_rows, index_rows) in reads.items():
        assert (seq_scans, seq_rows) == (0, 0), f"{table} scanned: {reads}"
        # A batch fetches the few rows its commands name, never a table's worth.
        assert index_rows <= 10 * batches, f"{table}: {index_rows} rows for {batches} batches"


@pytest.mark.slow
async def test_batches_read_by_index_on_a_large_ledger(database_url: str) -> None:
    setup = await connect(database_url)
    try:
        await migrate(setup)
        for table in WATCHED:  # statistics stay as the young ledger left them
            await setup.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    finally:
        await setup.close()  # its exit flushes the scans of the index builds
    conn = await connect(database_url)
    try:
        await backends_gone(conn)
        peers: list[str] = []
        first = [0]  # the first preloaded invoice's number

        async def young_then_large(writer: LedgerWriter) -> int:
            """From the first request on an empty ledger: each kind of batch once, an
            ANALYZE as autovacuum makes on a young ledger, each kind six times more while
            the ledger is tiny (PL/pgSQL settles on a generic plan after five calls, costed
            with those sizes, and keeps it until the next ANALYZE), then 100,000 invoices with
            no ANALYZE after them, and every kind again on the same connection."""
            peers.extend(await register_peers(writer))
            batches = 2
            for round_ in range(7):
                done, head = await one_of_each(writer, conn, peers, f"young{round_}", None, None)
                batches += done
                if round_ == 0:
                    await conn.execute("ANALYZE")
            raw = await asyncpg.connect(database_url)  # binary COPY: the driver's own codecs
            try:
                first[0] = await preload(raw, peers, head, PRELOADED)
            finally:
                await raw.close()
            done, _ = await one_of_each(writer, conn, peers, "large", "pre-500", first[0] + 5001)
            return batches + done

        batches, reads = await measured(conn, database_url, young_then_large)
        assert_by_index(batches, reads)
        # Cold: a new connection, no plan cached, statistics of the young ledger.
        batches, reads = await measured(
            conn,
            database_url,
            lambda writer: _count(one_of_each(writer, conn, peers, "cold", "pre-702", first[0] + 7001)),
        )
        assert_by_index(batches, reads)
    finally:
        await conn.close()


async def _count(batches: Awaitable[tuple[int, dict[str, Any]]]) -> int:
    return (await batches)[0]


@pytest.mark.slow
async def test_batches_read_by_index_on_a_ledger_never_analysed(database_url: str) -> None:
    """The same, on a ledger of 20,000 invoices PostgreSQL has no statistics of at all."""
    await never_analysed_ledger(database_url, 20_000)
    conn = await connect(database_url)
    try:
        await backends_gone(conn)
        peers = [r["id"] for r in await conn.fetch("SELECT id::text FROM peers ORDER BY name")]
        first = await conn.fetchval("SELECT min(number) FROM reservations WHERE doc_id LIKE 'pre-%'")
        batches, reads = await measured(
            conn,
            database_url,
            lambda writer: _count(one_of_each(writer, conn, peers, "cold", "pre-702", first + 7001)),
        )
        assert_by_index(batches, reads)
    finally:
        await conn.close()
