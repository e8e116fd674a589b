"""The API's error shape: {"error": {"code", "message"}} with a 4xx status."""

from __future__ import annotations

import orjson
from aiohttp import web

from coordinator.ledger.commands import DomainError, Refusal

# The largest request body: a batch of 500 confirmations with their documents fits.
MAX_BODY_MIB = 8
MAX_BODY = MAX_BODY_MIB * 1024 * 1024

# How each kind of refused command is answered.
STATUS_OF_REFUSAL = {
    Refusal.INVALID: 400,
    Refusal.FORBIDDEN: 403,
    Refusal.NOT_FOUND: 404,
    Refusal.CONFLICT: 409,
}


def refused_status(exc: DomainError) -> int:
    return STATUS_OF_REFUSAL[exc.refusal]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"code": code, "message": message}}),
        status=status,
        content_type="application/json",
        headers=headers,
    )
