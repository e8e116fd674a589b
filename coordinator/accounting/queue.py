"""The sync's durable bookkeeping in PostgreSQL (migrations 0005 and 0008).

The subscriber reads the ledger after its checkpoint in position order (appends are
serialised, so ``position > checkpoint`` never skips an event) and records, in the same
transaction that moves the checkpoint, every invoice it sees paid (or refunded); a later
event of an invoice it knows makes it due again, so new transactions reach KashFlow and a
dropped invoice paid again is posted. Each KashFlow insert is preceded by a committed intent
and followed by the recorded id, so a crash anywhere leaves enough behind to look up
instead of inserting twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from coordinator.accounting.posting import Movement, store_prefix
from coordinator.events import catalogue as ev

READ_BATCH = 2000  # ledger events per subscriber transaction
# Ledger positions a transaction looks at, at most: bounded by the head alone, the range
# let PostgreSQL, with no statistics of the ledger yet, fetch and sort every event up to
# the head for each transaction: a long catch-up was quadratic.
WINDOW = 4 * READ_BATCH
DUE_PAGE = 100
DUE_WINDOW = 4 * DUE_PAGE  # ledger positions a page of due invoices is read from, at most
_DOCUMENT_EVENTS = [ev.NUMBER_ISSUED, ev.DOCUMENT_UPDATED, ev.DOCUMENT_IMPORTED]
TAKEN_UP = ("Paid", "Refunded")  # statuses that bring an invoice to KashFlow (Refunded: paid first)


async def catch_up(pool: asyncpg.Pool) -> int:
    """Read the ledger up to its current head; return how many invoice events were read."""
    head = await pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
    read = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            cursor = await conn.fetchval("SELECT position FROM kashflow_checkpoint FOR UPDATE")
            if cursor >= head:
                return read
            upper = min(head, cursor + WINDOW)
            rows = await conn.fetch(
                "SELECT position, data->>'peer_id' AS peer_id, data->>'doc_id' AS doc_id,"
                "       data #>> '{document,DocData,Status}' AS status"
                "  FROM events WHERE position > $1 AND position <= $2 AND type = ANY($3)"
                "   AND data->>'doctype' = 'invoice' ORDER BY position LIMIT $4",
                cursor,
                upper,
                _DOCUMENT_EVENTS,
                READ_BATCH,
            )
            paid = [(r["peer_id"], r["doc_id"], r["position"]) for r in rows if r["status"] in TAKEN_UP]
            await conn.executemany(
                "INSERT INTO kashflow_invoices (peer_id, doc_id, position) VALUES ($1, $2, $3)"
                " ON CONFLICT (peer_id, doc_id) DO NOTHING",
                paid,
            )
            # Due again: a posted invoice on any change (it may bring transactions), a
            # dropped one when it is paid again.
            await conn.executemany(
                "UPDATE kashflow_invoices SET settled_at = NULL"
                " WHERE peer_id = $1 AND doc_id = $2 AND settled_at IS NOT NULL"
                "   AND (invoice_number IS NOT NULL OR $3 = ANY($4::text[]))",
                [(r["peer_id"], r["doc_id"], r["status"], list(TAKEN_UP)) for r in rows],
            )
            # Paid again: nothing to report. Any other status once in KashFlow: report it.
            await conn.executemany(
                "UPDATE kashflow_invoices SET changed_status = nullif($3, 'Paid')"
                " WHERE peer_id = $1 AND doc_id = $2 AND invoice_number IS NOT NULL",
                [(r["peer_id"], r["doc_id"], r["status"]) for r in rows],
            )
            done_to = rows[-1]["position"] if len(rows) == READ_BATCH else upper
            await conn.execute("UPDATE kashflow_checkpoint SET position = $1", done_to)
            read += len(rows)


async def claim_daily_run(pool: asyncpg.Pool, scheduled: datetime) -> bool:
    """True for the first replica to claim this scheduled instant."""
    return bool(
        await pool.fetchval(
            "UPDATE kashflow_checkpoint SET daily_run_at = $1"
            " WHERE daily_run_at IS NULL OR daily_run_at < $1 RETURNING true",
            scheduled,
        )
    )


async def changed_after_posting(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT k.peer_id::text, k.doc_id, k.invoice_number, k.changed_status, d.formatted"
        "  FROM kashflow_invoices k JOIN documents d"
        "    ON d.peer_id = k.peer_id AND d.doctype = 'invoice' AND d.doc_id = k.doc_id"
        " WHERE k.changed_status IS NOT NULL ORDER BY k.position"
    )


async def reported(pool: asyncpg.Pool, peer_id: str, doc_id: str, status: str) -> None:
    await pool.execute(
        "UPDATE kashflow_invoices SET changed_status = NULL"
        " WHERE peer_id = $1 AND doc_id = $2 AND changed_status = $3",
        peer_id,
        doc_id,
        status,
    )


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
    failed_before: bool

    @property
    def subject(self) -> str:
        return f"{self.peer_id}/invoice/{self.doc_id}"


async def count_due(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM kashflow_invoices WHERE settled_at IS NULL")


async def due(pool: asyncpg.Pool) -> AsyncIterator[Due]:
    """Invoices not yet fully in KashFlow, in the order they were paid in the ledger, with
    their latest snapshot."""
    after = 0
    while True:
        # A page is read from a window of positions that starts at the first due invoice
        # (found by the due index whatever the statistics), each invoice's document by its
        # whole key. Without statistics of these tables (a first sync after a backfill),
        # PostgreSQL read every due invoice for each page ordered by position alone, and
        # joined before the LIMIT, every document of the store for each invoice.
        start = await pool.fetchval(
            "SELECT min(position) FROM kashflow_invoices WHERE settled_at IS NULL AND position > $1", after
        )
        if start is None:
            return
        rows = await pool.fetch(
            "SELECT k.peer_id::text, k.doc_id, k.position, p.name, d.formatted, d.snapshot,"
            "       d.voided, k.invoice_intent_at IS NOT NULL AS invoice_intent,"
            "       k.invoice_number, k.last_error IS NOT NULL AS failed_before"
            "  FROM (SELECT * FROM kashflow_invoices WHERE settled_at IS NULL"
            "           AND position >= $1 AND position < $1 + $2 ORDER BY position LIMIT $3) k"
            "  LEFT JOIN LATERAL (SELECT formatted, snapshot, voided FROM documents"
            "         WHERE peer_id = k.peer_id AND doctype = 'invoice' AND doc_id = k.doc_id"
            "         LIMIT 1) d ON true"
            "  JOIN peers p ON p.id = k.peer_id"
            " ORDER BY k.position",
            start,
            DUE_WINDOW,
            DUE_PAGE,
        )
        for r in rows:
            if r["formatted"] is None:  # no document (none is expected): nothing to post
                continue
            yield Due(
                r["peer_id"],
                r["doc_id"],
                r["position"],
                r["name"],
                r["formatted"],
                r["snapshot"],
                r["voided"],
                r["invoice_intent"],
                r["invoice_number"],
                r["failed_before"],
            )
        after = rows[-1]["position"] if len(rows) == DUE_PAGE else start + DUE_WINDOW - 1


async def prefix_of(pool: asyncpg.Pool, peer_id: str, store: str) -> str:
    """The store's customer-code prefix, fixed the first time it is asked for."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE kashflow_stores IN SHARE ROW EXCLUSIVE MODE")
        known = await conn.fetchval("SELECT prefix FROM kashflow_stores WHERE peer_id = $1", peer_id)
        if known is not None:
            return known
        taken = [r["prefix"] for r in await conn.fetch("SELECT prefix FROM kashflow_stores")]
        prefix = store_prefix(store, taken)
        await conn.execute("INSERT INTO kashflow_stores (peer_id, prefix) VALUES ($1, $2)", peer_id, prefix)
        return prefix


def details_digest(details: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(details, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def known_customer(pool: asyncpg.Pool, code: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT customer_id, details_sha256 FROM kashflow_customers WHERE code = $1", code
    )


async def remember_customer(pool: asyncpg.Pool, code: str, customer_id: int, digest: str) -> None:
    await pool.execute(
        "INSERT INTO kashflow_customers (code, customer_id, details_sha256) VALUES ($1, $2, $3)"
        " ON CONFLICT (code) DO UPDATE SET customer_id = $2, details_sha256 = $3",
        code,
        customer_id,
        digest,
    )


async def intend_invoice(pool: asyncpg.Pool, doc: Due) -> None:
    """Committed before the invoice insert it announces."""
    await pool.execute(
        "UPDATE kashflow_invoices SET invoice_intent_at = now() WHERE peer_id = $1 AND doc_id = $2",
        doc.peer_id,
        doc.doc_id,
    )


async def record_invoice(pool: asyncpg.Pool, doc: Due, number: int) -> None:
    await pool.execute(
        "UPDATE kashflow_invoices SET invoice_number = $3 WHERE peer_id = $1 AND doc_id = $2",
        doc.peer_id,
        doc.doc_id,
        number,
    )


MovementKey = tuple[int, str]  # (transaction id, direction)


async def recorded_movements(pool: asyncpg.Pool, doc: Due) -> dict[MovementKey, int | None]:
    """The document's payments and refunds with an intent: their KashFlow payment id, None
    while the insert may or may not have happened."""
    rows = await pool.fetch(
        "SELECT transaction_id, direction, payment_id FROM kashflow_transactions"
        " WHERE peer_id = $1 AND doc_id = $2",
        doc.peer_id,
        doc.doc_id,
    )
    return {(r["transaction_id"], r["direction"]): r["payment_id"] for r in rows}


async def intend_movement(pool: asyncpg.Pool, doc: Due, movement: Movement) -> None:
    """Committed before the payment insert it announces."""
    await pool.execute(
        "INSERT INTO kashflow_transactions (peer_id, doc_id, transaction_id, direction, intent_at)"
        " VALUES ($1, $2, $3, $4, now()) ON CONFLICT DO NOTHING",
        doc.peer_id,
        doc.doc_id,
        movement.transaction_id,
        movement.direction,
    )


async def record_movement(pool: asyncpg.Pool, doc: Due, movement: Movement, payment_id: int) -> None:
    await pool.execute(
        "UPDATE kashflow_transactions SET payment_id = $5"
        " WHERE peer_id = $1 AND doc_id = $2 AND transaction_id = $3 AND direction = $4",
        doc.peer_id,
        doc.doc_id,
        movement.transaction_id,
        movement.direction,
        payment_id,
    )


async def settle(pool: asyncpg.Pool, doc: Due) -> None:
    """Nothing of the invoice left to do: posted with its transactions, or dropped."""
    await pool.execute(
        "UPDATE kashflow_invoices SET settled_at = now(), last_error = NULL,"
        "       attempts = attempts + 1 WHERE peer_id = $1 AND doc_id = $2",
        doc.peer_id,
        doc.doc_id,
    )


async def record_failure(pool: asyncpg.Pool, doc: Due, error: str) -> None:
    await pool.execute(
        "UPDATE kashflow_invoices SET last_error = $3, attempts = attempts + 1"
        " WHERE peer_id = $1 AND doc_id = $2",
        doc.peer_id,
        doc.doc_id,
        error,
    )


async def reported_currencies(pool: asyncpg.Pool) -> dict[str, dict[str, str]]:
    """Each store's currencies as its agent last reported them in the heartbeat: store
    name -> WHMCS currency id (text) -> ISO code."""
    rows = await pool.fetch(
        "SELECT name, reported->'Currencies' AS currencies FROM peers"
        " WHERE jsonb_typeof(reported->'Currencies') = 'object'"
    )
    return {r["name"]: {str(k): str(v) for k, v in r["currencies"].items()} for r in rows}
