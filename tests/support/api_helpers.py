"""Small helpers for API tests: a store with its token, a reserve-confirm round."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from coordinator import advisory_locks
from tests.conftest import bearer

DOCUMENT = {"ClientData": {"Name": "Ada"}, "DocData": {"Total": "12.10"}}


async def add_store(client: Any, operator: str, name: str = "alpha") -> dict[str, Any]:
    resp = await client.post(
        "/v1/peers", json={"name": name, "url": "http://127.0.0.1:8701"}, headers=bearer(operator)
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def reserve(
    client: Any,
    token: str,
    doc_id: str,
    *,
    doctype: str = "invoice",
    date: str = "2026-03-01",
    expect: int = 201,
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/reservations", headers=bearer(token), json={"doctype": doctype, "doc_id": doc_id, "date": date}
    )
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def confirm(client: Any, token: str, reservation_id: str) -> dict[str, Any]:
    resp = await client.post(
        f"/v1/reservations/{reservation_id}/confirm", headers=bearer(token), json={"document": DOCUMENT}
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def ledger_position(client: Any) -> int:
    resp = await client.get("/healthz")
    return (await resp.json())["ledger"]["position"]


@contextlib.asynccontextmanager
async def ledger_held(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold the ledger lock, as a replica stuck mid-batch would, until the block ends."""
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", advisory_locks.LEDGER)
        yield holder
    finally:
        await holder.close()  # its session's lock ends with it


async def until_writer_waits(holder: asyncpg.Connection, within: float = 5.0) -> None:
    """Return once a writer waits for the ledger lock ``holder`` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await holder.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ):
        assert loop.time() < deadline, "no writer asked for the ledger lock"
        await asyncio.sleep(0.01)
