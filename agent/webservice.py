"""The agent's WebService Get feed: this store's invoices and credit notes, streamed.

Every document WHMCS holds, numbered or not (Drafts and unnumbered invoices have an empty
``Num``); the coordinator's feed serves only the issued ones the ledger knows.

POST ``/webservice``, or the Billing Extension path with ``ws=einvoice`` so that existing
scripts only change their URL. The token is CONCORD_AGENT_WEBSERVICE_TOKEN. The request,
the answer and VIES are getfeed's; this module says who may read and where the documents
are.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncmy.errors
import structlog
from aiohttp import web

from agent.whmcs.feed_queries import MysqlVerdictCache, store_documents
from agent.whmcs.queries import DueRules
from getfeed.answer import FeedItem
from getfeed.europe import home_member_state
from getfeed.http import serve
from getfeed.query import BILLING_EXTENSION_PATH, GetQuery, GetQueryError
from getfeed.vies import ViesSettings

log = structlog.get_logger("concord.agent.webservice")

WEBSERVICE_PATH = "/webservice"


@dataclass(frozen=True)
class AgentFeed:
    """The feed's source in the agent (getfeed.http.FeedSource): the store's WHMCS database."""

    pool: Any
    rules: DueRules  # only its credit-note rule matters here
    has_invoicedata: bool
    token: str
    timezone: str
    country: str
    vies: ViesSettings
    # One answer at a time: each holds three pooled connections, and answers waiting for
    # each other's connections could otherwise fill the pool and wait forever.
    answering: asyncio.Lock = field(default_factory=asyncio.Lock, compare=False)

    @property
    def verdicts(self) -> MysqlVerdictCache:
        return MysqlVerdictCache(self.pool)

    async def authorise(self, request: web.Request, fields: Mapping[str, Any]) -> None:
        if not self.token:
            raise GetQueryError(
                "the WebService is switched off: set CONCORD_AGENT_WEBSERVICE_TOKEN", status=403
            )
        given = fields.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise GetQueryError("wrong or missing token: send token=<the WebService token>", status=401)

    async def pages(self, query: GetQuery) -> AsyncGenerator[list[FeedItem], None]:
        home = home_member_state(self.country)
        async with self.answering:
            documents = store_documents(self.pool, query, self.rules, self.has_invoicedata)
            try:
                async for snaps in documents:
                    yield [(str(s.invoice_id), s.document, home) for s in snaps]
            except (OSError, asyncmy.errors.OperationalError, asyncmy.errors.InterfaceError) as exc:
                log.warning("whmcs_unavailable", error=repr(exc))
                raise GetQueryError(
                    "the WHMCS database is unavailable: retry the same request", status=503
                ) from exc
            finally:
                await documents.aclose()


FEED = web.AppKey("feed", AgentFeed)


async def serve_get(request: web.Request) -> web.StreamResponse:
    return await serve(request, request.app[FEED])


def add_webservice_routes(app: web.Application, feed: AgentFeed) -> None:
    app[FEED] = feed
    app.router.add_post(WEBSERVICE_PATH, serve_get)
    app.router.add_post(BILLING_EXTENSION_PATH, serve_get)
