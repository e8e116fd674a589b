"""Least privilege in PostgreSQL: the service's role may read and append to the ledger, never
change it or switch its append-only guard off, and the coordinator works with no more."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from coordinator.app import create_app
from coordinator.db import connect
from coordinator.embedded import embedded_service_url, start_embedded, stop_embedded
from coordinator.http.keys import POOL
from coordinator.migrations import migrate
from coordinator.service_role import SERVICE_ROLE
from coordinator.settings import Settings
from tests.conftest import Tokens
from tests.support.api_helpers import add_store, confirm, reserve

# What the service must never do to the ledger.
TAMPERING = (
    "ALTER TABLE events DISABLE TRIGGER events_append_only",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "UPDATE events SET type = type",
    "DELETE FROM events",
    "TRUNCATE events",
    "DROP TRIGGER events_append_only ON events",
)


async def assert_cannot_tamper(conn: asyncpg.Connection) -> None:
    for statement in TAMPERING:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)


def as_login(url: str, login: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


@pytest.fixture
async def service_login(database_url: str, tokens: Tokens) -> AsyncIterator[str]:
    """The external set-up of docs/operations.md: the test's superuser owns and migrated
    the ledger (``tokens``); a login of the service's own is a member of its group role."""
    login = f"concord_test_{uuid.uuid4().hex[:10]}"
    owner = await connect(database_url)
    try:
        await owner.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE "{SERVICE_ROLE}"')
        try:
            yield as_login(database_url, login)
        finally:
            await owner.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", login
            )
            await owner.execute(f'DROP ROLE "{login}"')
    finally:
        await owner.close()


async def test_the_service_login_cannot_change_the_ledger_and_still_numbers(
    aiohttp_client, service_login: str, database_url: str, tokens: Tokens, tmp_path: Path
) -> None:
    try:
        service = await connect(service_login)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        pytest.skip("this PostgreSQL asks new roles for a password")
    try:
        await assert_cannot_tamper(service)
    finally:
        await service.close()
    settings = Settings(
        database_url=service_login,
        migration_database_url=database_url,
        data_dir=tmp_path,
        timezone="UTC",
        log_json=True,
    )
    client = await aiohttp_client(create_app(settings))
    store = await add_store(client, tokens.operator)
    issued = await confirm(
        client, store["token"], (await reserve(client, store["token"], "1"))["reservation_id"]
    )
    assert (issued["number"], issued["state"]) == (1, "issued")
    assert await client.app[POOL].fetchval("SELECT current_user") == SERVICE_ROLE


async def test_a_superuser_url_serves_as_the_service_role(client, tokens: Tokens) -> None:
    """Defence in depth only (docs/operations.md): the pool's connections SET ROLE to the
    service's group role, so the service's own statements run without the login's rights."""
    store = await add_store(client, tokens.operator)
    assert (await reserve(client, store["token"], "1"))["number"] == 1
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == SERVICE_ROLE
        await assert_cannot_tamper(conn)


def test_the_embedded_postgres_serves_as_a_login_of_the_service_role(tmp_path: Path) -> None:
    server, owner = start_embedded(tmp_path / "var")
    try:
        asyncio.run(_check_embedded(owner, embedded_service_url(server)))
    finally:
        stop_embedded(server)


async def _check_embedded(owner_url: str, service_url: str) -> None:
    owner = await connect(owner_url)
    try:
        await migrate(owner)
    finally:
        await owner.close()
    service = await connect(service_url)
    try:
        assert await service.fetchval("SELECT pg_has_role($1, 'MEMBER')", SERVICE_ROLE)
        assert not await service.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        await assert_cannot_tamper(service)
    finally:
        await service.close()
