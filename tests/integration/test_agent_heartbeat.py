"""The agent's heartbeat against MariaDB: a beat that may not scan for duplicate numbers (the
first one, and those while a backlog is numbered) reports what the last scan found, so the
coordinator's picture of the store neither flips nor waits for a scan of all tblinvoices."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from aiohttp import web

from agent import heartbeat
from agent.client import CoordinatorClient
from simulator.whmcs import connection, invoice_tables, load_store
from tests.support.agent_parts import Agent

SERIES = {"invoice": {"assign_on": "payment"}, "creditnote": {"assign_on": "payment"}}


async def numbered(agent: Agent, numbers: dict[int, str]) -> None:
    """Invoices (id -> invoicenum) as WHMCS numbered them, beside Concord."""
    documents = [
        (invoice_id, agent.generator.new_invoice(status="Paid", date=date(2026, 3, 2), invoicenum=number))
        for invoice_id, number in numbers.items()
    ]
    async with connection(agent.whmcs_url) as conn:
        await load_store(conn, invoice_tables(documents))


async def test_a_beat_that_may_not_scan_reports_the_last_scan(
    agent: Agent, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeat, "DUPLICATE_SCAN_SECONDS", 0.0)  # a beat that may scan does
    reported: list[dict[str, Any]] = []

    async def coordinator_heartbeat(request: web.Request) -> web.Response:
        reported.append((await request.json())["settings"])
        return web.json_response({"settings": SERIES})

    app = web.Application()
    app.router.add_post("/v1/heartbeat", coordinator_heartbeat)
    server = await aiohttp_server(app)
    await numbered(agent, {1: "INV-58", 2: "INV-58"})
    async with CoordinatorClient(str(server.make_url("")), "token") as client:

        async def beat(*, scan_duplicates: bool) -> dict[str, Any]:
            await heartbeat.beat(agent.pool, client, agent.rules, {}, scan_duplicates=scan_duplicates)
            return reported[-1]

        assert "DuplicateNumbers" not in await beat(scan_duplicates=False)  # no scan yet
        assert (await beat(scan_duplicates=True))["DuplicateNumbers"] == {"INV-58": [1, 2]}
        await numbered(agent, {3: "INV-60", 4: "INV-60"})
        assert (await beat(scan_duplicates=False))["DuplicateNumbers"] == {"INV-58": [1, 2]}
        assert (await beat(scan_duplicates=True))["DuplicateNumbers"] == {
            "INV-58": [1, 2],
            "INV-60": [3, 4],
        }
