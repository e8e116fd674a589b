"""Baseline (a): one transaction per number on a counter row, over asyncpg.

The textbook gapless counter: ``UPDATE counter ... RETURNING`` takes the row lock, the number
row (with the same document snapshot Concord stores) is inserted, COMMIT. Each number costs
one commit, and the row lock serialises them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson

from bench.cpu import CpuMeter
from bench.load import DOCUMENT, on_uvloop
from bench.postgres import connected, url_parts

SCHEMA = """
CREATE TABLE counter (id int PRIMARY KEY, next bigint NOT NULL);
INSERT INTO counter VALUES (1, 1);
CREATE TABLE numbers (
    number    bigint PRIMARY KEY,
    doc_id    text   NOT NULL UNIQUE,
    document  jsonb  NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now()
);
"""
# Its best pool on 2 cores (of 1 to 64 tried): more connections only queue on the row lock
# and wake each other, 64 give about a third of what 4 do.
CONNECTIONS = 4
NEXT = "UPDATE counter SET next = next + 1 WHERE id = 1 RETURNING next - 1"
INSERT = "INSERT INTO numbers (number, doc_id, document) VALUES ($1, $2, $3::jsonb)"


async def _run(
    url: str, *, concurrency: int, duration: float, warmup: float, connections: int, meter: CpuMeter
) -> dict[str, Any]:
    async with connected(url) as setup:
        await setup.execute(SCHEMA)
    document = orjson.dumps(DOCUMENT).decode()
    # synchronous_commit stays on, as for Concord: a number is durable when COMMIT returns.
    pool = await asyncpg.create_pool(
        url, min_size=connections, max_size=connections, server_settings={"synchronous_commit": "on"}
    )
    assert pool is not None
    count = errors = 0
    try:
        meter.start()
        begin = time.monotonic()
        window = (begin + warmup, begin + warmup + duration)

        async def worker(index: int) -> None:
            nonlocal count, errors
            seq = 0
            while time.monotonic() < window[1]:
                seq += 1
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        number = await conn.fetchval(NEXT)
                        await conn.execute(INSERT, number, f"w{index}-{seq}", document)
                except asyncpg.PostgresError:
                    errors += 1
                    continue
                if window[0] <= time.monotonic() <= window[1]:
                    count += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        cores = meter.stop()
        async with pool.acquire() as conn:
            issued, highest = await conn.fetchrow("SELECT count(*), max(number) FROM numbers")
    finally:
        await pool.close()
    return {
        "numbers": count,
        "window": duration,
        "errors": errors,
        "cores": cores,
        "gapless": issued == highest,
    }


def run(
    url: str, *, concurrency: int, duration: float, warmup: float, connections: int = CONNECTIONS
) -> dict[str, Any]:
    return on_uvloop(
        _run(
            url,
            concurrency=concurrency,
            duration=duration,
            warmup=warmup,
            connections=connections,
            meter=CpuMeter(database=url_parts(url).dbname),
        )
    )
