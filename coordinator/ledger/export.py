"""`concord export FILE.jsonl`: the whole ledger as a file anyone can verify offline.

Format (JSON lines, UTF-8):

- line 1, the header: ``{"format":"concord-ledger-export/1","hash":"<head hash>","position":N}``
  in canonical JSON;
- then one line per event, in position order: ``{"event":<canonical event>,"hash":"<hex>"}``
  where ``<canonical event>`` is byte for byte what was hashed
  (``hash = sha256(previous hash ‖ canonical event)``, the first previous hash being 32 zero
  bytes).

So a verifier recomputes each hash from the bytes of the line without re-serialising
anything, and every byte of the file is either hashed or checked literally: a one-byte
change anywhere is detected. The export reads one consistent snapshot through a
server-side cursor: memory stays flat however long the ledger is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from tqdm import tqdm

from coordinator.events.canonical import canonical_json
from coordinator.ledger import store
from coordinator.ledger.chain import EVENT_COLUMNS, stored_body

FORMAT = "concord-ledger-export/1"
LINE_PREFIX = b'{"event":'
HASH_KEY = b',"hash":"'
LINE_END = b'"}\n'
SUFFIX_LENGTH = len(HASH_KEY) + 64 + len(LINE_END)
FETCH = 2000


def header_line(position: int, hash_: bytes) -> bytes:
    return canonical_json({"format": FORMAT, "hash": hash_.hex(), "position": position}) + b"\n"


def event_line(body: bytes, hash_: bytes) -> bytes:
    return b"".join((LINE_PREFIX, body, HASH_KEY, hash_.hex().encode(), LINE_END))


async def cursor_chunks(conn: asyncpg.Connection, query: str, *args: object,
                        size: int = FETCH) -> AsyncIterator[list[asyncpg.Record]]:
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


def stored_events(conn: asyncpg.Connection, after: int, upto: int, *, table: str = "events",
                  size: int = FETCH) -> AsyncIterator[list[asyncpg.Record]]:
    """Events after ``after`` up to ``upto``, in position order, in chunks."""
    return cursor_chunks(conn, f"SELECT {EVENT_COLUMNS} FROM {table} WHERE position > $1"
                         " AND position <= $2 ORDER BY position", after, upto, size=size)


async def export_ledger(conn: asyncpg.Connection, path: Path, *, progress: bool | None = None
                        ) -> tuple[int, bytes]:
    """Write the ledger to ``path`` (atomically: a partial file is never left under that name)."""
    partial = path.with_name(path.name + ".part")
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        position, hash_ = await store.head(conn)
        with partial.open("wb") as out, tqdm(total=position, unit="ev", unit_scale=True,
                                             desc="export", disable=None if progress is None
                                             else not progress) as bar:
            out.write(header_line(position, hash_))
            async for rows in stored_events(conn, 0, position):
                out.write(b"".join(event_line(stored_body(row), bytes(row["hash"]))
                                   for row in rows))
                bar.update(len(rows))
            out.flush()
            os.fsync(out.fileno())
    partial.replace(path)
    return position, hash_
