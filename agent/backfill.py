"""Import documents numbered before Concord, so the ledger knows every number in use."""

from __future__ import annotations

from datetime import date
from typing import Any

from tqdm import tqdm

from agent.client import CoordinatorClient
from agent.rules import RulesHolder
from agent.whmcs import queries

PAGE = 200


async def backfill(
    pool: Any,
    client: CoordinatorClient,
    rules: RulesHolder,
    has_invoicedata: bool,
    since: date | None,
    *,
    progress: bool = True,
) -> dict[str, int]:
    totals = {"imported": 0, "already_imported": 0, "collisions": 0}
    async with pool.acquire() as conn:
        remaining = await queries.count_unknown_numbered(conn, since)
    after = 0
    with tqdm(total=remaining, unit="doc", desc="backfill", disable=not progress) as bar:
        while True:
            async with pool.acquire() as conn:
                ids = await queries.unknown_numbered(conn, since, after, PAGE)
                if not ids:
                    return totals
                snaps = await queries.snapshots(conn, ids, rules.current, has_invoicedata)
            after = ids[-1]
            batch = [snaps[i] for i in ids if i in snaps]
            result = await client.import_documents(
                [
                    {
                        "doctype": s.doctype,
                        "doc_id": str(s.invoice_id),
                        "number": s.formatted,
                        "document": s.document,
                    }
                    for s in batch
                ]
            )
            clashed = {(c["doctype"], c["doc_id"]) for c in result["collisions"]}
            known = [s for s in batch if (s.doctype, str(s.invoice_id)) not in clashed]
            await queries.remember_documents(pool, known, "imported")
            totals["imported"] += result["imported"]
            totals["already_imported"] += result["already_imported"]
            totals["collisions"] += len(clashed)
            bar.update(len(batch))
