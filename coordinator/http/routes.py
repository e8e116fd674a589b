"""HTTP handlers of the coordinator API (docs/design.md §6)."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import prometheus_client
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from coordinator.events.canonical import BIGINT, NotCanonical, check_text
from coordinator.http import answers
from coordinator.http.errors import ApiError, error_response
from coordinator.http.json import json_response, read_body
from coordinator.http.keys import CHAIN_WATCH, POOL, TIMEZONE, TOKENS, VIES, WRITER
from coordinator.http.middleware import (
    RETRY_AFTER_SECONDS,
    Handler,
    guarded,
    ledger_failure,
    principal_of,
)
from coordinator.ledger import commands as c
from coordinator.ledger import queries
from coordinator.ledger.numbering import MAX_INCREMENT, MAX_START, SERIES_NAMES
from coordinator.ledger.writer import LedgerWriter
from coordinator.peers.liveness import record_heartbeat
from coordinator.peers.tokens import new_token, token_sha256
from coordinator.webservice.feed import CoordinatorFeed
from getfeed.http import serve as serve_feed
from getfeed.query import BILLING_EXTENSION_PATH, ISO_DATE

HEALTH_SECONDS = 2.0  # a health check answers within this, whatever the database does

# Every body has passed read_body's check (no NUL or lone surrogate, integers within bigint,
# nesting bounded) before these models see it; they add types, lengths and ranges.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
DOC_ID_MAX = 64
DocId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=DOC_ID_MAX)]
PERIOD = re.compile(r"all|[0-9]{4}")
Period = Annotated[str, StringConstraints(pattern=f"^({PERIOD.pattern})$")]
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUMBER = re.compile(r"[0-9]{1,19}")


def _iso_date(value: Any) -> date:
    # Only the text YYYY-MM-DD in ASCII digits: no Unix timestamp, no other script's digits.
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD (e.g. 2026-03-01)")
    return date.fromisoformat(value)


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class _Body(BaseModel):
    # Strict: JSON types as declared, no "12" for 12, no 1 for true.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Idempotent(_Body):
    event_id: uuid.UUID | None = Field(
        default=None,
        strict=False,  # a UUID arrives as text
        description="Chosen by the client; a retry with it gets the same answer",
    )


class ReserveBody(_Idempotent):
    doctype: Literal["invoice", "creditnote"]
    doc_id: DocId
    date: IsoDate


def _snapshot_checked(value: dict[str, Any]) -> dict[str, Any]:
    for part in ("ClientData", "DocData"):
        if not isinstance(value.get(part), dict):
            raise ValueError(f"must hold the objects ClientData and DocData ({part} missing)")
    return value


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


BATCH_MAX = 500  # documents per batch request


class ReserveBatchBody(_Body):
    documents: Annotated[list[ReserveBody], Field(min_length=1, max_length=BATCH_MAX)]


class ConfirmationBody(DocumentBody):
    reservation_id: uuid.UUID = Field(strict=False)  # a UUID arrives as text


class ConfirmBatchBody(_Body):
    confirmations: Annotated[list[ConfirmationBody], Field(min_length=1, max_length=BATCH_MAX)]


class ReasonBody(_Idempotent):
    reason: Text


class SeriesBody(_Body):
    start: int | None = Field(default=None, ge=0, le=MAX_START)
    increment: int | None = Field(default=None, ge=1, le=MAX_INCREMENT)
    format: Annotated[str, StringConstraints(max_length=64)] | None = None
    reset: Literal["never", "yearly"] | None = None
    assign_on: Literal["creation", "payment"] | None = None
    dedicated: bool | None = None
    next: int | None = Field(default=None, ge=0, le=MAX_START)
    period: Period | None = None


class PeerBody(_Body):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=500)]


class HeartbeatBody(_Body):
    agent_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    settings: dict[str, Any] = Field(default_factory=dict)


def _writer(request: web.Request) -> LedgerWriter:
    return request.app[WRITER]


def _pool(request: web.Request) -> Any:
    return request.app[POOL]


def _shown(raw: str) -> str:
    """A client's value as an error message quotes it: bounded, whatever was sent."""
    return repr(raw if len(raw) <= 80 else raw[:80] + "…")


def _uuid_param(request: web.Request, name: str, what: str) -> str:
    raw = request.match_info[name]
    if not _UUID.fullmatch(raw):
        raise ApiError(404, f"{what}_not_found", f"no {what} {_shown(raw)}")
    return raw.lower()


def _series_param(request: web.Request, name: str) -> str:
    series = request.match_info[name]
    if series not in SERIES_NAMES:
        raise ApiError(
            404, "series_not_found", f"no series {_shown(series)}; the series are {', '.join(SERIES_NAMES)}"
        )
    return series


def _text_param(request: web.Request, name: str, max_length: int) -> str:
    raw = request.match_info[name]
    try:
        check_text(raw, name)
    except NotCanonical as exc:
        raise ApiError(400, "invalid_path", str(exc)) from None
    if len(raw) > max_length:
        raise ApiError(400, "invalid_path", f"{name} {_shown(raw)} is longer than {max_length} characters")
    return raw


def _event_id(body: _Idempotent) -> str | None:
    return str(body.event_id) if body.event_id else None


def _query_choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise ApiError(400, "invalid_query", f"{name}={_shown(value)}: accepted {', '.join(allowed)}")
    return value


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _NUMBER.fullmatch(raw):
        raise ApiError(
            400, "invalid_query", f"{name}={_shown(raw)} is not a whole number written in the digits 0-9"
        )
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, "invalid_query", f"{name}={value} must be between {low} and {high}")
    return value


# -- system ------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """200 while the ledger can be written; 503 with the reason while it cannot."""
    watch = request.app.get(CHAIN_WATCH)
    chain = watch.health() if watch is not None else None  # background chain check (app.py)
    problem = _writer(request).problem()
    ledger = None
    try:
        async with asyncio.timeout(HEALTH_SECONDS), _pool(request).acquire() as conn:
            ledger = await queries.ledger_head(conn)
    except Exception as exc:  # any failure to read is the answer, not an error
        problem = problem or f"the database does not answer ({type(exc).__name__})"
    if problem is not None:
        return json_response(
            {"status": "unavailable", "reason": problem, "ledger": ledger, "chain": chain},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return json_response({"status": "ok", "ledger": ledger, "chain": chain})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=prometheus_client.generate_latest(),
        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
    )


# -- series ------------------------------------------------------------------------------


async def list_series(request: web.Request) -> web.Response:
    async with _pool(request).acquire() as conn:
        return json_response({"series": await queries.series_overview(conn)})


async def set_series(request: web.Request) -> web.Response:
    body = await read_body(request, SeriesBody)
    name = _series_param(request, "name")
    changes = body.model_dump(exclude_none=True, exclude={"next", "period"})
    if not changes and body.next is None:
        raise ApiError(400, "invalid_body", "nothing to change: send at least one setting")
    today = datetime.now(ZoneInfo(request.app[TIMEZONE])).date()
    result = await _writer(request).execute(
        c.ConfigureSeries(series=name, changes=changes, next=body.next, period=body.period, today=today)
    )
    return json_response(result)


# -- reservations ------------------------------------------------------------------------


async def create_reservation(request: web.Request) -> web.Response:
    body = await read_body(request, ReserveBody)
    peer = principal_of(request)
    result = await _writer(request).execute(
        c.Reserve(
            peer_id=peer.peer_id or "",
            doctype=body.doctype,
            doc_id=body.doc_id,
            date=body.date,
            event_id=_event_id(body),
        )
    )
    created = result.pop("created", False)
    return json_response(result, status=201 if created else 200)


async def confirm_reservation(request: web.Request) -> web.Response:
    reservation_id = _uuid_param(request, "id", "reservation")
    body = await read_body(request, DocumentBody)
    result = await _writer(request).execute(
        c.Confirm(
            reservation_id=reservation_id,
            peer_id=principal_of(request).peer_id or "",
            document=body.document,
            event_id=_event_id(body),
        )
    )
    return json_response(result)


async def reserve_batch(request: web.Request) -> web.Response:
    """Each document as a single reserve would be, numbered in (date, doc_id) order (ids by
    length, then text: numeric ids in numeric order) and answered in the request's order."""
    body = await read_body(request, ReserveBatchBody)
    peer_id = principal_of(request).peer_id or ""
    docs = body.documents
    order = sorted(range(len(docs)), key=lambda i: (docs[i].date, len(docs[i].doc_id), docs[i].doc_id))
    answers = await _writer(request).execute_many(
        [
            c.Reserve(
                peer_id=peer_id,
                doctype=docs[i].doctype,
                doc_id=docs[i].doc_id,
                date=docs[i].date,
                event_id=_event_id(docs[i]),
            )
            for i in order
        ]
    )
    results: list[dict[str, Any]] = [{}] * len(docs)
    for i, answer in zip(order, answers, strict=True):
        results[i] = _batch_item(answer)
    return _batch_response(results)


async def confirm_batch(request: web.Request) -> web.Response:
    body = await read_body(request, ConfirmBatchBody)
    peer_id = principal_of(request).peer_id or ""
    answers = await _writer(request).execute_many(
        [
            c.Confirm(
                reservation_id=str(item.reservation_id),
                peer_id=peer_id,
                document=item.document,
                event_id=_event_id(item),
            )
            for item in body.confirmations
        ]
    )
    return _batch_response([_batch_item(answer) for answer in answers])


def _batch_item(answer: dict[str, Any] | Exception) -> dict[str, Any]:
    if isinstance(answer, Exception):
        status, code, message = ledger_failure(answer)  # type: ignore[arg-type]
        return {"status": status, "error": {"code": code, "message": message}}
    created = answer.pop("created", False)
    return {"status": 201 if created else 200, **answer}


def _batch_response(results: list[dict[str, Any]]) -> web.Response:
    """One answer per item; when none could be written for want of the database, the
    request's own 503, so that any client retries it the usual way."""
    if all(r["status"] == 503 for r in results):
        error = results[0]["error"]
        return error_response(
            503, error["code"], error["message"], headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return json_response({"results": results})


async def release_reservation(request: web.Request) -> web.Response:
    reservation_id = _uuid_param(request, "id", "reservation")
    body = await read_body(request, ReasonBody)
    who = principal_of(request)
    result = await _writer(request).execute(
        c.Release(
            reservation_id=reservation_id,
            peer_id=who.peer_id if who.role == "peer" else None,
            reason=body.reason,
            event_id=_event_id(body),
        )
    )
    return json_response(result)


async def list_reservations(request: web.Request) -> web.Response:
    state = _query_choice(request, "state", queries.RESERVATION_STATES)
    limit = _query_int(request, "limit", 100, 1, 1000)
    after = request.query.get("after")
    if after is not None:
        if not _UUID.fullmatch(after):
            raise ApiError(400, "invalid_query", f"after={_shown(after)} is not a reservation id")
        after = after.lower()
    async with _pool(request).acquire() as conn:
        rows = await queries.reservations(conn, state, limit, after)
    return json_response({"reservations": rows})


async def void_number(request: web.Request) -> web.Response:
    series, period = _series_param(request, "series"), request.match_info["period"]
    if not PERIOD.fullmatch(period):
        raise ApiError(400, "invalid_period", f"period {_shown(period)} is not 'all' or a year like 2026")
    raw = request.match_info["number"]
    if not _NUMBER.fullmatch(raw) or int(raw) >= BIGINT:
        raise ApiError(
            400,
            "invalid_number",
            f"number {_shown(raw)} is not a whole number written in the digits 0-9 (at most 19)",
        )
    body = await read_body(request, ReasonBody)
    result = await _writer(request).execute(
        c.Void(
            series=series,
            period=period,
            number=int(raw),
            reason=body.reason,
            event_id=_event_id(body),
        )
    )
    return json_response(result)


# -- documents ----------------------------------------------------------------------------


async def update_document(request: web.Request) -> web.Response:
    doctype = request.match_info["doctype"]
    if doctype not in SERIES_NAMES:
        raise ApiError(
            404,
            "doctype_not_found",
            f"no document type {_shown(doctype)}; accepted: {', '.join(SERIES_NAMES)}",
        )
    doc_id = _text_param(request, "doc_id", DOC_ID_MAX)
    body = await read_body(request, DocumentBody)
    result = await _writer(request).execute(
        c.UpdateDocument(
            peer_id=principal_of(request).peer_id or "",
            doctype=doctype,
            doc_id=doc_id,
            document=body.document,
            event_id=_event_id(body),
        )
    )
    return json_response(result)


async def import_documents(request: web.Request) -> web.Response:
    body = await read_body(request, ImportBody)
    seen: set[tuple[str, str]] = set()
    for d in body.documents:
        if (d.doctype, d.doc_id) in seen:
            raise ApiError(400, "invalid_body", f"{d.doctype} {d.doc_id} appears twice")
        seen.add((d.doctype, d.doc_id))
    result = await _writer(request).execute(
        c.ImportDocuments(
            peer_id=principal_of(request).peer_id or "",
            documents=tuple(
                c.ImportedDocument(
                    doctype=d.doctype, doc_id=d.doc_id, formatted=d.number, document=d.document
                )
                for d in body.documents
            ),
            event_id=_event_id(body),
        )
    )
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
    result = await _writer(request).execute(
        c.ReportPeerConfig(
            peer_id=peer_id,
            agent_version=body.agent_version,
            settings=body.settings,
        )
    )
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
    app = request.app
    return await serve_feed(request, CoordinatorFeed(_pool(request), app[TOKENS], app[TIMEZONE], app[VIES]))


OPERATOR = ("operator",)
READ = ("operator", "reader")
ANYONE = ("operator", "reader", "peer")
PEER = ("peer",)

# JSON Schemas of the path parameters, by name (the same name means the same thing).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "format": "uuid", "pattern": f"^{_UUID.pattern}$"},
    "name": {"type": "string", "enum": list(SERIES_NAMES)},
    "series": {"type": "string", "enum": list(SERIES_NAMES)},
    "doctype": {"type": "string", "enum": list(SERIES_NAMES)},
    "period": {"type": "string", "pattern": f"^({PERIOD.pattern})$"},
    "number": {"type": "integer", "minimum": 0, "maximum": BIGINT - 1},
    "doc_id": {"type": "string", "minLength": 1, "maxLength": DOC_ID_MAX},
}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    roles: tuple[str, ...] | None  # None: no authentication
    summary: str
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None  # the success answer's shape, for OpenAPI
    statuses: tuple[int, ...] = (200,)  # the success statuses
    query: dict[str, dict[str, Any]] = field(default_factory=dict)  # name: JSON Schema
    writes: bool = False  # goes through the ledger writer: may be refused with 503
    operation: str = ""  # OpenAPI's operationId where the handler's name serves two routes

    @property
    def operation_id(self) -> str:
        return self.operation or self.handler.__name__


ROUTES: list[Route] = [
    Route("GET", "/healthz", healthz, None, "Liveness and the ledger head", answer=answers.Health),
    Route("GET", "/metrics", metrics, None, "Prometheus metrics"),
    Route(
        "GET",
        "/v1/series",
        list_series,
        ANYONE,
        "Series settings and each period's next number",
        answer=answers.SeriesList,
    ),
    Route(
        "PUT",
        "/v1/series/{name}",
        set_series,
        OPERATOR,
        "Change a series' settings",
        SeriesBody,
        answers.SeriesChanged,
        writes=True,
    ),
    Route(
        "POST",
        "/v1/reservations",
        create_reservation,
        PEER,
        "Reserve a number for a document (201; 200 when repeated)",
        ReserveBody,
        answers.Reservation,
        (201, 200),
        writes=True,
    ),
    Route(
        "POST",
        "/v1/reservations/batch",
        reserve_batch,
        PEER,
        "Reserve numbers for up to 500 documents: numbered in (date, doc_id) order, one "
        "result per document in the request's order",
        ReserveBatchBody,
        answers.ReservationResults,
        writes=True,
    ),
    Route(
        "POST",
        "/v1/reservations/confirm",
        confirm_batch,
        PEER,
        "Confirm up to 500 reservations with their documents: one result per item",
        ConfirmBatchBody,
        answers.ReservationResults,
        writes=True,
    ),
    Route(
        "GET",
        "/v1/reservations",
        list_reservations,
        OPERATOR,
        "List reservations",
        answer=answers.Reservations,
        query={
            "state": {"type": "string", "enum": ["reserved", "issued", "released", "void"]},
            "limit": _LIMIT,
            "after": PATH_PARAMETERS["id"],
        },
    ),
    Route(
        "POST",
        "/v1/reservations/{id}/confirm",
        confirm_reservation,
        PEER,
        "Confirm a reservation with the issued document",
        DocumentBody,
        answers.Reservation,
        writes=True,
    ),
    Route(
        "POST",
        "/v1/reservations/{id}/release",
        release_reservation,
        ("operator", "peer"),
        "Return an unconfirmed number to the pool",
        ReasonBody,
        answers.Reservation,
        writes=True,
    ),
    Route(
        "POST",
        "/v1/numbers/{series}/{period}/{number}/void",
        void_number,
        OPERATOR,
        "Void a handed-out number; it stays used",
        ReasonBody,
        answers.Reservation,
        writes=True,
    ),
    Route(
        "PUT",
        "/v1/documents/{doctype}/{doc_id}",
        update_document,
        PEER,
        "Report the current snapshot of an issued document",
        DocumentBody,
        answers.DocumentUpdated,
        writes=True,
    ),
    Route(
        "POST",
        "/v1/documents/import",
        import_documents,
        PEER,
        "Import documents numbered before Concord; a known number raises a warning instead",
        ImportBody,
        answers.Imported,
        writes=True,
    ),
    Route(
        "POST",
        "/v1/peers",
        add_peer,
        OPERATOR,
        "Register a store; its token is shown once",
        PeerBody,
        answers.PeerRegistered,
        (201,),
        writes=True,
    ),
    Route("GET", "/v1/peers", list_peers, READ, "List stores", answer=answers.Peers),
    Route(
        "POST",
        "/v1/peers/{id}/rotate-token",
        rotate_peer_token,
        OPERATOR,
        "Give a store a new token; the old one stops working",
        answer=answers.TokenRotated,
        writes=True,
    ),
    Route(
        "DELETE",
        "/v1/peers/{id}",
        retire_peer,
        OPERATOR,
        "Retire a store",
        answer=answers.PeerRetired,
        writes=True,
    ),
    Route(
        "POST",
        "/v1/heartbeat",
        heartbeat,
        PEER,
        "Report the agent's version and WHMCS settings; returns the series settings",
        HeartbeatBody,
        answers.HeartbeatAnswer,
        writes=True,
    ),
    Route(
        "GET",
        "/v1/warnings",
        list_warnings,
        READ,
        "List warnings",
        answer=answers.Warnings,
        query={"state": {"type": "string", "enum": ["open", "resolved"]}},
    ),
    Route(
        "POST",
        "/v1/warnings/{id}/resolve",
        resolve_warning,
        OPERATOR,
        "Resolve a warning",
        answer=answers.WarningResolved,
        writes=True,
    ),
    Route(
        "GET",
        "/v1/events",
        list_events,
        READ,
        "The ledger in order",
        answer=answers.Events,
        query={"after": {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0}, "limit": _LIMIT},
    ),
    Route(
        "POST",
        "/v1/webservice",
        webservice,
        None,
        "The WebService Get feed of every store (reader or operator token, in the `token` "
        "field or as Bearer; docs/api.md)",
    ),
    Route(
        "POST",
        BILLING_EXTENSION_PATH,
        webservice,
        None,
        "The Get feed under the Billing Extension path (ws=einvoice)",
        operation="webservice_billing_extension",
    ),
]
FEED_PATHS = ("/v1/webservice", BILLING_EXTENSION_PATH)


def _query_checked(route: Route) -> Handler:
    """``route``'s handler, refusing query parameters it does not take: a misspelt filter
    would otherwise be ignored silently."""
    accepted = ", ".join(route.query) or "none"

    async def handle(request: web.Request) -> web.StreamResponse:
        unknown = [name for name in request.query if name not in route.query]
        if unknown:
            raise ApiError(
                400, "invalid_query", f"unknown query parameter {_shown(unknown[0])}; accepted: {accepted}"
            )
        return await route.handler(request)

    return handle


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        # The Get feed keeps the contract's leniency: the alias path reads ws from the query.
        handler = route.handler if route.path in FEED_PATHS else _query_checked(route)
        if route.roles:
            handler = guarded(handler, route.roles)
        app.router.add_route(route.method, route.path, handler)
