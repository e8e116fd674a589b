"""A PostgreSQL cluster of a test's own, to stop and start at will: pgserver's binaries
under a temporary directory, so it works on a machine with no PostgreSQL installed."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import asyncpg


class ScratchCluster:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(root))  # pgserver's lock files
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver._commands import pg_ctl

        self._pg_ctl = pg_ctl
        self._server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")

    def url(self, database: str = "postgres") -> str:
        return self._server.get_uri(database)

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def stop(self) -> None:
        """As an operator's restart or a failover does: clients are disconnected at once."""
        self._pg_ctl(
            ["-w", "-m", "fast", "stop"],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
            timeout=30,
        )

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def close(self) -> None:
        self._server.cleanup()
