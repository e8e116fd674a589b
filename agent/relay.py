"""The outbox relay: confirms every number written into WHMCS until the coordinator has it."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from agent.client import CoordinatorClient, CoordinatorRefused
from agent.rules import RulesHolder
from agent.whmcs import queries

log = structlog.get_logger(__name__)


class Relay:
    def __init__(self, pool: Any, client: CoordinatorClient, rules: RulesHolder,
                 has_invoicedata: bool, concurrency: int = 16) -> None:
        self._pool = pool
        self._client = client
        self._rules = rules
        self._has_invoicedata = has_invoicedata
        self._slots = asyncio.Semaphore(concurrency)

    async def round(self, limit: int = 500) -> int:
        async with self._pool.acquire() as conn:
            pending = await queries.pending_outbox(conn, limit)
            snaps = await queries.snapshots(conn, [row["invoice_id"] for row in pending],
                                            self._rules.current, self._has_invoicedata)
        results = await asyncio.gather(*(self._confirm(row, snaps) for row in pending))
        return sum(results)

    async def _confirm(self, row: dict[str, Any], snaps: dict[int, queries.Snapshot]) -> int:
        rid, invoice_id = row["reservation_id"], row["invoice_id"]
        snap = snaps.get(invoice_id)
        if snap is None:
            log.error("outbox_invoice_missing", invoice_id=invoice_id, reservation_id=rid)
            return 0
        async with self._slots:
            try:
                issued = await self._client.confirm(rid, snap.document)
            except CoordinatorRefused as refused:
                if refused.code == "reservation_released":
                    # An operator released the number meanwhile: it may go to another
                    # document, so this invoice must not keep it.
                    await queries.undo_number(self._pool, rid, invoice_id, row["formatted"])
                    log.warning("number_taken_back", invoice_id=invoice_id,
                                number=row["formatted"], reason=refused.message)
                elif refused.code == "reservation_void":
                    # Voided by an operator: the number stays used and on the invoice.
                    await queries.forget_outbox(self._pool, rid)
                    log.warning("number_voided", invoice_id=invoice_id, number=row["formatted"])
                else:
                    log.error("confirm_refused", invoice_id=invoice_id, reservation_id=rid,
                              code=refused.code, message=refused.message)
                return 0
            await queries.mark_confirmed(self._pool, rid, snap, issued["receipt"])
        return 1
