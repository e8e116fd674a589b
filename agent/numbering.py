"""The numbering loop: reserve a batch, then write the numbers and their outbox rows in one
transaction.

Every step is idempotent: reserving a document again returns its reservation, the write
only fills an empty ``invoicenum``, the relay's confirm may repeat. A crash anywhere only
repeats work; a failed write releases the numbers so the sequence stays gapless.

Finding the due documents reads the whole ``tblinvoices`` (WHMCS has no index on
``invoicenum``, and the agent adds none to WHMCS's tables), so one read serves up to
``DUE_READ_BATCHES`` batches: a burst of thousands costs a read per ten batches, not one per
batch. A document numbered meanwhile by the PHP hook is reserved again and found
"already" written; what became due meanwhile waits for the next read; a change of the
series' ``assign_on`` drops what was read under the old rules.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import structlog

from agent.client import CoordinatorClient, CoordinatorRefused, CoordinatorUnavailable
from agent.rules import RulesHolder
from agent.whmcs import queries
from agent.whmcs.queries import DueDocument, DueRules

log = structlog.get_logger(__name__)

DUE_READ_BATCHES = 10


class Numbering:
    def __init__(
        self,
        pool: Any,
        client: CoordinatorClient,
        rules: RulesHolder,
        batch_size: int,
        relay_wakeup: asyncio.Event,
    ) -> None:
        self._pool = pool
        self._client = client
        self._rules = rules
        self._batch = batch_size
        self._relay_wakeup = relay_wakeup
        # One batch at a time, in date order; the PHP hook waits for the current one.
        self._lock = asyncio.Lock()
        self._skipped: set[int] = set()
        self._due: deque[DueDocument] = deque()  # read, not yet numbered: oldest first
        self._due_under: DueRules | None = None  # the rules they were read under

    async def round(self) -> int:
        """Number the documents due now, oldest first, up to a batch of them in one request.
        Returns how many due documents it settled (numbered, or found numbered or voided):
        fewer than a batch when none are left, and when the coordinator refused or could not
        answer some (they stay due; counting them would spin the loop meanwhile)."""
        async with self._lock:
            if self._due_under != self._rules.current:
                self._due.clear()  # the series' assign_on changed: what is due changed too
            if not self._due:
                await self._read_due()
            batch = [self._due.popleft() for _ in range(min(self._batch, len(self._due)))]
            try:
                written, unsettled = await self._number(batch)
            except BaseException:
                self._due.clear()  # read again: what failed goes before the later documents
                raise
        if written:
            self._relay_wakeup.set()
        return len(batch) - unsettled

    async def _read_due(self) -> None:
        limit = self._batch * DUE_READ_BATCHES
        self._due_under = rules = self._rules.current
        async with self._pool.acquire() as conn:
            due = await queries.due_documents(conn, rules, limit + len(self._skipped))
        self._due.extend([doc for doc in due if doc.invoice_id not in self._skipped][:limit])

    async def number_invoice(self, invoice_id: int) -> str:
        """Number one invoice now if it is due (the PHP hook); return its invoicenum."""
        async with self._lock:
            async with self._pool.acquire() as conn:
                rows = await queries.fetch(
                    conn,
                    "SELECT id, total, status, date, invoicenum FROM tblinvoices WHERE id = %s",
                    (invoice_id,),
                )
            if not rows:
                raise LookupError(f"no invoice {invoice_id}")
            row = rows[0]
            rules = self._rules.current
            doctype = rules.doctype(row["total"])
            if row["invoicenum"] == "" and rules.is_due(doctype, row["status"]):
                await self._number([DueDocument(invoice_id, doctype, row["date"])])
                self._relay_wakeup.set()
                async with self._pool.acquire() as conn:
                    rows = await queries.fetch(
                        conn, "SELECT invoicenum FROM tblinvoices WHERE id = %s", (invoice_id,)
                    )
            return rows[0]["invoicenum"]

    async def _number(self, due: Sequence[DueDocument]) -> tuple[int, int]:
        """Reserve and write ``due``: (numbers written, documents refused or not answered)."""
        if not due:
            return 0, 0
        results = await self._client.reserve_many(
            [(doc.doctype, str(doc.invoice_id), doc.date) for doc in due]
        )
        reserved: dict[int, dict[str, Any]] = {}
        unavailable = refused = 0
        for doc, result in zip(due, results, strict=True):
            if isinstance(result, CoordinatorUnavailable):
                unavailable += 1  # reserved again in a later round, as it was
            elif isinstance(result, CoordinatorRefused):
                refused += 1
                log.warning(
                    "reserve_refused", invoice_id=doc.invoice_id, code=result.code, message=result.message
                )
            elif result["state"] == "void":
                log.warning("document_number_voided", invoice_id=doc.invoice_id, number=result["formatted"])
                self._skipped.add(doc.invoice_id)
            else:
                reserved[doc.invoice_id] = result
        if unavailable:
            log.warning("reserve_unavailable", documents=unavailable, of=len(due))
            self._due.clear()  # read again: those go before the later documents
        if not reserved:
            return 0, unavailable + refused
        try:
            outcomes = await queries.write_numbers(self._pool, reserved)
        except Exception as exc:
            log.warning("whmcs_write_failed", invoices=sorted(reserved), error=repr(exc))
            await self._release(reserved.values(), f"writing to WHMCS failed: {exc!r}")
            raise
        written = 0
        for invoice_id, outcome in outcomes.items():
            reservation = reserved[invoice_id]
            if outcome == "written":
                written += 1
                log.info(
                    "numbered",
                    invoice_id=invoice_id,
                    doctype=reservation["doctype"],
                    number=reservation["formatted"],
                )
            elif outcome != "already":
                log.warning("invoice_numbered_elsewhere", invoice_id=invoice_id, invoicenum=outcome)
                await self._release([reservation], f"invoice {invoice_id} already carries number {outcome}")
        return written, unavailable + refused

    async def _release(self, reservations: Iterable[dict[str, Any]], reason: str) -> None:
        """Give back the numbers still only reserved, so the next documents take them."""
        for reservation in reservations:
            if reservation["state"] == "reserved":
                await self._client.release(reservation["reservation_id"], reason)
