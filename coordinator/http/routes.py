"""HTTP handlers of the coordinator API (DESIGN §6)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import prometheus_client
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from coordinator.events.canonical import NotCanonical, ensure_canonical
from coordinator.events.get_query import BILLING_EXTENSION_PATH
from coordinator.http.errors import ApiError
from coordinator.http.json import json_response, read_body
from coordinator.http.middleware import TOKENS, guarded, principal_of
from coordinator.ledger import commands as c
from coordinator.ledger import queries
from coordinator.ledger.chain_watch import CHAIN_WATCH
from coordinator.ledger.numbering import SERIES_NAMES
from coordinator.ledger.writer import LedgerWriter
from coordinator.peers.liveness import record_heartbeat
from coordinator.peers.tokens import new_token, token_sha256
from coordinator.webservice import feed

WRITER = web.AppKey("writer", LedgerWriter)
POOL = web.AppKey("pool", object)
TIMEZONE = web.AppKey("timezone", str)

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
DocId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Idempotent(_Body):
    event_id: uuid.UUID | None = Field(
        default=None, description="Chosen by the client; a retry with it gets the same answer"
    )


class ReserveBody(_Idempotent):
    doctype: Literal["invoice", "creditnote"]
    doc_id: DocId
    date: date


def _storable(value: Any, path: str) -> Any:
    try:
        ensure_canonical(value, path)
    except NotCanonical as exc:
        raise ValueError(str(exc)) from None
    return value


def _snapshot_checked(value: dict[str, Any]) -> dict[str, Any]:
    for part in ("ClientData", "DocData"):
        if not isinstance(value.get(part), dict):
            raise ValueError(f"must hold the objects ClientData and DocData ({part} missing)")
    return _storable(value, "document")


# A document snapshot {"ClientData": {…}, "DocData": {…}} that the ledger can hash stably.
Snapshot = Annotated[dict[str, Any], AfterValidator(_snapshot_checked)]


class DocumentBody(_Idempotent):
    document: Snapshot


class ImportedDocumentBody(_Body):
    doctype: Literal["invoice", "creditnote"]
    doc_id: DocId
    number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    document: Snapshot


class ImportBody(_Idempotent):
    documents: Annotated[list[ImportedDocumentBody], Field(min_length=1, max_length=500)]


class ReasonBody(_Idempotent):
    reason: Text


class SeriesBody(_Body):
    start: int | None = None
    increment: int | None = None
    format: str | None = None
    reset: Literal["never", "yearly"] | None = None
    assign_on: Literal["creation", "payment"] | None = None
    dedicated: bool | None = None
    next: int | None = Field(default=None, ge=0)
    period: str | None = None


class PeerBody(_Body):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=500)]


class HeartbeatBody(_Body):
    agent_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("settings")
    @classmethod
    def _settings_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _storable(value, "settings")


def _writer(request: web.Request) -> LedgerWriter:
    return request.app[WRITER]


def _pool(request: web.Request) -> Any:
    return request.app[POOL]


def _uuid_param(request: web.Request, name: str, what: str) -> str:
    raw = request.match_info[name]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ApiError(404, f"{what}_not_found", f"no {what} {raw!r}") from None


def _event_id(body: _Idempotent) -> str | None:
    return str(body.event_id) if body.event_id else None


def _query_choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise ApiError(400, "invalid_query", f"{name}={value!r}: accepted {', '.join(allowed)}")
    return value


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_query", f"{name}={value} must be between {low} and {high}")
    return value


# -- system ------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as conn:
        ledger = await queries.ledger_head(conn)
    watch = request.app.get(CHAIN_WATCH)
    chain = watch.health() if watch is not None else None  # background chain check (app.py)
    return json_response({"status": "ok", "ledger": ledger, "chain": chain})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=prometheus_client.generate_latest(),
                        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


# -- series ------------------------------------------------------------------------------

async def list_series(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as conn:
        return json_response({"series": await queries.series_overview(conn)})


async def set_series(request: web.Request) -> web.Response:
    body = await read_body(request, SeriesBody)
    name = request.match_info["name"]
    if name not in SERIES_NAMES:
        raise ApiError(404, "series_not_found",
                       f"no series {name!r}; the series are {', '.join(SERIES_NAMES)}")
    changes = body.model_dump(exclude_none=True, exclude={"next", "period"})
    if not changes and body.next is None:
        raise ApiError(400, "invalid_body", "nothing to change: send at least one setting")
    today = datetime.now(ZoneInfo(request.app[TIMEZONE])).date()
    result = await _writer(request).execute(
        c.ConfigureSeries(series=name, changes=changes, next=body.next, period=body.period,
                          today=today)
    )
    return json_response(result)


# -- reservations ------------------------------------------------------------------------

async def create_reservation(request: web.Request) -> web.Response:
    body = await read_body(request, ReserveBody)
    peer = principal_of(request)
    result = await _writer(request).execute(c.Reserve(
        peer_id=peer.peer_id or "", doctype=body.doctype, doc_id=body.doc_id, date=body.date,
        event_id=_event_id(body),
    ))
    created = result.pop("created", False)
    return json_response(result, status=201 if created else 200)


async def confirm_reservation(request: web.Request) -> web.Response:
    reservation_id = _uuid_param(request, "id", "reservation")
    body = await read_body(request, DocumentBody)
    result = await _writer(request).execute(c.Confirm(
        reservation_id=reservation_id, peer_id=principal_of(request).peer_id or "",
        document=body.document, event_id=_event_id(body),
    ))
    return json_response(result)


async def release_reservation(request: web.Request) -> web.Response:
    reservation_id = _uuid_param(request, "id", "reservation")
    body = await read_body(request, ReasonBody)
    who = principal_of(request)
    result = await _writer(request).execute(c.Release(
        reservation_id=reservation_id, peer_id=who.peer_id if who.role == "peer" else None,
        reason=body.reason, event_id=_event_id(body),
    ))
    return json_response(result)


async def list_reservations(request: web.Request) -> web.Response:
    state = _query_choice(request, "state", ("reserved", "issued", "released", "void"))
    limit = _query_int(request, "limit", 100, 1, 1000)
    after = request.query.get("after") or None
    if after is not None:
        try:
            after = str(uuid.UUID(after))
        except ValueError:
            raise ApiError(400, "invalid_query", f"after={after!r} is not a reservation id") from None
    async with _pool(request).acquire() as conn:
        rows = await queries.reservations(conn, state, limit, after)
    return json_response({"reservations": rows})


async def void_number(request: web.Request) -> web.Response:
    series, period = request.match_info["series"], request.match_info["period"]
    if series not in SERIES_NAMES:
        raise ApiError(404, "series_not_found",
                       f"no series {series!r}; the series are {', '.join(SERIES_NAMES)}")
    raw = request.match_info["number"]
    if not raw.isdigit():
        raise ApiError(400, "invalid_number", f"number {raw!r} is not a whole number")
    body = await read_body(request, ReasonBody)
    result = await _writer(request).execute(c.Void(
        series=series, period=period, number=int(raw), reason=body.reason,
        event_id=_event_id(body),
    ))
    return json_response(result)


# -- documents ----------------------------------------------------------------------------

async def update_document(request: web.Request) -> web.Response:
    doctype = request.match_info["doctype"]
    if doctype not in SERIES_NAMES:
        raise ApiError(404, "doctype_not_found",
                       f"no document type {doctype!r}; accepted: {', '.join(SERIES_NAMES)}")
    body = await read_body(request, DocumentBody)
    result = await _writer(request).execute(c.UpdateDocument(
        peer_id=principal_of(request).peer_id or "", doctype=doctype,
        doc_id=request.match_info["doc_id"], document=body.document, event_id=_event_id(body),
    ))
    return json_response(result)


async def import_documents(request: web.Request) -> web.Response:
    body = await read_body(request, ImportBody)
    seen: set[tuple[str, str]] = set()
    for d in body.documents:
        if (d.doctype, d.doc_id) in seen:
            raise ApiError(400, "invalid_body", f"{d.doctype} {d.doc_id} appears twice")
        seen.add((d.doctype, d.doc_id))
    result = await _writer(request).execute(c.ImportDocuments(
        peer_id=principal_of(request).peer_id or "",
        documents=tuple(c.ImportedDocument(doctype=d.doctype, doc_id=d.doc_id,
                                           formatted=d.number, document=d.document)
                        for d in body.documents),
        event_id=_event_id(body),
    ))
    return json_response(result)


# -- peers -------------------------------------------------------------------------------

async def add_peer(request: web.Request) -> web.Response:
    body = await read_body(request, PeerBody)
    token = new_token()
    result = await _writer(request).execute(
        c.RegisterPeer(name=body.name, url=body.url, token_sha256=token_sha256(token))
    )
    return json_response({**result, "token": token}, status=201)


async def list_peers(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as conn:
        return json_response({"peers": await queries.peers(conn)})


async def rotate_peer_token(request: web.Request) -> web.Response:
    peer_id = _uuid_param(request, "id", "peer")
    token = new_token()
    result = await _writer(request).execute(
        c.RotatePeerToken(peer_id=peer_id, token_sha256=token_sha256(token))
    )
    request.app[TOKENS].forget()
    return json_response({**result, "token": token})


async def retire_peer(request: web.Request) -> web.Response:
    peer_id = _uuid_param(request, "id", "peer")
    result = await _writer(request).execute(c.RetirePeer(peer_id=peer_id))
    request.app[TOKENS].forget()
    return json_response(result)


async def heartbeat(request: web.Request) -> web.Response:
    body = await read_body(request, HeartbeatBody)
    peer_id = principal_of(request).peer_id or ""
    async with _pool(request).acquire() as conn:
        await record_heartbeat(conn, peer_id)
    result = await _writer(request).execute(c.ReportPeerConfig(
        peer_id=peer_id, agent_version=body.agent_version, settings=body.settings,
    ))
    return json_response(result)


# -- warnings and events -----------------------------------------------------------------

async def list_warnings(request: web.Request) -> web.Response:
    state = _query_choice(request, "state", ("open", "resolved"))
    async with _pool(request).acquire() as conn:
        return json_response({"warnings": await queries.warnings(conn, state)})


async def resolve_warning(request: web.Request) -> web.Response:
    warning_id = _uuid_param(request, "id", "warning")
    result = await _writer(request).execute(c.ResolveWarning(warning_id=warning_id, by="operator"))
    return json_response(result)


async def list_events(request: web.Request) -> web.Response:
    after = _query_int(request, "after", 0, 0, 2**62)
    limit = _query_int(request, "limit", 100, 1, 1000)
    async with _pool(request).acquire() as conn:
        return json_response({"events": await queries.events(conn, after, limit)})


# -- the WebService Get feed (its own token check: the contract sends the token in the body) --

async def webservice(request: web.Request) -> web.StreamResponse:
    return await feed.serve(request, _pool(request), request.app[TIMEZONE])


async def webservice_alias(request: web.Request) -> web.StreamResponse:
    return await feed.serve(request, _pool(request), request.app[TIMEZONE], alias=True)


OPERATOR = ("operator",)
READ = ("operator", "reader")
ANYONE = ("operator", "reader", "peer")
PEER = ("peer",)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Any
    roles: tuple[str, ...] | None  # None: no authentication
    summary: str
    body: type[BaseModel] | None = None
    query: tuple[str, ...] = ()


ROUTES: list[Route] = [
    Route("GET", "/healthz", healthz, None, "Liveness and the ledger head"),
    Route("GET", "/metrics", metrics, None, "Prometheus metrics"),
    Route("GET", "/v1/series", list_series, ANYONE, "Series settings and each period's next number"),
    Route("PUT", "/v1/series/{name}", set_series, OPERATOR, "Change a series' settings", SeriesBody),
    Route("POST", "/v1/reservations", create_reservation, PEER,
          "Reserve a number for a document (201; 200 when repeated)", ReserveBody),
    Route("GET", "/v1/reservations", list_reservations, OPERATOR, "List reservations",
          query=("state", "limit", "after")),
    Route("POST", "/v1/reservations/{id}/confirm", confirm_reservation, PEER,
          "Confirm a reservation with the issued document", DocumentBody),
    Route("POST", "/v1/reservations/{id}/release", release_reservation, ("operator", "peer"),
          "Return an unconfirmed number to the pool", ReasonBody),
    Route("POST", "/v1/numbers/{series}/{period}/{number}/void", void_number, OPERATOR,
          "Void a handed-out number; it stays used", ReasonBody),
    Route("PUT", "/v1/documents/{doctype}/{doc_id}", update_document, PEER,
          "Report the current snapshot of an issued document", DocumentBody),
    Route("POST", "/v1/documents/import", import_documents, PEER,
          "Import documents numbered before Concord; a known number raises a warning instead",
          ImportBody),
    Route("POST", "/v1/peers", add_peer, OPERATOR, "Register a store; its token is shown once",
          PeerBody),
    Route("GET", "/v1/peers", list_peers, READ, "List stores"),
    Route("POST", "/v1/peers/{id}/rotate-token", rotate_peer_token, OPERATOR,
          "Give a store a new token; the old one stops working"),
    Route("DELETE", "/v1/peers/{id}", retire_peer, OPERATOR, "Retire a store"),
    Route("POST", "/v1/heartbeat", heartbeat, PEER,
          "Report the agent's version and WHMCS settings; returns the series settings",
          HeartbeatBody),
    Route("GET", "/v1/warnings", list_warnings, READ, "List warnings", query=("state",)),
    Route("POST", "/v1/warnings/{id}/resolve", resolve_warning, OPERATOR, "Resolve a warning"),
    Route("GET", "/v1/events", list_events, READ, "The ledger in order",
          query=("after", "limit")),
    Route("POST", "/v1/webservice", webservice, None,
          "The WebService Get feed of every store (reader or operator token, in the `token` "
          "field or as Bearer; docs/api.md)"),
    Route("POST", BILLING_EXTENSION_PATH, webservice_alias, None,
          "The Get feed under the Billing Extension path (ws=einvoice)"),
]


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        handler = guarded(route.handler, route.roles) if route.roles else route.handler
        app.router.add_route(route.method, route.path, handler)
