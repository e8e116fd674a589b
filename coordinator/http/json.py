"""Fast JSON responses and request bodies validated by pydantic models.

Every body is first checked as a whole (coordinator.events.canonical): no NUL or lone
surrogate in any text or key, integers within PostgreSQL's bigint, no floats, at most
MAX_DEPTH levels of nesting. So no value a handler passes on can fail inside PostgreSQL or
in serialising the ledger, where it would fail the other requests of its batch too.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from coordinator.events.canonical import NotCanonical, ensure_canonical
from coordinator.http.errors import ApiError

Body = TypeVar("Body", bound=BaseModel)


def json_response(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# A body larger than this is parsed and checked in a worker thread: a batch of 500
# confirmations takes about 8 ms of CPU, a batch of 500 reserves (29 KiB) about 2 ms, which
# on the event loop every other request would wait for, at every step it takes. In a thread
# the loop gets its turn at least every sys.getswitchinterval() (1 ms in serve).
THREAD_FROM_BYTES = 16 * 1024


async def read_body(request: web.Request, model: type[Body]) -> Body:
    raw = await request.read()  # over client_max_size: aiohttp raises 413
    if len(raw) >= THREAD_FROM_BYTES:
        return await asyncio.to_thread(_parse, raw, model)
    return _parse(raw, model)


def _parse(raw: bytes, model: type[Body]) -> Body:
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the request body must be a JSON object")
    try:
        ensure_canonical(data, "body")
    except NotCanonical as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", describe_validation_error(exc)) from None
