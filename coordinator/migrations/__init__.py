"""Schema migrations: ordered SQL files applied once each, under an advisory lock."""

from __future__ import annotations

from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# Session-level lock so replicas starting together apply each file exactly once.
MIGRATION_LOCK = 0x436F6E636F7264_01  # "Concord" + 1


def migration_files() -> list[tuple[str, str]]:
    files = sorted(
        (f.name, f.read_text(encoding="utf-8"))
        for f in resources.files(__package__).iterdir()
        if f.name.endswith(".sql")
    )
    return files


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; return their names."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS concord_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM concord_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO concord_migrations (name) VALUES ($1)", name)
            log.info("migration_applied", migration=name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now
