"""The PostgreSQL the benchmark runs against, and the fresh databases it creates in it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# A baseline opens at most this many connections: PostgreSQL's default max_connections is 100.
MAX_CONNECTIONS = 64


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def admin_url() -> Iterator[tuple[str, str]]:
    """(URL, where from): DATABASE_URL, else the local PostgreSQL on 5432, else pgserver."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"], "DATABASE_URL"
        return
    if _answers("127.0.0.1", 5432):
        yield LOCAL_URL, "local server on 127.0.0.1:5432"
        return
    from coordinator.embedded import start_embedded, stop_embedded

    # pgserver keeps a lock file in XDG_RUNTIME_DIR and touches it again at exit; left to
    # default to the temporary directory below, it would be re-created after its removal.
    runtime = Path(tempfile.gettempdir()) / "concord-bench-runtime"
    runtime.mkdir(exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    with tempfile.TemporaryDirectory(prefix="concord-bench-pg-") as tmp:
        server, _ = start_embedded(Path(tmp))
        try:
            yield server.get_uri("postgres"), "embedded pgserver"  # type: ignore[attr-defined]
        finally:
            stop_embedded(server)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


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
        host=unquote(host), port=str(parts.port or query.get("port", ["5432"])[0]),
        user=unquote(parts.username or "postgres"), password=unquote(parts.password or ""),
        dbname=parts.path.lstrip("/") or "postgres",
    )


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(admin: str, label: str) -> Iterator[str]:
    """A new empty database ``concord_bench_<label>_<random>``, dropped afterwards."""
    name = f"concord_bench_{label}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin, name)
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _checkpoint(url: str) -> None:
    with contextlib.suppress(asyncpg.PostgresError):  # needs superuser or pg_checkpoint
        await _admin(url, "CHECKPOINT")


def checkpoint(url: str) -> None:
    """Flush dirty pages now, so no run pays for the previous run's checkpoint."""
    asyncio.run(_checkpoint(url))


def analyze(url: str) -> None:
    """Refresh the planner's statistics (and so the plans cached on open connections)."""
    asyncio.run(_admin(url, "ANALYZE"))


async def _server_facts(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["server_version", "synchronous_commit", "fsync", "wal_sync_method",
             "shared_buffers", "max_connections"],
        )
    finally:
        await conn.close()
    return {r["name"]: r["setting"] for r in rows}


def server_facts(url: str) -> dict[str, str]:
    return asyncio.run(_server_facts(url))
