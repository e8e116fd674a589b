"""The numbering loop: reserve, then write the number and its outbox row in one transaction.

Every step is idempotent: reserving a document again returns its reservation, the write
only fills an empty ``invoicenum``, the relay's confirm may repeat. A crash anywhere only
repeats work; a failed write releases the number so the sequence stays gapless.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from agent.client import CoordinatorClient
from agent.rules import RulesHolder
from agent.whmcs import queries
from agent.whmcs.queries import DueDocument

log = structlog.get_logger(__name__)


class Numbering:
    def __init__(self, pool: Any, client: CoordinatorClient, rules: RulesHolder,
                 batch_size: int, relay_wakeup: asyncio.Event) -> None:
        self._pool = pool
        self._client = client
        self._rules = rules
        self._batch = batch_size
        self._relay_wakeup = relay_wakeup
        # One document at a time, in date order; the PHP hook waits for the current one.
        self._lock = asyncio.Lock()
        self._skipped: set[int] = set()

    async def round(self) -> int:
        """Number the documents due now, oldest first. Returns how many got a number."""
        async with self._pool.acquire() as conn:
            due = await queries.due_documents(conn, self._rules.current, self._batch)
        numbered = 0
        for doc in due:
            if doc.invoice_id in self._skipped:
                continue
            async with self._lock:
                numbered += await self._number(doc)
        if numbered:
            self._relay_wakeup.set()
        return numbered

    async def number_invoice(self, invoice_id: int) -> str:
        """Number one invoice now if it is due (the PHP hook); return its invoicenum."""
        async with self._lock:
            async with self._pool.acquire() as conn:
                rows = await queries.fetch(
                    conn, "SELECT id, total, status, date, invoicenum FROM tblinvoices"
                    " WHERE id = %s", (invoice_id,))
            if not rows:
                raise LookupError(f"no invoice {invoice_id}")
            row = rows[0]
            rules = self._rules.current
            doctype = rules.doctype(row["total"])
            if row["invoicenum"] == "" and rules.is_due(doctype, row["status"]):
                await self._number(DueDocument(invoice_id, doctype, row["date"]))
                self._relay_wakeup.set()
                async with self._pool.acquire() as conn:
                    rows = await queries.fetch(
                        conn, "SELECT invoicenum FROM tblinvoices WHERE id = %s", (invoice_id,))
            return rows[0]["invoicenum"]

    async def _number(self, doc: DueDocument) -> int:
        reservation = await self._client.reserve(doc.doctype, str(doc.invoice_id), doc.date)
        rid = reservation["reservation_id"]
        if reservation["state"] == "void":
            log.warning("document_number_voided", invoice_id=doc.invoice_id,
                        number=reservation["formatted"])
            self._skipped.add(doc.invoice_id)
            return 0
        try:
            outcome = await queries.write_number(self._pool, doc.invoice_id, reservation)
        except Exception as exc:
            log.warning("whmcs_write_failed", invoice_id=doc.invoice_id, error=repr(exc))
            if reservation["state"] == "reserved":
                await self._client.release(rid, f"writing to WHMCS failed: {exc!r}")
            raise
        if outcome == "already":
            return 0
        if outcome != "written":
            log.warning("invoice_numbered_elsewhere", invoice_id=doc.invoice_id,
                        invoicenum=outcome)
            if reservation["state"] == "reserved":
                await self._client.release(
                    rid, f"invoice {doc.invoice_id} already carries number {outcome}")
            return 0
        log.info("numbered", invoice_id=doc.invoice_id, doctype=doc.doctype,
                 number=reservation["formatted"])
        return 1
