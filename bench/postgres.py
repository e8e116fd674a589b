"""The PostgreSQL the benchmark runs against, and the fresh databases it creates in it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from simulator import scratch_postgres
from simulator.scratch_postgres import admin_url, run_sql, with_database

__all__ = [
    "admin_url",
    "analyze",
    "checkpoint",
    "connected",
    "fresh_database",
    "server_facts",
    "url_parts",
    "with_database",
]

# A baseline opens at most this many connections: PostgreSQL's default max_connections is 100.
MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class Parts:
    """A URL split into the fields libpq-style clients (psycopg via eventsourcing) take."""

    host: str
    port: str
    user: str
    password: str
    dbname: str


def url_parts(url: str) -> Parts:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    # pgserver URLs name a Unix socket directory in ?host= rather than in the netloc.
    host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
    return Parts(
        host=unquote(host),
        port=str(parts.port or query.get("port", ["5432"])[0]),
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        dbname=parts.path.lstrip("/") or "postgres",
    )


def fresh_database(admin: str, label: str) -> contextlib.AbstractContextManager[str]:
    """A new empty database ``concord_bench_<label>_<random>``, dropped afterwards."""
    return scratch_postgres.fresh_database(admin, f"concord_bench_{label}")


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to ``url`` (no pool, no set-up), closed on leaving."""
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def _checkpoint(url: str) -> None:
    with contextlib.suppress(asyncpg.PostgresError):  # needs superuser or pg_checkpoint
        await run_sql(url, "CHECKPOINT")


def checkpoint(url: str) -> None:
    """Flush dirty pages now, so no run pays for the previous run's checkpoint."""
    asyncio.run(_checkpoint(url))


def analyze(url: str) -> None:
    """Refresh the planner's statistics (and so the plans cached on open connections)."""
    asyncio.run(run_sql(url, "ANALYZE"))


async def _server_facts(url: str) -> dict[str, str]:
    async with connected(url) as conn:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            [
                "server_version",
                "synchronous_commit",
                "fsync",
                "wal_sync_method",
                "shared_buffers",
                "max_connections",
            ],
        )
    return {r["name"]: r["setting"] for r in rows}


def server_facts(url: str) -> dict[str, str]:
    return asyncio.run(_server_facts(url))
