"""Test databases: every test that needs PostgreSQL gets a fresh database of its own.

PostgreSQL comes from DATABASE_URL, else 127.0.0.1:5432 when it answers, else an embedded
server from pgserver, started once per test session (simulator/scratch_postgres.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.app import create_app
from coordinator.db import connect
from coordinator.migrations import migrate
from coordinator.peers.tokens import create_api_token
from coordinator.settings import Settings
from simulator.scratch_postgres import admin_url, fresh_database
from tests.support.coordinator_process import CoordinatorProcess

pytest_plugins = ["tests.support.mysql_fixtures", "tests.support.agent_parts"]


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A URL to a PostgreSQL database in which test databases may be created."""
    with admin_url() as (url, _):
        yield url


@pytest.fixture
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database, dropped after the test."""
    with fresh_database(postgres_admin_url, "concord_test") as url:
        yield url


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
    return Settings(database_url=database_url, data_dir=tmp_path, timezone="Europe/Amsterdam", log_json=True)


@pytest.fixture
async def client(aiohttp_client, settings: Settings, tokens: Tokens) -> AsyncIterator[object]:
    yield await aiohttp_client(create_app(settings))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def replicas(
    database_url: str, tokens: Tokens, tmp_path: Path
) -> AsyncIterator[list[CoordinatorProcess]]:
    """Two coordinator processes serving the same fresh database."""
    procs = [CoordinatorProcess(database_url, tmp_path, f"coordinator-{n}") for n in "ab"]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield procs
    finally:
        for p in procs:
            p.stop()
