"""WHMCS databases for tests: each test that asks gets fresh MariaDB/MySQL databases of its own.

The server comes from CONCORD_TEST_MYSQL_URL, else mysql://root@127.0.0.1:3306/ when it answers;
otherwise the tests that need it are skipped, or fail when CONCORD_REQUIRE_MYSQL=1 (CI).
Enable with `pytest_plugins = ["tests.support.mysql_fixtures"]` in conftest.py
or `-p tests.support.mysql_fixtures`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from simulator.generator import StoreGenerator
from simulator.whmcs import (
    connection,
    create_database,
    drop_database,
    load_schema,
    load_store,
    parse_mysql_url,
)

LOCAL_MYSQL_URL = "mysql://root@127.0.0.1:3306/"
URL_VARIABLE = "CONCORD_TEST_MYSQL_URL"
REQUIRE_VARIABLE = "CONCORD_REQUIRE_MYSQL"

WhmcsDatabaseFactory = Callable[..., str]

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine to completion, also when called from code inside a running event loop
    (an async test calling the factory)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _answers(url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        async with connection(parse_mysql_url(url).with_database("")) as conn, conn.cursor() as cursor:
            await cursor.execute("SELECT 1")
        return None
    except Exception as error:
        return f"{type(error).__name__}: {error}"


def find_mysql_admin_url(environ: Mapping[str, str] = os.environ) -> tuple[str | None, str]:
    """The admin URL to use, or None with the reason no server answers."""
    configured = environ.get(URL_VARIABLE, "").strip()
    candidate = configured or LOCAL_MYSQL_URL
    problem = run_sync(_answers(candidate))
    if problem is None:
        return candidate, ""
    source = f"{URL_VARIABLE}={configured}" if configured else f"{LOCAL_MYSQL_URL} ({URL_VARIABLE} not set)"
    return None, f"{source} does not answer: {problem}"


def unreachable_message(reason: str) -> str:
    return (
        f"MySQL/MariaDB not reachable: set {URL_VARIABLE}=mysql://user:pass@host:port/ "
        f"to a server where databases may be created ({reason})"
    )


@pytest.fixture(scope="session")
def mysql_admin_url() -> str:
    """A URL (no database) of a MySQL/MariaDB server in which test databases may be created."""
    url, reason = find_mysql_admin_url()
    if url is None:
        message = unreachable_message(reason)
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{message}; {REQUIRE_VARIABLE}=1 requires it", pytrace=False)
        pytest.skip(message)
    return url


async def _create_whmcs_database(admin_url: str, name: str, store: StoreGenerator | None) -> str:
    url = await create_database(admin_url, name)
    async with connection(url) as conn:
        await load_schema(conn)
        if store is not None:
            await load_store(conn, store)
    return url


@pytest.fixture
def whmcs_database_factory(mysql_admin_url: str) -> Iterator[WhmcsDatabaseFactory]:
    """`make(store=None, *, name=None) -> url`: a fresh database with the WHMCS schema (and the
    store's base data when given); every database made is dropped after the test."""
    names: list[str] = []

    def make(store: StoreGenerator | None = None, *, name: str | None = None) -> str:
        database = name or f"concord_whmcs_{uuid.uuid4().hex[:12]}"
        names.append(database)
        return run_sync(_create_whmcs_database(mysql_admin_url, database, store))

    yield make
    for database in names:
        run_sync(drop_database(mysql_admin_url, database))


@pytest.fixture
def whmcs_database(whmcs_database_factory: WhmcsDatabaseFactory) -> str:
    """The URL of a fresh database with the WHMCS schema loaded and no rows, dropped afterwards."""
    return whmcs_database_factory()
