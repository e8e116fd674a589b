"""One store, end to end: a real agent numbers its WHMCS documents through a real coordinator,
and both feeds then answer the same issued documents (the agent's also those without a number)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp

from simulator.generator import StoreGenerator
from simulator.whmcs import connection, fetch_all, load_store
from tests.conftest import Tokens, bearer
from tests.support.agent_process import AgentProcess
from tests.support.coordinator_process import CoordinatorProcess
from tests.support.mysql_fixtures import WhmcsDatabaseFactory

TOKEN = "agent-feed-token"
STORE = "alpha"


async def post(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.post(url, **kwargs) as resp:
        return resp.status, await resp.json()


@dataclass(frozen=True)
class LiveFeeds:
    """A coordinator and one store's agent, serving; every paid document numbered."""

    agent_url: str  # the agent's feed, token TOKEN
    coordinator_url: str  # the coordinator's feed, a reader token
    reader_token: str


@contextlib.asynccontextmanager
async def live_feeds(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> AsyncIterator[LiveFeeds]:
    generator = StoreGenerator(5, STORE, clients=12, invoices=60, today=date(2025, 1, 15))
    whmcs_url = whmcs_database_factory()
    async with connection(whmcs_url) as conn:
        await load_store(conn, generator)
    coordinator = CoordinatorProcess(database_url, tmp_path, "coordinator", env={"CONCORD_VIES_URL": ""})
    agent: AgentProcess | None = None
    try:
        await coordinator.start()
        async with aiohttp.ClientSession() as http:
            status, peer = await post(
                http,
                f"{coordinator.url}/v1/peers",
                headers=bearer(tokens.operator),
                json={"name": STORE, "url": "http://127.0.0.1:8701"},
            )
            assert status == 201
        agent = AgentProcess(
            STORE,
            whmcs_url,
            coordinator.url,
            peer["token"],
            tmp_path,
            env={
                "CONCORD_AGENT_WEBSERVICE_TOKEN": TOKEN,
                "CONCORD_AGENT_COUNTRY": "NL",
                "CONCORD_AGENT_VIES_URL": "",
            },
        )
        await agent.start(60)
        # Wait until every paid document is numbered and confirmed.
        deadline = time.monotonic() + 30
        while True:
            async with connection(whmcs_url) as conn:
                waiting = await fetch_all(
                    conn,
                    "SELECT (SELECT COUNT(*) FROM tblinvoices WHERE invoicenum = ''"
                    " AND status IN ('Paid', 'Refunded')) + (SELECT COUNT(*) FROM"
                    " mod_concord_outbox WHERE confirmed_at IS NULL) AS n",
                )
            if waiting[0]["n"] == 0:
                break
            assert time.monotonic() < deadline, agent.log_tail()
            await asyncio.sleep(0.3)
        yield LiveFeeds(f"{agent.url}/webservice", f"{coordinator.url}/v1/webservice", tokens.reader)
    finally:
        if agent is not None:
            agent.stop()
        coordinator.stop()


async def test_agent_and_coordinator_answer_the_same_issued_documents(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    async with (
        live_feeds(database_url, tokens, whmcs_database_factory, tmp_path) as feeds,
        aiohttp.ClientSession() as http,
    ):
        status, local = await post(http, feeds.agent_url, data={"action": "Get", "token": TOKEN})
        assert status == 200
        assert len(local) > 20
        status, central = await post(
            http, feeds.coordinator_url, data={"action": "Get", "token": feeds.reader_token, "store": STORE}
        )
        assert status == 200
    issued = {key: document for key, document in local.items() if document["DocData"]["Num"]}
    assert 0 < len(issued) < len(local)  # the agent serves unnumbered documents too
    assert list(central) == [f"{STORE}/{key}" for key in issued]
    for key, document in issued.items():
        assert central[f"{STORE}/{key}"] == {"Store": STORE, **document}
