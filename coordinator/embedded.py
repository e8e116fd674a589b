"""The embedded PostgreSQL (pgserver) used when no database URL is configured."""

from __future__ import annotations

import asyncio
import os
import warnings
from pathlib import Path

import asyncpg

DATABASE = "concord"


def start_embedded(data_dir: Path) -> tuple[object, str]:
    """Start (or join) the PostgreSQL under ``data_dir``; return (server, URL of our database).

    pgserver counts the processes using a data directory and stops PostgreSQL when the last
    one exits, so ``concord serve`` and CLI commands can share it.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path(data_dir).resolve()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    asyncio.run(_ensure_database(server.get_uri("postgres")))
    return server, server.get_uri(DATABASE)


def stop_embedded(server: object) -> None:
    server.cleanup()  # type: ignore[attr-defined]


async def _ensure_database(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
