"""asyncpg pool with the codecs Concord relies on."""

from __future__ import annotations

import asyncpg
import orjson


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads, format="text",
        )


async def create_pool(url: str, *, size: int = 10) -> asyncpg.Pool:
    # synchronous_commit is on (PostgreSQL's default) and asserted: a reply means durable.
    # jit off: the ledger's SQL functions look costly to the planner on a long ledger and were
    # JIT-compiled at ~400 ms a call, for statements that run in a few milliseconds.
    pool = await asyncpg.create_pool(
        url, min_size=1, max_size=size, init=_init_connection,
        server_settings={"synchronous_commit": "on", "jit": "off", "application_name": "concord"},
    )
    assert pool is not None
    return pool


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, server_settings={"synchronous_commit": "on"})
    await _init_connection(conn)
    return conn
