"""One store's agent parts (pool, coordinator client, rules) wired to a live in-process
coordinator, for tests that drive the numbering loop, relay and change scan by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from agent.client import CoordinatorClient
from agent.rules import RulesHolder
from agent.whmcs.database import create_agent_tables, create_pool, parse_mysql_url
from coordinator.app import create_app
from coordinator.settings import Settings
from simulator.generator import StoreGenerator
from simulator.whmcs import connection, fetch_all, load_store
from tests.conftest import Tokens, bearer

DOCUMENT_TABLES = ("tblinvoices", "tblinvoiceitems", "tblaccounts", "mod_invoicedata")


@dataclass
class Agent:
    """One store's agent parts, wired to a live coordinator."""

    pool: Any
    whmcs_url: str  # for acting as WHMCS does
    generator: StoreGenerator
    client: CoordinatorClient
    rules: RulesHolder

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            return await fetch_all(conn, sql, args)


@pytest.fixture
async def agent(
    whmcs_database_factory, aiohttp_server, settings: Settings, tokens: Tokens
) -> AsyncIterator[Agent]:
    server = await aiohttp_server(create_app(settings))
    url = str(server.make_url("")).rstrip("/")
    async with CoordinatorClient(url, tokens.operator) as operator:
        session = operator._client()
        async with session.post(
            f"{url}/v1/peers",
            headers=bearer(tokens.operator),
            json={"name": "alpha", "url": "http://127.0.0.1:8701"},
        ) as resp:
            assert resp.status == 201, await resp.text()
            peer = await resp.json()
    generator = StoreGenerator(7, "alpha", clients=8, invoices=40)
    whmcs_url = whmcs_database_factory()
    async with connection(whmcs_url) as conn:  # clients, currencies, settings; no documents
        await load_store(
            conn,
            {table: ([] if table in DOCUMENT_TABLES else rows) for table, rows in generator.base().items()},
        )
    pool = await create_pool(parse_mysql_url(whmcs_url))
    await create_agent_tables(pool)
    async with CoordinatorClient(url, peer["token"]) as client:
        yield Agent(pool, whmcs_url, generator, client, RulesHolder("negative_total"))
    pool.close()
    await pool.wait_closed()
