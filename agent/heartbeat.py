"""Heartbeat: tells the coordinator the agent is alive and how WHMCS numbers on its own."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from agent.client import CoordinatorClient
from agent.rules import RulesHolder
from agent.whmcs import queries

AGENT_VERSION = version("concord")


async def beat(pool: Any, client: CoordinatorClient, rules: RulesHolder,
               extra: dict[str, str]) -> None:
    async with pool.acquire() as conn:
        settings: dict[str, Any] = await queries.numbering_settings(conn)
        # The KashFlow sync matches a document's currency id to KashFlow's by this code.
        settings["Currencies"] = await queries.currencies(conn)
    reply = await client.heartbeat(AGENT_VERSION, {**settings, **extra})
    rules.update(reply["settings"])
