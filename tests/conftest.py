"""Test databases: every test that needs PostgreSQL gets a fresh database of its own.

PostgreSQL comes from DATABASE_URL, else 127.0.0.1:5432 when it answers, else an embedded
server from pgserver (started once per test session under a temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from coordinator.app import create_app
from coordinator.db import connect
from coordinator.migrations import migrate
from coordinator.peers.tokens import create_api_token
from coordinator.settings import Settings

pytest_plugins = ["tests.mysql_fixtures"]

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A URL to a PostgreSQL database in which test databases may be created."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    if _answers("127.0.0.1", 5432):
        yield LOCAL_URL
        return
    from coordinator.embedded import start_embedded, stop_embedded

    with tempfile.TemporaryDirectory(prefix="concord-pg-") as tmp:
        server, _ = start_embedded(Path(tmp))
        try:
            yield server.get_uri("postgres")  # type: ignore[attr-defined]
        finally:
            stop_embedded(server)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database, dropped after the test."""
    name = f"concord_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres_admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(postgres_admin_url, name)
    finally:
        asyncio.run(_admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Tokens:
    operator: str
    reader: str


@pytest.fixture
async def tokens(database_url: str) -> Tokens:
    conn = await connect(database_url)
    try:
        await migrate(conn)
        return Tokens(
            operator=await create_api_token(conn, "operator"),
            reader=await create_api_token(conn, "reader"),
        )
    finally:
        await conn.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path, timezone="Europe/Amsterdam",
                    log_json=True)


@pytest.fixture
async def client(aiohttp_client, settings: Settings, tokens: Tokens) -> AsyncIterator[object]:
    yield await aiohttp_client(create_app(settings))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
