"""Rendering a console page: its template with what every page shows (the session, the
navigation, the polling interval)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from coordinator.console.session import Session

SESSION = web.RequestKey("console_session", Session)
POLL_SECONDS = 5  # overview and warnings refresh this often, without a reload


def page(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    route = request.match_info.route.name
    return aiohttp_jinja2.render_template(
        template,
        request,
        {
            "session": request.get(SESSION),
            "nav": route,
            "poll_seconds": POLL_SECONDS,
            **context,
        },
        status=status,
    )


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return page(request, "error.html", {"title": title, "message": message}, status)


def see_other(request: web.Request, route: str, query: str = "") -> web.Response:
    """303 to one of the console's pages (returned, not raised: logged with its status)."""
    url = str(request.app.router[route].url_for())
    return web.Response(status=303, headers={"Location": f"{url}?{query}" if query else url})
