"""The agent's MySQL transactions when the agent stops midway: the cancellation reaches the
job as a cancellation, so its loop ends (the agent exits on SIGTERM) and the numbering does
not take it for a failed write, whose reserved numbers it would release."""

from __future__ import annotations

import asyncio

import pytest

from agent.whmcs.database import create_pool, in_transaction, parse_mysql_url
from simulator.whmcs import connection, fetch_all

QUERY = "SELECT SLEEP(30) AS slept"
PROCESSES_RUNNING = "SELECT id FROM information_schema.processlist WHERE info = %s"


async def running(whmcs_url: str, query: str) -> None:
    """Returns once MariaDB runs ``query``."""
    async with connection(whmcs_url) as conn:
        while True:
            if await fetch_all(conn, PROCESSES_RUNNING, (query,)):
                return
            await asyncio.sleep(0.02)


async def test_a_transaction_cancelled_midway_ends_cancelled(whmcs_database: str) -> None:
    pool = await create_pool(parse_mysql_url(whmcs_database))

    async def write() -> None:
        async with pool.acquire() as conn, in_transaction(conn) as cur:
            await cur.execute(QUERY)

    try:
        job = asyncio.create_task(write())
        await asyncio.wait_for(running(whmcs_database, QUERY), 10)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
    finally:
        pool.close()
        await pool.wait_closed()
