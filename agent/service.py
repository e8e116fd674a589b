"""`concord-agent serve`: the loops and the HTTP server of one store's agent."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from agent.changes import ChangeReporter
from agent.client import CoordinatorClient, CoordinatorRefused, CoordinatorUnavailable
from agent.heartbeat import beat
from agent.numbering import Numbering
from agent.relay import Relay
from agent.rules import RulesHolder
from agent.server import create_agent_app
from agent.settings import AgentSettings
from agent.webservice import AgentFeed
from agent.whmcs import queries
from agent.whmcs.database import MysqlTarget, create_agent_tables, create_pool
from agent.whmcs.queries import DueRules

log = structlog.get_logger("concord.agent")


async def repeat(
    name: str, seconds: float, job: Callable[[], Awaitable[Any]], wakeup: asyncio.Event | None = None
) -> None:
    """Run ``job`` every ``seconds`` (sooner when woken); failures are logged and retried."""
    while True:
        try:
            await job()
        except (CoordinatorUnavailable, CoordinatorRefused, OSError) as exc:
            log.warning("job_failed", job=name, error=str(exc))
        except Exception:
            log.exception("job_crashed", job=name)
        if wakeup is None:
            await asyncio.sleep(seconds)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), seconds)
        wakeup.clear()


class Backlog:
    """Which loops have work waiting; ``caught_up`` is set while none has. The change scan,
    the reconciliation and the heartbeat's duplicate-number scan read every issued document:
    they wait for it rather than share MySQL and the coordinator with a burst being numbered
    and confirmed."""

    def __init__(self) -> None:
        self.caught_up = asyncio.Event()
        self._waiting = {"numbering": True, "relay": True}

    def mark(self, loop: str, waiting: bool) -> None:
        self._waiting[loop] = waiting
        if any(self._waiting.values()):
            self.caught_up.clear()
        else:
            self.caught_up.set()


async def run_agent(settings: AgentSettings, target: MysqlTarget) -> None:
    pool = await create_pool(target)
    client = CoordinatorClient(settings.coordinator_url, settings.token)
    rules = RulesHolder(settings.credit_note_rule)
    extra = settings.reported()

    async def first_beat() -> None:
        # The series settings decide what is due: wait for the first heartbeat answer. It
        # leaves out the duplicate-number scan, which reads all of tblinvoices.
        while not rules.known:
            try:
                await beat(pool, client, rules, extra, scan_duplicates=False)
            except (CoordinatorUnavailable, OSError) as exc:
                log.warning("coordinator_unavailable", error=str(exc))
                await asyncio.sleep(1)

    # The agent's tables are created while the first heartbeat is under way: neither waits
    # for the other. A failure of either ends the other.
    beating = asyncio.create_task(first_beat())
    try:
        await create_agent_tables(pool)
        async with pool.acquire() as conn:
            has_invoicedata = await queries.has_table(conn, "mod_invoicedata")
        await beating
    finally:
        beating.cancel()
    relay_wakeup, numbering_wakeup = asyncio.Event(), asyncio.Event()
    numbering = Numbering(pool, client, rules, settings.batch_size, relay_wakeup)
    relay = Relay(pool, client, rules, has_invoicedata, settings.batch_size)
    backlog = Backlog()
    changes = ChangeReporter(pool, client, rules, has_invoicedata, backlog.caught_up)

    # /healthz shows it; its numbering_rounds tell how many rounds have finished.
    health: dict[str, Any] = {"store": settings.store, "numbering_rounds": 0}

    async def number_all() -> None:
        while True:
            taken = await numbering.round()
            if taken:
                backlog.mark("relay", True)  # their outbox rows wait for a confirm
            if taken < settings.batch_size:
                break
            backlog.mark("numbering", True)
        backlog.mark("numbering", False)
        health["numbering_rounds"] += 1

    async def confirm_all() -> None:
        while await relay.round() > 0:
            pass
        backlog.mark("relay", False)

    async def reconcile() -> None:
        await confirm_all()
        await number_all()
        await changes.reconcile()

    feed = AgentFeed(
        pool=pool,
        rules=DueRules("payment", "payment", settings.credit_note_rule),
        has_invoicedata=has_invoicedata,
        token=settings.webservice_token,
        timezone=settings.timezone,
        country=settings.country,
        vies=settings.vies(),
    )
    runner = web.AppRunner(
        create_agent_app(numbering, settings.hook_token, health, feed), access_log=None, handle_signals=False
    )
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port, reuse_address=True).start()
    # What is alive now lives as long as the process: keep the collector from re-scanning it
    # (a Get answer allocates millions of short-lived objects; ~15% of its CPU went there).
    gc.freeze()
    tasks = [
        asyncio.create_task(repeat("relay", settings.poll_seconds, confirm_all, relay_wakeup)),
        asyncio.create_task(repeat("numbering", settings.poll_seconds, number_all, numbering_wakeup)),
        asyncio.create_task(
            repeat(
                "heartbeat",
                settings.heartbeat_seconds,
                # Like the change scan, the duplicate-number scan waits for the backlog.
                lambda: beat(pool, client, rules, extra, scan_duplicates=backlog.caught_up.is_set()),
            )
        ),
        asyncio.create_task(repeat("changes", settings.update_scan_seconds, changes.scan)),
        asyncio.create_task(repeat("reconcile", settings.reconcile_seconds, reconcile)),
    ]
    log.info("agent_serving", store=settings.store, host=settings.host, port=settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    await client.close()
    pool.close()
    await pool.wait_closed()
