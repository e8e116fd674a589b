"""The sync's durable bookkeeping in PostgreSQL (migration 0005).

The subscriber reads the ledger after its checkpoint in position order (appends are
serialised, so ``position > checkpoint`` never skips an event) and records, in the same
transaction that moves the checkpoint, every invoice it sees paid. Each KashFlow insert is
preceded by a committed intent and followed by the recorded id, so a crash anywhere leaves
enough behind to look up instead of inserting twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson

from coordinator.accounting.posting import store_prefix
from coordinator.events import catalogue as ev

READ_BATCH = 2000  # ledger events per subscriber transaction
DUE_PAGE = 100
_DOCUMENT_EVENTS = [ev.NUMBER_ISSUED, ev.DOCUMENT_UPDATED, ev.DOCUMENT_IMPORTED]


async def catch_up(pool: asyncpg.Pool) -> int:
    """Read the ledger up to its current head; return how many invoice events were read."""
    head = await pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
    read = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            cursor = await conn.fetchval("SELECT position FROM kashflow_checkpoint FOR UPDATE")
            if cursor >= head:
                return read
            rows = await conn.fetch(
                "SELECT position, data->>'peer_id' AS peer_id, data->>'doc_id' AS doc_id,"
                "       data #>> '{document,DocData,Status}' AS status"
                "  FROM events WHERE position > $1 AND position <= $2 AND type = ANY($3)"
                "   AND data->>'doctype' = 'invoice' ORDER BY position LIMIT $4",
                cursor, head, _DOCUMENT_EVENTS, READ_BATCH)
            paid = [(r["peer_id"], r["doc_id"], r["position"]) for r in rows if r["status"] == "Paid"]
            await conn.executemany(
                "INSERT INTO kashflow_invoices (peer_id, doc_id, position) VALUES ($1, $2, $3)"
                " ON CONFLICT (peer_id, doc_id) DO NOTHING", paid)
            # Paid again: nothing to report. Any other status once in KashFlow: report it.
            await conn.executemany(
                "UPDATE kashflow_invoices SET changed_status = nullif($3, 'Paid')"
                " WHERE peer_id = $1 AND doc_id = $2 AND invoice_number IS NOT NULL",
                [(r["peer_id"], r["doc_id"], r["status"]) for r in rows])
            done_to = rows[-1]["position"] if len(rows) == READ_BATCH else head
            await conn.execute("UPDATE kashflow_checkpoint SET position = $1", done_to)
            read += len(rows)


async def claim_daily_run(pool: asyncpg.Pool, scheduled: datetime) -> bool:
    """True for the first replica to claim this scheduled instant."""
    return bool(await pool.fetchval(
        "UPDATE kashflow_checkpoint SET daily_run_at = $1"
        " WHERE daily_run_at IS NULL OR daily_run_at < $1 RETURNING true", scheduled))


async def changed_after_posting(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT k.peer_id::text, k.doc_id, k.invoice_number, k.changed_status, d.formatted"
        "  FROM kashflow_invoices k JOIN documents d"
        "    ON d.peer_id = k.peer_id AND d.doctype = 'invoice' AND d.doc_id = k.doc_id"
        " WHERE k.changed_status IS NOT NULL ORDER BY k.position")


async def reported(pool: asyncpg.Pool, peer_id: str, doc_id: str, status: str) -> None:
    await pool.execute(
        "UPDATE kashflow_invoices SET changed_status = NULL"
        " WHERE peer_id = $1 AND doc_id = $2 AND changed_status = $3", peer_id, doc_id, status)


@dataclass
class Due:
    peer_id: str
    doc_id: str
    position: int
    store: str
    formatted: str
    snapshot: dict[str, Any]
    voided: bool
    invoice_intent: bool
    invoice_number: int | None
    payment_intent: bool
    payment_id: int | None
    failed_before: bool

    @property
    def subject(self) -> str:
        return f"{self.peer_id}/invoice/{self.doc_id}"


async def count_due(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM kashflow_invoices WHERE posted_at IS NULL")


async def due(pool: asyncpg.Pool) -> AsyncIterator[Due]:
    """Invoices not yet fully in KashFlow, in the order they were paid in the ledger, with
    their latest snapshot."""
    after = 0
    while True:
        rows = await pool.fetch(
            "SELECT k.peer_id::text, k.doc_id, k.position, p.name, d.formatted, d.snapshot,"
            "       d.voided, k.invoice_intent_at IS NOT NULL AS invoice_intent,"
            "       k.invoice_number, k.payment_intent_at IS NOT NULL AS payment_intent,"
            "       k.payment_id, k.last_error IS NOT NULL AS failed_before"
            "  FROM kashflow_invoices k"
            "  JOIN documents d ON d.peer_id = k.peer_id AND d.doctype = 'invoice'"
            "                  AND d.doc_id = k.doc_id"
            "  JOIN peers p ON p.id = k.peer_id"
            " WHERE k.posted_at IS NULL AND k.position > $1 ORDER BY k.position LIMIT $2",
            after, DUE_PAGE)
        for r in rows:
            yield Due(r["peer_id"], r["doc_id"], r["position"], r["name"], r["formatted"],
                      r["snapshot"], r["voided"], r["invoice_intent"], r["invoice_number"],
                      r["payment_intent"], r["payment_id"], r["failed_before"])
        if len(rows) < DUE_PAGE:
            return
        after = rows[-1]["position"]


async def prefix_of(pool: asyncpg.Pool, peer_id: str, store: str) -> str:
    """The store's customer-code prefix, fixed the first time it is asked for."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE kashflow_stores IN SHARE ROW EXCLUSIVE MODE")
        known = await conn.fetchval("SELECT prefix FROM kashflow_stores WHERE peer_id = $1",
                                    peer_id)
        if known is not None:
            return known
        taken = [r["prefix"] for r in await conn.fetch("SELECT prefix FROM kashflow_stores")]
        prefix = store_prefix(store, taken)
        await conn.execute("INSERT INTO kashflow_stores (peer_id, prefix) VALUES ($1, $2)",
                           peer_id, prefix)
        return prefix


def details_digest(details: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(details, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def known_customer(pool: asyncpg.Pool, code: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT customer_id, details_sha256 FROM kashflow_customers WHERE code = $1", code)


async def remember_customer(pool: asyncpg.Pool, code: str, customer_id: int, digest: str) -> None:
    await pool.execute(
        "INSERT INTO kashflow_customers (code, customer_id, details_sha256) VALUES ($1, $2, $3)"
        " ON CONFLICT (code) DO UPDATE SET customer_id = $2, details_sha256 = $3",
        code, customer_id, digest)


async def intend(pool: asyncpg.Pool, doc: Due, what: Literal["invoice", "payment"]) -> None:
    """Committed before the insert it announces: ``invoice`` or ``payment``."""
    await pool.execute(
        f"UPDATE kashflow_invoices SET {what}_intent_at = now()"
        " WHERE peer_id = $1 AND doc_id = $2", doc.peer_id, doc.doc_id)


async def record_invoice(pool: asyncpg.Pool, doc: Due, number: int) -> None:
    await pool.execute(
        "UPDATE kashflow_invoices SET invoice_number = $3 WHERE peer_id = $1 AND doc_id = $2",
        doc.peer_id, doc.doc_id, number)


async def record_payment(pool: asyncpg.Pool, doc: Due, payment_id: int) -> None:
    await pool.execute(
        "UPDATE kashflow_invoices SET payment_id = $3 WHERE peer_id = $1 AND doc_id = $2",
        doc.peer_id, doc.doc_id, payment_id)


async def record_posted(pool: asyncpg.Pool, doc: Due) -> None:
    await pool.execute(
        "UPDATE kashflow_invoices SET posted_at = now(), last_error = NULL,"
        "       attempts = attempts + 1 WHERE peer_id = $1 AND doc_id = $2",
        doc.peer_id, doc.doc_id)


async def record_failure(pool: asyncpg.Pool, doc: Due, error: str) -> None:
    await pool.execute(
        "UPDATE kashflow_invoices SET last_error = $3, attempts = attempts + 1"
        " WHERE peer_id = $1 AND doc_id = $2", doc.peer_id, doc.doc_id, error)
