"""The outbox relay: confirms the numbers written into WHMCS, a batch per request, until the
coordinator has them."""

from __future__ import annotations

from typing import Any

import structlog

from agent.client import CoordinatorClient, CoordinatorRefused
from agent.rules import RulesHolder
from agent.whmcs import queries

log = structlog.get_logger(__name__)


class Relay:
    def __init__(
        self, pool: Any, client: CoordinatorClient, rules: RulesHolder, has_invoicedata: bool, batch_size: int
    ) -> None:
        self._pool = pool
        self._client = client
        self._rules = rules
        self._has_invoicedata = has_invoicedata
        self._batch = batch_size

    async def round(self) -> int:
        """Confirm the oldest unconfirmed outbox rows in one request; returns how many the
        coordinator acknowledged."""
        async with self._pool.acquire() as conn:
            pending = await queries.pending_outbox(conn, self._batch)
            snaps = await queries.snapshots(
                conn, [row["invoice_id"] for row in pending], self._rules.current, self._has_invoicedata
            )
        sendable = []
        for row in pending:
            snap = snaps.get(row["invoice_id"])
            if snap is None:
                log.error(
                    "outbox_invoice_missing",
                    invoice_id=row["invoice_id"],
                    reservation_id=row["reservation_id"],
                )
            else:
                sendable.append((row, snap))
        if not sendable:
            return 0
        results = await self._client.confirm_many(
            [(row["reservation_id"], snap.document) for row, snap in sendable]
        )
        confirmed = []
        for (row, snap), result in zip(sendable, results, strict=True):
            if isinstance(result, dict):
                confirmed.append(queries.Confirmed(row["reservation_id"], snap, result["receipt"]))
            elif isinstance(result, CoordinatorRefused):
                await self._refused(row, result)
            # Unavailable: the row stays in the outbox and is sent again next round.
        await queries.mark_confirmed(self._pool, confirmed)
        return len(confirmed)

    async def _refused(self, row: dict[str, Any], refused: CoordinatorRefused) -> None:
        rid, invoice_id = row["reservation_id"], row["invoice_id"]
        if refused.code == "reservation_released":
            # An operator released the number meanwhile: it may go to another
            # document, so this invoice must not keep it.
            await queries.undo_number(self._pool, rid, invoice_id, row["formatted"])
            log.warning(
                "number_taken_back", invoice_id=invoice_id, number=row["formatted"], reason=refused.message
            )
        elif refused.code == "reservation_void":
            # Voided by an operator: the number stays used and on the invoice.
            await queries.forget_outbox(self._pool, rid)
            log.warning("number_voided", invoice_id=invoice_id, number=row["formatted"])
        else:
            log.error(
                "confirm_refused",
                invoice_id=invoice_id,
                reservation_id=rid,
                code=refused.code,
                message=refused.message,
            )
