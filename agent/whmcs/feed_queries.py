"""What the Get feed reads from WHMCS: the store's documents a query selects, streamed.

Every invoice and credit note, numbered or not: the contract's "leave empty to get all
invoices" includes Drafts and unnumbered Unpaid invoices (their ``Num`` is empty).

The ids come from one unbuffered (server-side) cursor in date-then-id order, in chunks;
each chunk's documents are built from their rows by ``queries.snapshots`` on a second
connection, so memory holds one chunk however many documents match. The VIES cache lives
in ``mod_concord_vies``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from asyncmy.cursors import SSCursor

from agent.whmcs import queries
from getfeed.query import BOTH_DOCTYPES, GetQuery
from getfeed.vies import VatKey, Verdict

# The credit-note rule of DueRules.doctype, as SQL: which rows are of each document type.
_DOCTYPE_SQL = {
    "negative_total": {"invoice": "total >= 0", "creditnote": "total < 0"},
    "none": {"invoice": "TRUE", "creditnote": "FALSE"},
}


def _selection(query: GetQuery, credit_note_rule: str) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if query.invoiceid is not None:
        where.append("id = %s")
        args.append(query.invoiceid)
    elif query.invoicenum is not None:
        where.append("LOWER(invoicenum) = LOWER(%s)")
        args.append(query.invoicenum)
    else:
        if query.start is not None:
            where.append("date >= %s")
            args.append(query.start)
        if query.end is not None:
            where.append("date <= %s")
            args.append(query.end)
    if query.doctypes != BOTH_DOCTYPES:
        [doctype] = query.doctypes
        where.append(_DOCTYPE_SQL[credit_note_rule][doctype])
    return " AND ".join(where) or "TRUE", args


async def store_documents(
    pool: Any, query: GetQuery, rules: queries.DueRules, has_invoicedata: bool, chunk: int = 1000
) -> AsyncGenerator[list[queries.Snapshot], None]:
    """The documents the query selects, ``chunk`` at a time, in date then id order.

    Uses three connections of ``pool``: the id stream, and two that take turns building the
    chunks, so the next chunk is read from MySQL while the caller handles the current one.
    """
    condition, args = _selection(query, rules.credit_note_rule)

    async def build(conn: Any, ids: list[int]) -> list[queries.Snapshot]:
        snaps = await queries.snapshots(conn, ids, rules, has_invoicedata)
        return [snaps[i] for i in ids if i in snaps]

    async with pool.acquire() as ids_conn, pool.acquire() as one, pool.acquire() as other:
        cursor = ids_conn.cursor(SSCursor)
        building: list[asyncio.Task[list[queries.Snapshot]]] = []
        try:
            await cursor.execute(f"SELECT id FROM tblinvoices WHERE {condition} ORDER BY date, id", args)
            turn = 0
            while True:
                ids = [row[0] for row in await cursor.fetchmany(chunk)]
                if ids:
                    building.append(asyncio.create_task(build((one, other)[turn], ids)))
                    turn = 1 - turn
                if not building:
                    return
                if ids and len(building) < 2:
                    continue
                yield await building.pop(0)
        finally:
            # A connection goes back to the pool only when its query is over.
            await asyncio.gather(*building, return_exceptions=True)
            await cursor.close()  # reads what is left of the result, so the connection is reusable


class MysqlVerdictCache:
    """VIES verdicts kept in ``mod_concord_vies`` (times in UTC)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def load(self, keys: Collection[VatKey]) -> dict[VatKey, Verdict]:
        if not keys:
            return {}
        marks = ",".join(["(%s, %s)"] * len(keys))
        args = [part for key in keys for part in key]
        async with self._pool.acquire() as conn:
            rows = await queries.fetch(
                conn,
                "SELECT country, number, valid, checked_at FROM mod_concord_vies"
                f" WHERE (country, number) IN ({marks})",
                args,
            )
        return {
            (r["country"], r["number"]): Verdict(bool(r["valid"]), r["checked_at"].replace(tzinfo=UTC))
            for r in rows
        }

    async def save(self, verdicts: Mapping[VatKey, Verdict]) -> None:
        rows = [(k[0], k[1], int(v.valid), _naive_utc(v.checked_at)) for k, v in verdicts.items()]
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO mod_concord_vies (country, number, valid, checked_at)"
                " VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE valid = VALUES(valid),"
                " checked_at = VALUES(checked_at)",
                rows,
            )


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)
