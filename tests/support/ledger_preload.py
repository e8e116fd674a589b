"""A large ledger made fast, and what PostgreSQL read from it: issued invoices appended by
COPY, chained as the writer chains them, and each table's reads from pg_stat_user_tables
(which a backend flushes when it exits)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from coordinator.advisory_locks import LEDGER
from coordinator.db import connect
from coordinator.events.canonical import canonical_event, canonical_json, format_recorded_at
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter, open_ledger
from coordinator.migrations import migrate


async def register_peers(writer: LedgerWriter, names: Sequence[str] = ("north", "south")) -> list[str]:
    """A store per name, registered through ``writer``; their peer ids."""
    return [
        (
            await writer.execute(
                c.RegisterPeer(
                    name=name,
                    url="http://127.0.0.1:1",
                    token_sha256=hashlib.sha256(name.encode()).hexdigest(),
                )
            )
        )["peer_id"]
        for name in names
    ]


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
                    "Status": "Paid",
                    "DatePaid": f"{day.isoformat()} 10:00:00",
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


async def table_reads(conn: asyncpg.Connection, tables: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """Per table: (sequential scans, rows they read, rows fetched by index)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return {
        r["relname"]: (r["seq_scan"], r["seq_tup_read"], r["idx_tup_fetch"])
        for r in await conn.fetch(
            "SELECT relname, seq_scan, seq_tup_read, idx_tup_fetch FROM pg_stat_user_tables"
            " WHERE relname = ANY($1::text[])",
            list(tables),
        )
    }


async def backends_gone(conn: asyncpg.Connection) -> None:
    """Wait for the other backends of the database to exit: an exiting backend flushes its
    statistics."""
    deadline = time.monotonic() + 10
    while await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ):
        assert time.monotonic() < deadline, "the other backends did not exit"
        await asyncio.sleep(0.02)


async def never_analysed_ledger(url: str, invoices: int) -> int:
    """A migrated ledger of ``invoices`` issued invoices and a few events more (two stores,
    a reservation), which PostgreSQL has never analysed: as after a new installation's first
    burst or import, before autovacuum's first ANALYZE. Returns its events."""
    setup = await connect(url)
    try:
        await migrate(setup)
        for table in ("events", "reservations", "documents"):
            await setup.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        async with open_ledger(url, pool_size=2) as (_, writer):
            peers = await register_peers(writer)
            young = await writer.execute(
                c.Reserve(peer_id=peers[0], doctype="invoice", doc_id="young", date=date(2026, 3, 1))
            )
        raw = await asyncpg.connect(url)  # binary COPY: the driver's own codecs
        try:
            await preload(raw, peers, young["receipt"], invoices)
        finally:
            await raw.close()
        return int(await setup.fetchval("SELECT count(*) FROM events"))
    finally:
        await setup.close()
