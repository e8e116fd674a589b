"""The agent's HTTP server: health, the PHP hook's "number this invoice now", the Get feed."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import orjson
from aiohttp import web

from agent.client import CoordinatorUnavailable
from agent.numbering import Numbering
from agent.webservice import AgentFeed, add_webservice_routes

NUMBERING = web.AppKey("numbering", Numbering)
HOOK_TOKEN = web.AppKey("hook_token", str)
HEALTH = web.AppKey("health", dict)
HOOK_WAIT_SECONDS = 4.0


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok", **request.app[HEALTH]})


async def hook_number(request: web.Request) -> web.Response:
    expected = request.app[HOOK_TOKEN]
    if not expected:
        return _error(403, "hook_disabled", "set CONCORD_AGENT_HOOK_TOKEN to enable the hook")
    if request.content_type == "application/json":
        try:
            fields = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "invalid_json", "the request body is not valid JSON")
        if not isinstance(fields, dict):
            return _error(400, "invalid_body", "the request body must be a JSON object")
    else:
        fields = dict(await request.post())
    given = request.headers.get("X-Concord-Hook-Token") or str(fields.get("token", ""))
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return _error(401, "unauthenticated", "wrong or missing hook token")
    raw = str(fields.get("invoiceid", "")).strip()
    if not raw.isdigit():
        return _error(400, "invalid_invoiceid", f"invoiceid must be a positive integer, received {raw!r}")
    # The hook gives up after 5 s; the numbering goes on in the background past that.
    work = asyncio.ensure_future(request.app[NUMBERING].number_invoice(int(raw)))
    work.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
    try:
        number = await asyncio.wait_for(asyncio.shield(work), HOOK_WAIT_SECONDS)
    except LookupError as exc:
        return _error(404, "invoice_not_found", str(exc))
    except (CoordinatorUnavailable, TimeoutError):
        return _error(
            503,
            "coordinator_unavailable",
            "the coordinator did not answer in time; the agent numbers the invoice as soon as it does",
        )
    return _json({"invoiceid": int(raw), "invoicenum": number})


def create_agent_app(
    numbering: Numbering, hook_token: str, health: dict[str, Any], feed: AgentFeed | None = None
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    if feed is not None:
        add_webservice_routes(app, feed)
    app[NUMBERING] = numbering
    app[HOOK_TOKEN] = hook_token
    app[HEALTH] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/hooks/number", hook_number)
    return app
