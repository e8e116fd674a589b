"""The console's pages: reads only, through coordinator.ledger.queries."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from coordinator.console import overview, session
from coordinator.console.view import page
from coordinator.events.canonical import NotCanonical, check_text
from coordinator.http.keys import CHAIN_WATCH, POOL, TIMEZONE
from coordinator.http.routes import DOC_ID_MAX
from coordinator.ledger import queries
from coordinator.webservice.vies import PgVerdictCache
from getfeed.answer import complete, feed_item
from getfeed.lookup import ViesLookup

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
POSITION = re.compile(r"[0-9]{1,18}")
REMEMBERED = web.AppKey("console_remembered", overview.Remembered)
LEDGER_PAGE = 50
WARNINGS_SHOWN = 200
SEARCHES = {"number": "Formatted number", "document": "WHMCS document id", "client": "WHMCS client id"}


def _pool(request: web.Request) -> Any:
    return request.config_dict[POOL]


def _chain(request: web.Request) -> dict[str, int | None] | None:
    watch = request.config_dict.get(CHAIN_WATCH)
    return watch.health() if watch is not None else None


def query_text(request: web.Request, name: str, max_length: int = DOC_ID_MAX) -> str | None:
    """A text query parameter, or None when absent or empty; 400 when it could not be stored."""
    value = request.query.get(name, "").strip()
    if not value:
        return None
    try:
        check_text(value, name)
    except NotCanonical as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if len(value) > max_length:
        raise web.HTTPBadRequest(text=f"{name} is longer than {max_length} characters")
    return value


def query_store(request: web.Request) -> str | None:
    store = request.query.get("store") or None
    if store is not None and not UUID.fullmatch(store):
        raise web.HTTPBadRequest(text="store must be a store's id")
    return store


def sign_in_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    secret = session.sign_in_secret(request)
    response = page(request, "sign_in.html", {"error": error, "csrf": session.csrf_of(secret)}, status)
    session.keep_sign_in_secret(request, response, secret)
    return response


async def sign_in_form(request: web.Request) -> web.Response:
    return sign_in_page(request)


async def _overview(request: web.Request) -> dict[str, Any]:
    async with _pool(request).acquire() as conn:
        seen = await overview.read(conn, request.config_dict[TIMEZONE], request.app[REMEMBERED])
    return {"o": seen, "chain": _chain(request)}


async def overview_page(request: web.Request) -> web.Response:
    return page(request, "overview.html", await _overview(request))


async def overview_live(request: web.Request) -> web.Response:
    return page(request, "overview_live.html", await _overview(request))


async def series_page(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as conn:
        return page(request, "series.html", {"series": await queries.series_overview(conn)})


async def stores_page(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as conn:
        return page(request, "stores.html", {"stores": await queries.peers(conn)})


async def store_of(request: web.Request) -> dict[str, Any]:
    """The store named by the path's id; 404 when there is none."""
    async with _pool(request).acquire() as conn:
        stores = await queries.peers(conn)
    found = [s for s in stores if s["peer_id"] == request.match_info["id"]]
    if not found:
        raise web.HTTPNotFound()
    return found[0]


async def store_confirm(request: web.Request) -> web.Response:
    return page(
        request,
        "store_confirm.html",
        {"store": await store_of(request), "action": request.match_info["action"]},
    )


async def _warnings(request: web.Request) -> dict[str, Any]:
    state = request.query.get("state", "open")
    if state not in ("open", "resolved"):
        raise web.HTTPBadRequest(text="state is open or resolved")
    kind, store = query_text(request, "kind"), query_store(request)
    async with _pool(request).acquire() as conn:
        rows = await queries.recent_warnings(conn, state, kind, store, WARNINGS_SHOWN)
        stores = await queries.peers(conn)
    return {
        "warnings": rows,
        "state": state,
        "kind": kind or "",
        "store": store or "",
        "stores": stores,
        "query": request.query_string,
        "limit": WARNINGS_SHOWN,
    }


async def warnings_page(request: web.Request) -> web.Response:
    return page(request, "warnings.html", await _warnings(request))


async def warnings_live(request: web.Request) -> web.Response:
    return page(request, "warnings_live.html", await _warnings(request))


async def numbers_page(request: web.Request) -> web.Response:
    by = request.query.get("by", "number")
    if by not in SEARCHES:
        raise web.HTTPBadRequest(text=f"by is one of {', '.join(SEARCHES)}")
    q, store = query_text(request, "q"), query_store(request)
    reservations: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    async with _pool(request).acquire() as conn:
        stores = await queries.peers(conn)
        if q and by == "number":
            reservations = await queries.reservations_numbered(conn, q)
            documents = [
                d for d in await queries.documents_numbered(conn, q) if d["imported"]
            ]  # the others show as their reservation
        elif q and by == "document":
            documents = await queries.documents_by_id(conn, q, store)
        elif q:
            documents = await queries.documents_of_client(conn, q, store)
    return page(
        request,
        "numbers.html",
        {
            "searches": SEARCHES,
            "by": by,
            "q": q or "",
            "store": store or "",
            "stores": stores,
            "reservations": reservations,
            "documents": documents,
            "searched": q is not None,
        },
    )


async def history_page(request: web.Request) -> web.Response:
    number = query_text(request, "number")
    if number is None:
        raise web.HTTPBadRequest(text="which number? ?number=INV-2026-00001")
    async with _pool(request).acquire() as conn:
        reservations = await queries.reservations_numbered(conn, number)
        documents = await queries.documents_numbered(conn, number)
        streams = [f"reservation-{r['reservation_id']}" for r in reservations] + [
            f"document-{d['peer_id']}-{d['doctype']}-{d['doc_id']}" for d in documents
        ]
        events = await queries.stream_events(conn, streams) if streams else []
    items = [feed_item(d["store"], d["doc_id"], d["snapshot"], d["country"]) for d in documents]
    # VIES is never asked here, so the page never waits on it: the verdict the feed cached
    # last stands, whatever its age.
    recorded = ViesLookup(
        None, PgVerdictCache(_pool(request)), max_age=timedelta.max, budget=0, now=lambda: datetime.now(UTC)
    )
    await complete(items, recorded, datetime.now(ZoneInfo(request.config_dict[TIMEZONE])).date())
    for d, (_, feed_document, _) in zip(documents, items, strict=True):
        d["feed_json"] = orjson.dumps(feed_document, option=orjson.OPT_INDENT_2).decode()
    return page(
        request,
        "history.html",
        {"number": number, "reservations": reservations, "documents": documents, "events": events},
    )


async def ledger_page(request: web.Request) -> web.Response:
    raw = request.query.get("before")
    if raw is not None and not POSITION.fullmatch(raw):
        raise web.HTTPBadRequest(text="before is a position")
    async with _pool(request).acquire() as conn:
        head = await queries.ledger_head(conn)
        before = int(raw) if raw is not None else head["position"] + 1
        events = await queries.newest_events(conn, before, LEDGER_PAGE)
    older = events[-1]["position"] if len(events) == LEDGER_PAGE and events[-1]["position"] > 1 else None
    return page(
        request,
        "ledger.html",
        {"head": head, "events": events, "older": older, "chain": _chain(request), "newest": raw is None},
    )
