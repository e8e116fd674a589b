"""The write path reads rows by index only, on a ledger of 100,000 issued invoices: no batch
scans reservations, documents or events, whatever the plans cached on the writer's
connection and with no ANALYZE after the ledger grew (issue 11, "constant cost per number").

Counted from pg_stat_user_tables, which a backend flushes when it exits: each measurement
closes the writer's connection and waits for its backend to end before reading.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from coordinator.advisory_locks import LEDGER
from coordinator.db import connect
from coordinator.events.canonical import canonical_event, canonical_json, format_recorded_at
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter, open_ledger
from coordinator.migrations import migrate

PRELOADED = 100_000
WATCHED = ("reservations", "documents", "events")
TODAY = date(2026, 3, 1)
DOCUMENT = {"ClientData": {"Name": "Ada"}, "DocData": {"Total": "12.10"}}


async def preload(conn: asyncpg.Connection, peers: list[str], head: dict[str, Any], count: int) -> int:
    """Append ``count`` issued invoices (a reserve and a confirm each), chained onto ``head``
    (a receipt) as the writer chains them, with their reservations and documents, by COPY;
    returns the first invoice's number."""
    rng = random.Random(11)
    position, prev = head["position"], bytes.fromhex(head["hash"])
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LEDGER)
        first = await conn.fetchval("SELECT next FROM counters WHERE series = 'invoice' AND period = 'all'")
        moment = datetime.now(UTC) - timedelta(days=60)
        events: list[tuple[Any, ...]] = []
        reservations: list[tuple[Any, ...]] = []
        documents: list[tuple[Any, ...]] = []

        def emit(type_: str, stream: str, data: dict[str, Any]) -> None:
            nonlocal position, prev, moment
            position += 1
            moment += timedelta(microseconds=rng.randrange(100, 20_000))
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            data_json = canonical_json(data)
            body = canonical_event(position, event_id, type_, stream, data_json, format_recorded_at(moment))
            digest = hashlib.sha256(prev + body).digest()
            events.append((position, event_id, type_, stream, data_json.decode(), moment, prev, digest))
            prev = digest

        for i in range(count):
            number, peer, doc_id = first + i, peers[i % len(peers)], f"pre-{i}"
            rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            day = date(2025, 1, 1) + timedelta(days=i // 300)
            r = {
                "reservation_id": rid,
                "peer_id": peer,
                "doctype": "invoice",
                "doc_id": doc_id,
                "series": "invoice",
                "period": "all",
                "number": number,
                "formatted": str(number),
            }
            emit(
                "NumberReserved",
                f"reservation-{rid}",
                {**r, "date": day.isoformat(), "from_pool": False, "next": number + 1},
            )
            reserved_at = moment
            snapshot = {
                "ClientData": {"Name": f"client {i % 997}"},
                "DocData": {
                    "ID": i,
                    "Num": str(number),
                    "Date": day.isoformat(),
                    "Total": f"{rng.randrange(100, 99_999) / 100:.2f}",
                },
            }
            emit("NumberIssued", f"reservation-{rid}", {**r, "document": snapshot})
            reservations.append(
                (
                    rid,
                    peer,
                    "invoice",
                    doc_id,
                    "invoice",
                    "all",
                    number,
                    str(number),
                    day,
                    "issued",
                    reserved_at,
                    position,
                    prev,
                    None,
                )
            )
            documents.append(
                (
                    peer,
                    "invoice",
                    doc_id,
                    rid,
                    "invoice",
                    "all",
                    number,
                    str(number),
                    orjson.dumps(snapshot).decode(),
                    False,
                    False,
                    position,
                )
            )
        await conn.copy_records_to_table("events", records=events)
        await conn.copy_records_to_table("reservations", records=reservations)
        await conn.copy_records_to_table("documents", records=documents)
        await conn.execute(
            "UPDATE counters SET next = $1, highest = $2 WHERE series = 'invoice' AND period = 'all'",
            first + count,
            first + count - 1,
        )
    return first


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


async def table_reads(conn: asyncpg.Connection) -> dict[str, tuple[int, int, int]]:
    """Per watched table: (sequential scans, rows they read, rows fetched by index)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return {
        r["relname"]: (r["seq_scan"], r["seq_tup_read"], r["idx_tup_fetch"])
        for r in await conn.fetch(
            "SELECT relname, seq_scan, seq_tup_read, idx_tup_fetch FROM pg_stat_user_tables"
            " WHERE relname = ANY($1::text[])",
            list(WATCHED),
        )
    }


async def backends_gone(conn: asyncpg.Connection) -> None:
    """Wait for the writer's backends to exit: an exiting backend flushes its statistics."""
    deadline = time.monotonic() + 10
    while await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ):
        assert time.monotonic() < deadline, "the writer's backends did not exit"
        await asyncio.sleep(0.02)


async def measured(
    conn: asyncpg.Connection, url: str, work: Callable[[LedgerWriter], Awaitable[int]]
) -> tuple[int, dict[str, Any]]:
    """Run ``work`` on a new writer (a fresh connection); the reads it caused per table."""
    before = await table_reads(conn)
    async with open_ledger(url, pool_size=2) as (_, writer):
        batches = await work(writer)
    await backends_gone(conn)
    after = await table_reads(conn)
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
            for name in ("north", "south"):
                peers.append(
                    (
                        await writer.execute(
                            c.RegisterPeer(
                                name=name,
                                url="http://127.0.0.1:1",
                                token_sha256=hashlib.sha256(name.encode()).hexdigest(),
                            )
                        )
                    )["peer_id"]
                )
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
