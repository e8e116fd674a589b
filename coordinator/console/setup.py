"""The console as an aiohttp sub-application at /console: its templates, static files, routes
and its own middleware (coordinator/console/guard.py)."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from coordinator.console import actions, overview, pages
from coordinator.console.guard import guard
from coordinator.console.overview import Remembered
from coordinator.http.keys import POOL, TIMEZONE

log = structlog.get_logger("concord.console")

PREFIX = "/console"
WARM_UP = web.AppKey("console_warm_up", asyncio.Task)


def console_app() -> web.Application:
    console = web.Application(middlewares=[guard])
    console[pages.REMEMBERED] = Remembered()
    environment = aiohttp_jinja2.setup(
        console,
        loader=jinja2.PackageLoader("coordinator.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["url"] = lambda route, **parts: str(
        console.router[route].url_for(**{k: str(v) for k, v in parts.items()})
    )
    r = console.router
    r.add_get("/", pages.overview_page, name="overview")
    r.add_get("/overview/live", pages.overview_live, name="overview_live")
    r.add_get("/sign-in", pages.sign_in_form, name="sign_in_form")
    r.add_post("/sign-in", actions.sign_in, name="sign_in")
    r.add_post("/sign-out", actions.sign_out, name="sign_out")
    r.add_get("/series", pages.series_page, name="series")
    r.add_post("/series/{name}/review", actions.series_review, name="series_review")
    r.add_post("/series/{name}", actions.series_apply, name="series_apply")
    r.add_get("/stores", pages.stores_page, name="stores")
    r.add_post("/stores", actions.add_store, name="add_store")
    r.add_get("/stores/{id}/{action:rotate|retire}", pages.store_confirm, name="store_confirm")
    r.add_post("/stores/{id}/rotate", actions.rotate_store, name="rotate_store")
    r.add_post("/stores/{id}/retire", actions.retire_store, name="retire_store")
    r.add_get("/warnings", pages.warnings_page, name="warnings")
    r.add_get("/warnings/live", pages.warnings_live, name="warnings_live")
    r.add_post("/warnings/{id}/resolve", actions.resolve_warning, name="resolve_warning")
    r.add_get("/numbers", pages.numbers_page, name="numbers")
    r.add_get("/numbers/history", pages.history_page, name="history")
    r.add_get("/ledger", pages.ledger_page, name="ledger")
    r.add_static("/static", Path(str(resources.files("coordinator.console") / "static")), name="static")
    return console


async def _warm_up(app: web.Application, remembered: Remembered) -> None:
    """Count the overview's closed intervals once, before anyone asks (the first overview
    would count the 7 days and the month itself)."""
    try:
        async with app[POOL].acquire() as conn:
            await overview.read(conn, app[TIMEZONE], remembered)
    except Exception as exc:  # the first overview counts them itself then
        log.warning("console_warm_up_failed", error=repr(exc))


def add_console(app: web.Application) -> None:
    console = console_app()

    async def to_console(_: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(f"{PREFIX}/")

    # After the application's own start-up (the pool exists then); stopped before its
    # clean-up closes the pool.
    async def start_warm_up(app: web.Application) -> None:
        console[WARM_UP] = asyncio.create_task(_warm_up(app, console[pages.REMEMBERED]))

    async def stop_warm_up(_: web.Application) -> None:
        console[WARM_UP].cancel()
        await asyncio.gather(console[WARM_UP], return_exceptions=True)

    app.on_startup.append(start_warm_up)
    app.on_shutdown.append(stop_warm_up)
    app.router.add_get(PREFIX, to_console)
    app.add_subapp(PREFIX, console)
