"""`concord export FILE.jsonl`: streams the ledger into the file format of export_format.py.

The export reads one consistent snapshot through a server-side cursor: memory stays flat
however long the ledger is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from tqdm import tqdm

from coordinator.audit.chain import EVENT_COLUMNS, stored_body
from coordinator.audit.export_format import event_line, header_line
from coordinator.ledger import store

FETCH = 2000


async def cursor_chunks(
    conn: asyncpg.Connection, query: str, *args: object, size: int = FETCH
) -> AsyncIterator[list[asyncpg.Record]]:
    """The rows of ``query`` in chunks through a server-side cursor (the caller holds the
    transaction). The next chunk is already on its way while the caller works on one."""
    cursor = await conn.cursor(query, *args)
    rows = await cursor.fetch(size)
    while rows:
        ahead = asyncio.ensure_future(cursor.fetch(size))
        await asyncio.sleep(0)  # let it send the request before the caller's CPU work
        try:
            yield rows
        except BaseException:
            ahead.cancel()
            raise
        rows = await ahead


def stored_events(
    conn: asyncpg.Connection, after: int, upto: int, *, table: str = "events", size: int = FETCH
) -> AsyncIterator[list[asyncpg.Record]]:
    """Events after ``after`` up to ``upto``, in position order, in chunks."""
    return cursor_chunks(
        conn,
        f"SELECT {EVENT_COLUMNS} FROM {table} WHERE position > $1 AND position <= $2 ORDER BY position",
        after,
        upto,
        size=size,
    )


async def export_ledger(
    conn: asyncpg.Connection, path: Path, *, progress: bool | None = None
) -> tuple[int, bytes]:
    """Write the ledger to ``path`` (atomically: a partial file is never left under that name)."""
    partial = path.with_name(path.name + ".part")
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        position, hash_ = await store.head(conn)
        with (
            partial.open("wb") as out,
            tqdm(
                total=position,
                unit="ev",
                unit_scale=True,
                desc="export",
                disable=None if progress is None else not progress,
            ) as bar,
        ):
            out.write(header_line(position, hash_))
            async for rows in stored_events(conn, 0, position):
                out.write(b"".join(event_line(stored_body(row), bytes(row["hash"])) for row in rows))
                bar.update(len(rows))
            out.flush()
            os.fsync(out.fileno())
    partial.replace(path)
    return position, hash_
