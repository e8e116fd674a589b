"""API tokens: 32 random bytes shown once, stored only as SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import asyncpg

ROLES = ("operator", "reader", "peer")


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
        token_sha256(token), role, label,
    )
    return token


class TokenCache:
    """Resolves a bearer token to a principal.

    Answers are cached for ``ttl`` seconds to keep the database off the hot path; a rotated
    or retired peer token therefore stops working on other replicas within ``ttl``.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float = 2.0) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def resolve(self, token: str) -> Principal | None:
        digest = token_sha256(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await self._lookup(digest)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, principal)
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
