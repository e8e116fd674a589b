"""The aiohttp application: wiring of pool, ledger writer, routes and background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib.metadata import version

import orjson
from aiohttp import web

from coordinator.accounting.schedule import run_daily as run_kashflow_daily
from coordinator.console import add_console
from coordinator.db import connect, create_pool
from coordinator.http.errors import MAX_BODY
from coordinator.http.keys import CHAIN_WATCH, POOL, TIMEZONE, TOKENS, VIES, WRITER
from coordinator.http.middleware import observe
from coordinator.http.openapi import openapi_document
from coordinator.http.routes import add_routes
from coordinator.ledger.writer import LedgerWriter
from coordinator.migrations import migrate
from coordinator.monitors.billing import BillingMonitor
from coordinator.monitors.chain_watch import ChainWatch
from coordinator.monitors.pending_reservations import flag_overdue
from coordinator.monitors.silent_stores import flag_silent
from coordinator.notifications.notifier import configured_channels, run_channel
from coordinator.peers.tokens import TokenCache
from coordinator.periodic import run_every
from coordinator.settings import Settings

POOL_CLOSE_SECONDS = 2.0


def create_app(settings: Settings) -> web.Application:
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (serve starts the embedded one)")
    app = web.Application(middlewares=[observe], client_max_size=MAX_BODY)
    app[TIMEZONE] = settings.timezone
    app[VIES] = settings.vies()
    add_routes(app)
    add_console(app)  # HTML under /console: not part of the API's route table
    document = orjson.dumps(openapi_document(version("concord")))

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # As the ledger's owner, on a connection of its own: without the service's time
        # limits (a migration may rewrite a large table), and before any pool connection
        # looks for the service's role, which the migrations create.
        owner = await connect(settings.migration_database_url or settings.database_url or "")
        try:
            await migrate(owner)
        finally:
            await owner.close()
        pool = await create_pool(
            settings.database_url or "",
            size=settings.pool_size,
            limit_seconds=settings.database_timeout_seconds,
        )
        writer = LedgerWriter(
            pool,
            max_batch=settings.max_batch,
            queue_limit=settings.queue_limit,
            answer_timeout=settings.answer_timeout_seconds,
            acquire_timeout=settings.database_timeout_seconds,
        )
        await writer.start()
        app[POOL] = pool
        app[WRITER] = writer
        app[TOKENS] = TokenCache(pool)
        app[CHAIN_WATCH] = watch = ChainWatch(pool, writer)
        monitors = [
            # The chain watch and the billing checks re-read every event the ledger appends:
            # during a burst they wait until it has been numbered (a minute at most).
            asyncio.create_task(
                run_every(
                    "chain_check", ChainWatch.CHECK_SECONDS, watch.check, defer_while=writer.numbering_burst
                )
            ),
            asyncio.create_task(
                run_every(
                    "pending_reservations",
                    settings.pending_check_seconds,
                    lambda: flag_overdue(pool, writer, settings.pending_warning_minutes),
                )
            ),
            asyncio.create_task(
                run_every(
                    "silent_stores",
                    settings.heartbeat_seconds,
                    lambda: flag_silent(pool, writer, settings.heartbeat_seconds, settings.missed_heartbeats),
                )
            ),
            asyncio.create_task(
                run_every(
                    "billing_checks",
                    settings.billing_check_seconds,
                    BillingMonitor(pool, writer, settings.vies()).check,
                    defer_while=writer.numbering_burst,
                )
            ),
        ]
        if settings.kashflow_username:  # every replica schedules; the sync lock lets one run
            monitors.append(asyncio.create_task(run_kashflow_daily(pool, writer, settings)))
        monitors += [
            asyncio.create_task(run_channel(pool, channel, settings))
            for channel in configured_channels(settings)
        ]  # one replica delivers each
        yield
        for monitor in monitors:
            monitor.cancel()
        # A monitor cancelled mid-query may end with a driver error: it is stopping anyway.
        await asyncio.gather(*monitors, return_exceptions=True)
        await writer.stop()
        try:  # close waits for every connection to come back: not beyond a few seconds
            await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
        except TimeoutError:
            pool.terminate()

    app.cleanup_ctx.append(lifecycle)
    return app
