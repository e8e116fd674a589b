"""The connection to WHMCS's MySQL/MariaDB: URL or configuration.php, pool, agent tables."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncmy
import asyncmy.errors
from asyncmy.cursors import DictCursor


@dataclass(frozen=True)
class MysqlTarget:
    host: str
    port: int
    user: str
    password: str
    database: str

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "db": self.database,
        }


def parse_mysql_url(url: str) -> MysqlTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"{url!r} is not a mysql://user:pass@host:port/database URL")
    database = parts.path.lstrip("/")
    if not database:
        raise ValueError(f"{url!r} names no database (mysql://user:pass@host:port/DATABASE)")
    return MysqlTarget(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
    )


# A PHP token: a quoted string, a comment, or anything else up to the next of those.
_PHP_TOKENS = re.compile(
    r"""'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|//[^\n]*|#[^\n]*|/\*.*?\*/|[^'"/#]+|.""", re.DOTALL
)
_PHP_ASSIGNMENT = re.compile(r"""\$(db_\w+)\s*=\s*('(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|\d+)\s*;""")
_DOUBLE_QUOTED_ESCAPES = re.compile(r"""\\([\\"$nrtv0]|x[0-9a-fA-F]{1,2})""")


def _php_code_without_comments(text: str) -> str:
    kept = []
    for token in _PHP_TOKENS.findall(text):
        if token.startswith(("//", "#", "/*")):
            kept.append(" ")
        else:
            kept.append(token)
    return "".join(kept)


def _php_literal(raw: str) -> str:
    if raw.startswith("'"):
        return re.sub(r"\\([\\'])", r"\1", raw[1:-1])

    def escape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("x"):
            return chr(int(code[1:], 16))
        return {"n": "\n", "r": "\r", "t": "\t", "v": "\v", "0": "\0"}.get(code, code)

    return _DOUBLE_QUOTED_ESCAPES.sub(escape, raw[1:-1]) if raw.startswith('"') else raw


def read_configuration_php(path: Path) -> MysqlTarget:
    """The database credentials WHMCS itself uses ($db_host, $db_port, $db_username, …).

    Commented-out assignments are ignored; the last live assignment wins, as in PHP.
    """
    code = _php_code_without_comments(path.read_text(encoding="utf-8", errors="replace"))
    values = {m.group(1): _php_literal(m.group(2)) for m in _PHP_ASSIGNMENT.finditer(code)}
    missing = [k for k in ("db_host", "db_username", "db_name") if k not in values]
    if missing:
        raise ValueError(f"{path}: no {', '.join('$' + k for k in missing)} found")
    host, _, port_in_host = values["db_host"].partition(":")
    port = values.get("db_port") or port_in_host or "3306"
    return MysqlTarget(
        host=host or "127.0.0.1",
        port=int(port),
        user=values["db_username"],
        password=values.get("db_password", ""),
        database=values["db_name"],
    )


async def create_pool(target: MysqlTarget, *, size: int = 5) -> Any:
    return await asyncmy.create_pool(
        minsize=1,
        maxsize=size,
        autocommit=True,
        charset="utf8mb4",
        cursor_cls=DictCursor,
        pool_recycle=600,
        **target.connect_kwargs(),
    )


_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")


async def create_agent_tables(pool: Any) -> None:
    """Create the mod_concord_* tables this database lacks (only those: no notes, no locks)."""
    sql = resources.files("agent.whmcs").joinpath("tables.sql").read_text(encoding="utf-8")
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "SELECT table_name AS t FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_name LIKE 'mod_concord_%%'"
        )
        present = {row["t"] for row in await cur.fetchall()}
        for statement in (s.strip() for s in sql.split(";")):
            match = _CREATE_TABLE.search(statement)
            if match and match.group(1) not in present:
                await cur.execute(statement)


@asynccontextmanager
async def in_transaction(conn: Any) -> AsyncIterator[Any]:
    """A cursor inside BEGIN … COMMIT, rolled back on any error."""
    await conn.begin()
    try:
        async with conn.cursor() as cursor:
            yield cursor
        await conn.commit()
    except BaseException:
        # A query cancelled midway (the agent stops) leaves asyncmy's connection closed, and
        # its rollback raises InterfaceError: that must not stand in for the cancellation,
        # which no job may mistake for a failed write (and retry, or release the numbers of
        # a COMMIT that may have gone through). The pool drops the connection.
        with contextlib.suppress(asyncmy.errors.Error):
            await conn.rollback()
        raise
