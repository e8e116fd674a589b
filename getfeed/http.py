"""The Get feed over HTTP (aiohttp): reading a request, asking VIES, streaming the answer.
The same for the agent and the coordinator, which differ only in a ``FeedSource``: who may
read, where the documents and the VIES verdicts are kept."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from getfeed.answer import FeedItem, answer_chunks, prepend
from getfeed.lookup import ViesLookup
from getfeed.query import (
    BILLING_EXTENSION_PATH,
    GetQuery,
    GetQueryError,
    check_alias,
    check_fields,
    error_body,
    json_fields,
    parse_get,
)
from getfeed.vies import Ask, VatKey, VerdictCache, ViesSettings, parse_reply, request_body

log = structlog.get_logger("concord.vies")


class FeedSource(Protocol):
    """One side of the feed: the agent (its store's WHMCS database) or the coordinator (every
    store's issued documents in the ledger)."""

    @property
    def timezone(self) -> str:
        """The zone whose date is "today" for the date keywords."""

    @property
    def vies(self) -> ViesSettings: ...

    @property
    def verdicts(self) -> VerdictCache: ...

    async def authorise(self, request: web.Request, fields: Mapping[str, Any]) -> None:
        """GetQueryError (401, 403) unless the request may read the feed."""

    def pages(self, query: GetQuery) -> AsyncGenerator[list[FeedItem], None]:
        """The documents ``query`` selects, a page at a time; GetQueryError from the first
        page for a query this source refuses or cannot answer now."""


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


def _refusal(error: GetQueryError) -> web.Response:
    return web.Response(body=error_body(error.message), status=error.status, content_type="application/json")


async def serve(request: web.Request, source: FeedSource) -> web.StreamResponse:
    """Answers a Get request from ``source`` (on the Billing Extension path only with
    ws=einvoice)."""
    today = datetime.now(ZoneInfo(source.timezone)).date()
    try:
        fields = await request_fields(request)
        if request.path == BILLING_EXTENSION_PATH:
            check_alias(fields, request.query.get("ws"))
        await source.authorise(request, fields)
        query = parse_get(fields, today)
    except GetQueryError as exc:
        return _refusal(exc)
    async with aclosing(source.pages(query)) as pages:
        try:
            # Read the first page before the status line: a failure there is still an answer.
            first: list[FeedItem] = await anext(pages, [])
        except GetQueryError as exc:
            return _refusal(exc)
        return await _stream_answer(request, first, pages, source, today)


async def _stream_answer(
    request: web.Request,
    first: list[FeedItem],
    rest: AsyncIterator[list[FeedItem]],
    source: FeedSource,
    today: date,
) -> web.StreamResponse:
    """Streams the JSON answer page by page: memory stays flat however many documents match."""
    vies = source.vies
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=vies.timeout_seconds)) as session:
        lookup = ViesLookup(
            vies_asker(session, vies.url) if vies.url else None,
            source.verdicts,
            max_age=timedelta(days=vies.cache_days),
            budget=vies.lookups_per_answer,
            now=lambda: datetime.now(UTC),
        )
        # A request id middleware (the coordinator's) binds it in the logging context and
        # sets its header after the handler: too late for a stream, so it is set here.
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        headers = {"X-Request-Id": request_id} if request_id is not None else {}
        response = web.StreamResponse(headers={"Content-Type": "application/json", **headers})
        await response.prepare(request)
        async for chunk in answer_chunks(prepend(first, rest), lookup, today):
            await response.write(chunk)
        await response.write_eof()
    return response
