"""Request id, access log, metrics, authentication and error mapping for every request."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import Counter, Histogram

from coordinator.http import agent_protocol
from coordinator.http.errors import MAX_BODY_MIB, ApiError, error_response, refused_status
from coordinator.http.keys import TOKENS
from coordinator.ledger.commands import DomainError
from coordinator.ledger.writer import DATABASE_AWAY, CommandFailed, LedgerUnavailable
from coordinator.peers.tokens import Principal

log = structlog.get_logger("concord.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUESTS = Counter("concord_http_requests", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "concord_http_request_seconds",
    "HTTP request duration",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

PRINCIPAL = web.RequestKey("principal", Principal)


# Request ids unique across processes and restarts without a uuid4 (a syscall) per request.
_REQUEST_ID_PREFIX = secrets.token_hex(6)
_request_counter = itertools.count(1)


def _next_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter):08x}"


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or _next_request_id()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await _errors_as_json(request, handler)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    finally:
        route = _route_name(request)
        elapsed = time.perf_counter() - started
        REQUESTS.labels(request.method, route, str(status)).inc()
        LATENCY.labels(request.method, route).observe(elapsed)
        if status >= 500 or route not in ("/metrics", "/healthz"):
            log.debug(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                ms=round(elapsed * 1000, 2),
            )
        structlog.contextvars.unbind_contextvars("request_id")


async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "body_too_large", f"the request body is larger than {MAX_BODY_MIB} MiB")
    except web.HTTPException as exc:
        if exc.status >= 400:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None  # 405
            return error_response(
                exc.status, code, f"{request.method} {request.path}: {exc.reason}", headers=allow
            )
        raise
    except (DomainError, LedgerUnavailable, CommandFailed) as exc:
        status, code, message = ledger_failure(exc)
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
        return error_response(status, code, message, headers=retry)
    except DATABASE_AWAY as exc:  # a read or a token lookup: the database is away
        log.warning("database_unavailable", error=repr(exc))
        return error_response(
            503,
            "unavailable",
            "the database is unavailable; send the same request again",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return error_response(500, "internal", "internal error; the request id is logged")


RETRY_AFTER_SECONDS = 1


def ledger_failure(exc: DomainError | LedgerUnavailable | CommandFailed) -> tuple[int, str, str]:
    """(status, code, message) of a command the ledger did not write: for a whole request,
    or one item of a batch. A 503 is safe to send again as it was, except registering a
    store, whose repeat is refused once the first was written."""
    match exc:
        case DomainError():
            return refused_status(exc), exc.code, exc.message
        case LedgerUnavailable(busy=True):
            return 503, "busy", f"{exc.reason}: nothing was written; send the same request again"
        case LedgerUnavailable(outcome_unknown=True):
            return (
                503,
                "outcome_unknown",
                (
                    f"{exc.reason}: the request may have been written; sending the same request "
                    "again is safe (a store registration that was written is refused then: list "
                    "the stores and rotate its token)"
                ),
            )
        case LedgerUnavailable():
            return 503, "unavailable", (f"{exc.reason}: nothing was written; send the same request again")
        case CommandFailed(invalid_value=True):
            return (
                400,
                "invalid_value",
                (f"the database refused a value of this request, which was not written: {exc.detail}"),
            )
    return 500, "internal", "internal error; the request was not written and its id is logged"


def guarded(handler: Handler, roles: tuple[str, ...]) -> Handler:
    """Only a bearer token of one of ``roles`` may call ``handler``."""

    async def check(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401, "unauthenticated", "send 'Authorization: Bearer <token>' with a Concord token"
            )
        principal = await request.app[TOKENS].resolve(token.strip())
        if principal is None:
            raise ApiError(401, "unauthenticated", "the token is unknown, rotated or retired")
        if principal.role not in roles:
            raise ApiError(
                403, "forbidden", f"a {principal.role} token may not do this; needs {' or '.join(roles)}"
            )
        agent_protocol.check(request)
        request[PRINCIPAL] = principal
        return await handler(request)

    check.roles = roles  # type: ignore[attr-defined]  # read by the OpenAPI test
    return check


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]
