"""The coordinator's side of the Get feed (getfeed.http.FeedSource): every store's issued
documents, read by reader and operator tokens.

Documents come from the documents projection (the snapshot NumberIssued, DocumentUpdated
or DocumentImported recorded last) in keyset pages, in date, ID, store order; each answer
key is ``STORE/ID`` and each document carries ``Store``. A store's own country, for MOSS,
is the one its agent reports with every heartbeat (CONCORD_AGENT_COUNTRY).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
from aiohttp import web

from coordinator.peers.tokens import TokenCache
from coordinator.webservice.vies import PgVerdictCache
from getfeed.answer import FeedItem, feed_item
from getfeed.query import GetQuery, GetQueryError
from getfeed.vies import ViesSettings

FEED_ROLES = ("operator", "reader")
PAGE_SIZE = 1000

_DAY = "coalesce(d.snapshot->'DocData'->>'Date', '')"
# The first page starts below every key: IDs have at least one character.
_BEFORE_ALL = ("", -1, "", uuid.UUID(int=0), "")
_PAGE_SQL = f"""
SELECT p.name, d.doc_id, d.snapshot, coalesce(p.reported->>'country', '') AS country,
       {_DAY} AS day, length(d.doc_id) AS id_length, d.peer_id, d.doctype
FROM documents d JOIN peers p ON p.id = d.peer_id
WHERE ($1::text IS NULL OR p.name = $1)
  AND d.doctype = ANY($2::text[])
  AND ($3::text IS NULL OR {_DAY} >= $3)
  AND ($4::text IS NULL OR {_DAY} <= $4)
  AND ($5::text IS NULL OR lower(d.formatted) = lower($5))
  AND ($6::text IS NULL OR d.doc_id = $6)
  AND ({_DAY}, length(d.doc_id), d.doc_id, d.peer_id, d.doctype) > ($7, $8, $9, $10, $11)
ORDER BY {_DAY}, length(d.doc_id), d.doc_id, d.peer_id, d.doctype
LIMIT $12
"""


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


async def document_pages(pool: asyncpg.Pool, query: GetQuery) -> AsyncGenerator[list[FeedItem], None]:
    """The documents ``query`` selects, a keyset page at a time; the next page is read while
    the caller handles the current one."""
    doc_id = str(query.invoiceid) if query.invoiceid is not None else None

    async def page(after: tuple[Any, ...]) -> list[asyncpg.Record]:
        return await pool.fetch(
            _PAGE_SQL,
            query.store,
            sorted(query.doctypes),
            _iso(query.start),
            _iso(query.end),
            query.invoicenum,
            doc_id,
            *after,
            PAGE_SIZE,
        )

    reading: asyncio.Task[list[asyncpg.Record]] | None = asyncio.create_task(page(_BEFORE_ALL))
    try:
        while reading is not None:
            rows = await reading
            reading = None
            if len(rows) == PAGE_SIZE:
                last = rows[-1]
                reading = asyncio.create_task(
                    page((last["day"], last["id_length"], last["doc_id"], last["peer_id"], last["doctype"]))
                )
            yield [feed_item(r["name"], r["doc_id"], r["snapshot"], r["country"]) for r in rows]
    finally:
        if reading is not None:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)


async def _known_store(pool: asyncpg.Pool, name: str) -> None:
    names = [r["name"] for r in await pool.fetch("SELECT name FROM peers ORDER BY name")]
    if name not in names:
        raise GetQueryError(
            f"store {name!r} is not a registered store: use one of "
            f"{', '.join(names) or '(none registered yet)'}, or leave it empty "
            "for all stores"
        )


@dataclass(frozen=True)
class CoordinatorFeed:
    pool: asyncpg.Pool
    tokens: TokenCache
    timezone: str
    vies: ViesSettings

    @property
    def verdicts(self) -> PgVerdictCache:
        return PgVerdictCache(self.pool)

    async def authorise(self, request: web.Request, fields: Mapping[str, Any]) -> None:
        """The token of the ``token`` field, else of an ``Authorization: Bearer`` header."""
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        given = fields.get("token")
        token = (
            given.strip()
            if isinstance(given, str) and given.strip()
            else (bearer.strip() if scheme.lower() == "bearer" else "")
        )
        principal = await self.tokens.resolve(token) if token else None
        if principal is None:
            raise GetQueryError(
                "wrong or missing token: send token=<a reader or operator token> "
                "(or the header Authorization: Bearer <token>)",
                status=401,
            )
        if principal.role not in FEED_ROLES:
            raise GetQueryError(
                f"a {principal.role} token may not read the feed: use a reader or operator token",
                status=403,
            )

    async def pages(self, query: GetQuery) -> AsyncGenerator[list[FeedItem], None]:
        if query.store is not None:
            await _known_store(self.pool, query.store)
        async with contextlib.aclosing(document_pages(self.pool, query)) as pages:
            async for page in pages:
                yield page
