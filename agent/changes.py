"""Changes of issued documents reach the coordinator as DocumentUpdated.

A frequent scan compares a fingerprint of status, payment, credit and totals; a periodic
full reconciliation compares whole snapshots, catching what the scan cannot see (items,
client snapshot) and anything missed while the agent was down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from agent.client import CoordinatorClient, CoordinatorRefused
from agent.rules import RulesHolder
from agent.whmcs import queries

log = structlog.get_logger(__name__)


class ChangeReporter:
    def __init__(
        self,
        pool: Any,
        client: CoordinatorClient,
        rules: RulesHolder,
        has_invoicedata: bool,
        caught_up: asyncio.Event,
    ) -> None:
        self._pool = pool
        self._client = client
        self._rules = rules
        self._has_invoicedata = has_invoicedata
        # Numbering and confirming go first: the scan and the reconciliation read many issued
        # documents, so each of their queries waits until neither has a backlog.
        self._caught_up = caught_up

    async def scan(self, limit: int = 500) -> int:
        await self._caught_up.wait()
        async with self._pool.acquire() as conn:
            changed = await queries.changed_documents(conn, limit)
        return await self._report(changed, only_if_different=False)

    async def reconcile(self, page: int = 500) -> int:
        reported, after = 0, 0
        while True:
            await self._caught_up.wait()
            async with self._pool.acquire() as conn:
                known = await queries.known_documents(conn, after, page)
            if not known:
                return reported
            after = known[-1]["invoice_id"]
            reported += await self._report(
                [row["invoice_id"] for row in known],
                only_if_different=True,
                last_seen={r["invoice_id"]: r["snapshot_sha256"] for r in known},
            )

    async def _report(
        self, invoice_ids: Sequence[int], *, only_if_different: bool, last_seen: dict[int, str] | None = None
    ) -> int:
        if not invoice_ids:
            return 0
        async with self._pool.acquire() as conn:
            snaps = await queries.snapshots(conn, invoice_ids, self._rules.current, self._has_invoicedata)
        sent = []
        for snap in snaps.values():
            if only_if_different and last_seen and last_seen.get(snap.invoice_id) == snap.sha256:
                continue
            try:
                await self._client.update_document(snap.doctype, str(snap.invoice_id), snap.document)
            except CoordinatorRefused as refused:
                log.error(
                    "document_update_refused",
                    invoice_id=snap.invoice_id,
                    code=refused.code,
                    message=refused.message,
                )
                continue
            sent.append(snap)
        await queries.remember_documents(self._pool, sent, "issued")
        if sent:
            log.info("documents_updated", count=len(sent))
        return len(sent)
