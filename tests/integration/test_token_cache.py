"""Bearer tokens resolve from a short-lived cache: one lookup at a time, never a burst."""

from __future__ import annotations

import asyncio

from coordinator.db import connect, create_pool
from coordinator.peers.tokens import Principal, TokenCache


class CountingCache(TokenCache):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lookups = 0
        self.looking = asyncio.Event()  # set by each lookup as it starts
        self.gate = asyncio.Event()
        self.gate.set()

    async def _lookup(self, digest: str) -> Principal | None:
        self.lookups += 1
        self.looking.set()
        await self.gate.wait()
        return await super()._lookup(digest)


async def test_concurrent_requests_share_one_lookup(database_url, tokens) -> None:
    pool = await create_pool(database_url, size=4)
    try:
        cache = CountingCache(pool, ttl=60)
        cache.gate.clear()
        waiting = [asyncio.create_task(cache.resolve(tokens.reader)) for _ in range(50)]
        # The 50 asked in one turn of the loop, before the one lookup could start.
        await asyncio.wait_for(cache.looking.wait(), 5)
        cache.gate.set()
        answers = await asyncio.gather(*waiting)
        assert {a.role for a in answers if a} == {"reader"} and len(answers) == 50
        assert cache.lookups == 1
        assert (await cache.resolve("not-a-token")) is None
        assert cache.lookups == 2
    finally:
        await pool.close()


async def test_an_answer_near_its_end_is_renewed_in_the_background(database_url, tokens) -> None:
    pool = await create_pool(database_url, size=4)
    try:
        cache = CountingCache(pool, ttl=0.4)
        assert (await cache.resolve(tokens.operator)).role == "operator"
        # Into the last quarter of the answer's life: served at once, renewed meanwhile.
        await asyncio.sleep(0.32)  # the answer's age is what is tested
        cache.gate.clear()
        cache.looking.clear()
        assert (await cache.resolve(tokens.operator)).role == "operator"  # not held up
        await asyncio.wait_for(cache.looking.wait(), 5)
        assert cache.lookups == 2  # the renewal runs, waiting at the gate
        assert (await cache.resolve(tokens.operator)).role == "operator"
        assert cache.lookups == 2  # one renewal at a time
        cache.gate.set()
    finally:
        await pool.close()


async def test_a_deleted_token_stops_working_once_forgotten(database_url, tokens) -> None:
    pool = await create_pool(database_url, size=4)
    try:
        cache = CountingCache(pool, ttl=60)
        assert (await cache.resolve(tokens.reader)).role == "reader"
        conn = await connect(database_url)
        try:
            await conn.execute("DELETE FROM api_tokens WHERE role = 'reader'")
        finally:
            await conn.close()
        assert (await cache.resolve(tokens.reader)).role == "reader"  # cached for its ttl
        # A lookup begun before forget() does not put the old answer back.
        cache.gate.clear()
        cache.looking.clear()
        stale = asyncio.create_task(cache._remember(next(iter(cache._cache))))
        await asyncio.wait_for(cache.looking.wait(), 5)
        cache.forget()
        cache.gate.set()
        await stale
        assert await cache.resolve(tokens.reader) is None
    finally:
        await pool.close()
