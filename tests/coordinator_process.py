"""Coordinator server processes for tests: start, wait until healthy, SIGKILL, restart, stop.

Each process is a real ``python -m coordinator serve`` on its own port, so tests exercise
several replicas sharing one PostgreSQL database the way production runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp


def _ephemeral_ports() -> tuple[int, int]:
    with contextlib.suppress(OSError, ValueError):
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    return 32768, 60999


def free_port() -> int:
    """A TCP port nobody uses right now, outside the ephemeral range when possible.

    A replica restarted after SIGKILL binds the same port again; a port from the ephemeral
    range could meanwhile be the local end of some client connection and refuse the bind.
    """
    low, high = _ephemeral_ports()
    candidates = [p for p in range(20000, 32768) if not low <= p <= high]
    for port in random.sample(candidates, min(50, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CoordinatorProcess:
    """One coordinator replica; ``kill`` and ``start`` again keep its port."""

    def __init__(self, database_url: str, data_dir: Path, name: str, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.name = name
        self.port = port or free_port()
        self.log_path = data_dir / f"{name}.log"
        self.starts = 0
        self._env = env or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def start(self, startup_seconds: float = 30.0) -> None:
        """Spawn the server and return once GET /healthz answers 200."""
        self._spawn()
        await self._wait_healthy(startup_seconds)

    def _spawn(self) -> None:
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        env.update({
            "CONCORD_DATA_DIR": str(self.data_dir),
            "CONCORD_LOG_LEVEL": "warning",
            "CONCORD_LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            **self._env,
        })
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start #{self.starts + 1} on port {self.port}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "--database-url", self.database_url,
             "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.starts += 1

    async def _wait_healthy(self, within: float) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with code {self._proc.returncode} while starting:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    async with session.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        self._terminate(signal.SIGKILL)
        raise RuntimeError(f"{self.name} did not become healthy within {within:.0f}s:\n"
                           f"{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown, in-flight requests are cut off."""
        self._terminate(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if the process does not exit in time."""
        self._terminate(signal.SIGTERM, timeout)

    def _terminate(self, sig: signal.Signals, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return "(no log)"
