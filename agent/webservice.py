"""The agent's WebService Get feed: this store's invoices and credit notes, streamed.

Every document WHMCS holds, numbered or not (Drafts and unnumbered invoices have an empty
``Num``); the coordinator's feed serves only the issued ones the ledger knows.

POST ``/webservice``, or the Billing Extension path with ``ws=einvoice`` so that existing
scripts only change their URL. The token is CONCORD_AGENT_WEBSERVICE_TOKEN.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncmy.errors
import structlog
from aiohttp import web

from agent.whmcs.feed_queries import MysqlVerdictCache, store_documents
from agent.whmcs.queries import DueRules
from coordinator.events.europe import home_member_state
from coordinator.events.feed import FeedItem
from coordinator.events.get_query import (
    BILLING_EXTENSION_PATH,
    GetQuery,
    GetQueryError,
    check_alias,
    error_body,
    parse_get,
)
from coordinator.events.vies import ViesSettings
from getfeed.http import request_fields, stream_answer

log = structlog.get_logger("concord.agent.webservice")

WEBSERVICE_PATH = "/webservice"


@dataclass(frozen=True)
class AgentFeed:
    pool: Any
    rules: DueRules  # only its credit-note rule matters here
    has_invoicedata: bool
    token: str
    timezone: str
    country: str
    vies: ViesSettings


FEED = web.AppKey("feed", AgentFeed)
# One answer at a time: each holds three pooled connections, and answers waiting for each
# other's connections could otherwise fill the pool and wait forever.
ANSWERING = web.AppKey("answering", asyncio.Lock)


def _failure(status: int, message: str) -> web.Response:
    return web.Response(body=error_body(message), status=status, content_type="application/json")


def _checked_request(feed: AgentFeed, request: web.Request, fields: dict[str, Any], today: date) -> GetQuery:
    if request.path == BILLING_EXTENSION_PATH:
        check_alias(fields, request.query.get("ws"))
    if not feed.token:
        raise GetQueryError("the WebService is switched off: set CONCORD_AGENT_WEBSERVICE_TOKEN", status=403)
    given = fields.get("token")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), feed.token.encode()):
        raise GetQueryError("wrong or missing token: send token=<the WebService token>", status=401)
    return parse_get(fields, today)


async def _pages(feed: AgentFeed, query: GetQuery) -> AsyncIterator[list[FeedItem]]:
    home = home_member_state(feed.country)
    async for snaps in store_documents(feed.pool, query, feed.rules, feed.has_invoicedata):
        yield [(str(s.invoice_id), s.document, home) for s in snaps]


async def serve_get(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    today = datetime.now(ZoneInfo(feed.timezone)).date()
    try:
        fields = await request_fields(request)
        query = _checked_request(feed, request, fields, today)
    except GetQueryError as exc:
        return _failure(exc.status, exc.message)
    async with request.app[ANSWERING]:
        return await _answer(request, feed, query, today)


async def _answer(request: web.Request, feed: AgentFeed, query: GetQuery, today: date) -> web.StreamResponse:
    pages = _pages(feed, query)
    try:
        # Read the first chunk before the status line: a failure here is still an error reply.
        first = await anext(pages, [])
    except (OSError, asyncmy.errors.OperationalError, asyncmy.errors.InterfaceError) as exc:
        await pages.aclose()
        log.warning("whmcs_unavailable", error=repr(exc))
        return _failure(503, "the WHMCS database is unavailable: retry the same request")
    return await stream_answer(request, first, pages, MysqlVerdictCache(feed.pool), feed.vies, today, {})


def add_webservice_routes(app: web.Application, feed: AgentFeed) -> None:
    app[FEED] = feed
    app[ANSWERING] = asyncio.Lock()
    app.router.add_post(WEBSERVICE_PATH, serve_get)
    app.router.add_post(BILLING_EXTENSION_PATH, serve_get)
