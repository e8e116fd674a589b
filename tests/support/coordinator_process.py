"""Coordinator replicas for tests: real ``python -m coordinator serve`` processes.

Each process serves on its own port, so tests exercise several replicas sharing one
PostgreSQL database the way production runs them.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.service_process import ServiceProcess, free_port


class CoordinatorProcess(ServiceProcess):
    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        name: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        port = port or free_port()
        self.database_url = database_url
        self.data_dir = data_dir
        super().__init__(
            name,
            data_dir / f"{name}.log",
            "coordinator",
            ["--database-url", database_url, "serve", "--host", "127.0.0.1", "--port", str(port)],
            {
                "CONCORD_DATA_DIR": str(data_dir),
                "CONCORD_LOG_LEVEL": "warning",
                "CONCORD_LOG_JSON": "true",
                **(env or {}),
            },
            port,
        )
