"""API tokens: 32 random bytes shown once, stored only as SHA-256, compared in constant time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import asyncpg


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    role: str  # operator | reader | peer
    peer_id: str | None = None
    peer_name: str | None = None


async def create_api_token(conn: asyncpg.Connection, role: str, label: str = "") -> str:
    if role not in ("operator", "reader"):
        raise ValueError(f"role must be operator or reader, not {role!r}")
    token = new_token()
    await conn.execute(
        "INSERT INTO api_tokens (token_sha256, role, label) VALUES ($1, $2, $3)",
        token_sha256(token),
        role,
        label,
    )
    return token


class TokenCache:
    """Resolves a bearer token to a principal.

    Answers are cached for ``ttl`` seconds to keep the database off the hot path; a rotated
    or retired peer token therefore stops working on other replicas within ``ttl``. One
    lookup per token at a time: the requests that find its answer expired wait for that
    lookup rather than each making its own (a burst of lookups every ``ttl`` would queue on
    the pool and show in every client's tail latency). An answer in the last quarter of its
    life is served while one lookup renews it in the background, so a busy token never waits.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float = 2.0) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._looking: dict[str, asyncio.Task[Principal | None]] = {}
        self._generation = 0  # moved by forget(): a lookup begun before it is not kept

    def forget(self) -> None:
        self._cache.clear()
        self._looking.clear()
        self._generation += 1

    async def resolve(self, token: str) -> Principal | None:
        digest = token_sha256(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            if cached[0] - now < self._ttl / 4:
                self._renew(digest)
            return cached[1]
        return await asyncio.shield(self._renew(digest))

    def _renew(self, digest: str) -> asyncio.Task[Principal | None]:
        task = self._looking.get(digest)
        if task is None:
            task = self._looking[digest] = asyncio.create_task(self._remember(digest))
        return task

    async def _remember(self, digest: str) -> Principal | None:
        generation = self._generation
        try:
            principal = await self._lookup(digest)
        finally:
            if generation == self._generation:
                del self._looking[digest]
        if generation != self._generation:
            return principal
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self._ttl, principal)
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
        row = await self._pool.fetchrow(
            "SELECT token_sha256, role, NULL::text AS peer_id, NULL AS name FROM api_tokens"
            " WHERE token_sha256 = $1"
            " UNION ALL SELECT token_sha256, 'peer', id::text, name FROM peers"
            " WHERE token_sha256 = $1 AND state = 'active' LIMIT 1",
            digest,
        )
        # The index found the row by digest; compare again in constant time all the same.
        if row is None or not hmac.compare_digest(row["token_sha256"], digest):
            return None
        return Principal(role=row["role"], peer_id=row["peer_id"], peer_name=row["name"])
