"""Reading a Get request, asking VIES over HTTP and streaming the answer: the same for the
agent and the coordinator, which differ only in where the documents and the VIES verdicts
are kept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from coordinator.events.feed import FeedItem, answer_chunks, prepend
from coordinator.events.get_query import GetQueryError, check_fields, json_fields
from coordinator.events.vies import (
    Ask,
    VatKey,
    VerdictCache,
    ViesLookup,
    ViesSettings,
    parse_reply,
    request_body,
)

log = structlog.get_logger("concord.vies")


async def request_fields(request: web.Request) -> dict[str, Any]:
    """The request's fields, checked by ``check_fields``; GetQueryError for a body that
    cannot be read."""
    if request.content_type == "application/json":
        fields = json_fields(await request.read())
    else:
        # Form fields, url-encoded or multipart (PHP's curl given an array sends multipart).
        # aiohttp raises these for a malformed body: multipart without its boundary or with
        # broken part headers, an unknown charset or transfer encoding.
        try:
            fields = dict(await request.post())
        except (ValueError, LookupError, RuntimeError, HttpProcessingError) as exc:
            raise GetQueryError(
                f"the form body cannot be read ({exc}): send url-encoded or "
                "multipart form fields, or a JSON object"
            ) from None
    check_fields(fields)
    return fields


def vies_asker(session: aiohttp.ClientSession, url: str) -> Ask:
    """Asks VIES about one VAT number: True/False, or None when VIES did not answer."""

    async def ask(key: VatKey) -> bool | None:
        try:
            async with session.post(
                url, data=request_body(key), headers={"Content-Type": "application/json"}
            ) as reply:
                return parse_reply(reply.status, await reply.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("vies_unavailable", error=repr(exc))
            return None

    return ask


async def stream_answer(
    request: web.Request,
    first: list[FeedItem],
    rest: AsyncIterator[list[FeedItem]],
    cache: VerdictCache,
    vies: ViesSettings,
    today: date,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Streams the JSON answer page by page: memory stays flat however many documents match.
    ``first`` was read before the status line, so that a failure there is still an error."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=vies.timeout_seconds)) as session:
        lookup = ViesLookup(
            vies_asker(session, vies.url) if vies.url else None,
            cache,
            max_age=timedelta(days=vies.cache_days),
            budget=vies.lookups_per_answer,
            now=lambda: datetime.now(UTC),
        )
        response = web.StreamResponse(headers={"Content-Type": "application/json", **headers})
        await response.prepare(request)
        async with aclosing(rest):
            async for chunk in answer_chunks(prepend(first, rest), lookup, today):
                await response.write(chunk)
        await response.write_eof()
    return response
