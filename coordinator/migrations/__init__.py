"""Schema migrations: numbered SQL files applied once each, SQL functions re-created whenever
their file changes, the service's role granted its rights, all under an advisory lock, each
file's sha256 recorded.

- ``NNNN_name.sql``: applied once, in order, each in its own transaction. An applied file
  must never change: when its checksum differs from the one recorded, ``migrate`` refuses
  (and with it ``serve``), naming the file. A change goes in a new numbered file.
- ``functions/NAME.sql``: one SQL function per file (``CREATE OR REPLACE``), run after the
  numbered files whenever its checksum differs from the one recorded, so a fix to a
  function changes its one definition instead of restating it in a new migration.

Rows recorded before checksums existed get the checksum of the file as it is now (see
docs/operations.md, "Database roles and migrations", for why that is safe for 0002 and
0006, which were edited after they were first applied).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg
import structlog

from coordinator.advisory_locks import MIGRATIONS
from coordinator.service_role import SERVICE_ROLE

log = structlog.get_logger(__name__)

FUNCTIONS = "functions"
# The row recording for which files' state the service's role was last granted its rights.
GRANTS = "grants to the service role"


class MigrationError(Exception):
    """The database cannot be brought to this version's schema: the message says why."""


@dataclass(frozen=True)
class SqlFile:
    name: str  # as recorded in concord_migrations: "0001_ledger.sql", "functions/….sql"
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def only_comments(self) -> bool:
        """Nothing to run: a migration whose work moved elsewhere keeps its place and note
        (PostgreSQL answers an empty query with a message asyncpg cannot take)."""
        return all(not line.strip() or line.lstrip().startswith("--") for line in self.sql.splitlines())


def _sql_files(folder: Traversable, prefix: str = "") -> list[SqlFile]:
    return sorted(
        (
            SqlFile(prefix + f.name, f.read_text(encoding="utf-8"))
            for f in folder.iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )


def migration_files() -> list[SqlFile]:
    return _sql_files(resources.files(__package__))


def function_files() -> list[SqlFile]:
    return _sql_files(resources.files(__package__) / FUNCTIONS, f"{FUNCTIONS}/")


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks, re-create the functions whose file changed
    and grant the service's role its rights on what changed; return the names of the files
    run. Raises MigrationError when an applied migration changed, or when this login may not
    make the changes needed. A database already up to date is only read, so the service's
    own role may call this to check.

    It works as the session's login, also on a pool connection that entered the service's
    role (coordinator/service_role.py): the schema's objects belong to the login that
    migrates."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS)
    try:
        async with _as_login(conn):
            return await _migrate(conn)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationError(
            f"this database role cannot migrate the database ({exc}); run "
            "`concord migrate` as the ledger's owner "
            "(CONCORD_MIGRATION_DATABASE_URL)"
        ) from exc
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS)


async def _migrate(conn: asyncpg.Connection) -> list[str]:
    recorded = await _recorded(conn)
    numbered = migration_files()
    changed = [f.name for f in numbered if recorded.get(f.name) not in (None, "", f.sha256)]
    if changed:
        raise MigrationError(
            f"migration {', '.join(changed)} changed after it was applied to this "
            "database (its sha256 differs from the one recorded in concord_migrations); "
            "restore the file as it was applied and put the change in a new migration"
        )
    functions = function_files()
    ran: list[str] = []
    for f in numbered:
        if recorded.get(f.name) == "":  # applied before checksums were recorded
            await _record(conn, f.name, f.sha256)
    for f in [f for f in numbered if f.name not in recorded] + [
        f for f in functions if recorded.get(f.name) != f.sha256
    ]:
        async with conn.transaction():
            if not f.only_comments:
                await conn.execute(f.sql)
            await _record(conn, f.name, f.sha256)
        log.info("migration_applied", migration=f.name)
        ran.append(f.name)
    await _grant_service(conn, recorded.get(GRANTS), numbered + functions)
    return ran


@contextlib.asynccontextmanager
async def _as_login(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Work as the session's login, not a role the connection SET ROLE to."""
    entered = await conn.fetchval("SELECT CASE WHEN current_user <> session_user THEN current_user::text END")
    if entered is not None:
        await conn.execute("SET ROLE NONE")
    try:
        yield
    finally:
        if entered is not None:
            await conn.execute("SELECT set_config('role', $1, false)", entered)


async def _grant_service(conn: asyncpg.Connection, granted_for: str | None, files: list[SqlFile]) -> None:
    """Grant the service's role its rights (functions/concord_grant_service.sql) once for
    each state of the schema: recorded under GRANTS with a digest of every file's checksum,
    so that tables a migration adds are granted too, and a failed grant is tried again."""
    digest = hashlib.sha256(" ".join(f"{f.name}={f.sha256}" for f in files).encode()).hexdigest()
    if granted_for == digest:
        return
    try:
        async with conn.transaction():
            await conn.execute("SELECT concord_grant_service($1)", SERVICE_ROLE)
            await _record(conn, GRANTS, digest)
    except asyncpg.InsufficientPrivilegeError as exc:
        if await conn.fetchval("SELECT to_regrole($1) IS NOT NULL", SERVICE_ROLE):
            raise
        raise MigrationError(
            f"the service's group role {SERVICE_ROLE} does not exist and this database role "
            f"may not create it: as a superuser, run CREATE ROLE {SERVICE_ROLE} NOLOGIN, then "
            "`concord migrate` again (docs/operations.md, 'Database roles and migrations')"
        ) from exc
    log.info("service_role_granted", role=SERVICE_ROLE)


async def _recorded(conn: asyncpg.Connection) -> dict[str, str]:
    """Name -> sha256 of every file run so far ("" when recorded before checksums)."""
    if await conn.fetchval("SELECT to_regclass('concord_migrations') IS NULL"):
        await conn.execute(
            "CREATE TABLE concord_migrations (name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now(), sha256 text)"
        )
    elif not await conn.fetchval(
        "SELECT 1 FROM pg_attribute WHERE attrelid = 'concord_migrations'::regclass"
        " AND attname = 'sha256' AND NOT attisdropped"
    ):
        await conn.execute("ALTER TABLE concord_migrations ADD COLUMN sha256 text")
    return {
        r["name"]: r["sha256"] or "" for r in await conn.fetch("SELECT name, sha256 FROM concord_migrations")
    }


async def _record(conn: asyncpg.Connection, name: str, sha256: str) -> None:
    await conn.execute(
        "INSERT INTO concord_migrations (name, sha256) VALUES ($1, $2) ON CONFLICT (name)"
        " DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()",
        name,
        sha256,
    )
