"""A PostgreSQL to create throwaway databases in, for the test suite and the benchmarks.

DATABASE_URL when set, else the server on 127.0.0.1:5432 when it answers, else an embedded
pgserver in a temporary directory (a fresh machine needs nothing installed). The service
itself never uses this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def admin_url() -> Iterator[tuple[str, str]]:
    """(URL of a database in which databases may be created, where it comes from)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"], "DATABASE_URL"
        return
    if _answers("127.0.0.1", 5432):
        yield LOCAL_URL, "local server on 127.0.0.1:5432"
        return
    from coordinator.embedded import start_embedded, stop_embedded

    # pgserver keeps a lock file in XDG_RUNTIME_DIR and touches it again at exit; left to
    # default to the temporary directory below, it would be re-created after its removal.
    runtime = Path(tempfile.gettempdir()) / "concord-scratch-runtime"
    runtime.mkdir(exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    with tempfile.TemporaryDirectory(prefix="concord-scratch-pg-") as tmp:
        server, _ = start_embedded(Path(tmp))
        try:
            yield server.get_uri("postgres"), "embedded pgserver"  # type: ignore[attr-defined]
        finally:
            stop_embedded(server)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def run_sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(admin: str, prefix: str) -> Iterator[str]:
    """A new empty database ``<prefix>_<random>``; dropped afterwards, connections or not."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(run_sql(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin, name)
    finally:
        asyncio.run(run_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
