"""The embedded PostgreSQL (pgserver) used when no database URL is configured.

Least privilege out of the box: the cluster's superuser owns the ledger and migrates (a
private cluster under the data directory, reached over its Unix socket only), and the
service logs in as SERVICE_LOGIN, a member of the service's group role, which may read and
append to the ledger but not change it (coordinator/service_role.py).
"""

from __future__ import annotations

import asyncio
import os
import warnings
from pathlib import Path

import asyncpg

from coordinator.service_role import SERVICE_ROLE

DATABASE = "concord"
SERVICE_LOGIN = "concord_app"


def start_embedded(data_dir: Path) -> tuple[object, str]:
    """Start (or join) the PostgreSQL under ``data_dir``; return (server, URL of our database
    as its owner, the superuser).

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


def embedded_service_url(server: object) -> str:
    """The URL of our database as the service's login."""
    return server.get_postmaster_info().get_uri(  # type: ignore[attr-defined]
        user=SERVICE_LOGIN, database=DATABASE
    )


def stop_embedded(server: object) -> None:
    server.cleanup()  # type: ignore[attr-defined]


async def _ensure_database(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        # The group role gets its rights from the migrations; it is made here too so that
        # the login can join it before the first migration ran.
        for role, login in ((SERVICE_ROLE, "NOLOGIN"), (SERVICE_LOGIN, "LOGIN")):
            if not await conn.fetchval("SELECT to_regrole($1) IS NOT NULL", role):
                await conn.execute(f'CREATE ROLE "{role}" {login}')
        await conn.execute(f'GRANT "{SERVICE_ROLE}" TO "{SERVICE_LOGIN}"')
    finally:
        await conn.close()
