"""asyncpg pool with the codecs Concord relies on."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from coordinator.service_role import enter_service_role


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            format="text",
        )


async def _init_pool_connection(conn: asyncpg.Connection) -> None:
    await _init_connection(conn)
    await enter_service_role(conn)  # the service's own rights, whatever the login's


async def create_pool(url: str, *, size: int = 10, limit_seconds: float | None = None) -> asyncpg.Pool:
    """``limit_seconds`` (the service's pool): the longest a connection attempt, a statement or a
    lock wait (the ledger lock included) may take, so that no request waits without limit on
    a database that is away or stuck. The client-side limit, a little longer, also ends a
    wait on a connection whose server vanished without closing it. None: no limits (the
    CLI's audit and export run long statements on purpose)."""
    # synchronous_commit is on (PostgreSQL's default) and asserted: a reply means durable.
    # jit off: the ledger's SQL functions look costly to the planner on a long ledger and were
    # JIT-compiled at ~400 ms a call, for statements that run in a few milliseconds.
    server_settings = {"synchronous_commit": "on", "jit": "off", "application_name": "concord"}
    limits: dict[str, Any] = {}
    if limit_seconds is not None:
        milliseconds = str(round(limit_seconds * 1000))
        server_settings |= {"statement_timeout": milliseconds, "lock_timeout": milliseconds}
        limits = {"timeout": limit_seconds, "command_timeout": limit_seconds + 2}
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        init=_init_pool_connection,
        server_settings=server_settings,
        **limits,
    )
    assert pool is not None
    return pool


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, server_settings={"synchronous_commit": "on"})
    await _init_connection(conn)
    return conn
