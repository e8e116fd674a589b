"""Real server processes for tests: spawn, wait until ``/healthz`` answers, SIGKILL, restart.

A subclass names the command and its environment; a process restarted after SIGKILL keeps
its port, its log file and its environment, the way an operator's supervisor restarts it.
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

    A process restarted after SIGKILL binds the same port again; a port from the ephemeral
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


class ServiceProcess:
    """One server process on a fixed port; ``kill`` and ``spawn``/``start`` again keep it."""

    def __init__(
        self,
        name: str,
        log_path: Path,
        module: str,
        args: list[str],
        environment: dict[str, str],
        port: int | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.port = port or free_port()
        self.starts = 0
        self._argv = [sys.executable, "-m", module, *args]
        self._environment = environment
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

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def spawn(self) -> None:
        """Start the process and return at once (it may still be importing)."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Only what the test sets: no CONCORD_* setting of the machine leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        env.update({"PYTHONUNBUFFERED": "1", **self._environment})
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start #{self.starts + 1} on port {self.port}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self._argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.starts += 1

    async def start(self, within: float = 30.0) -> None:
        """Spawn and return once ``/healthz`` answers 200."""
        self.spawn()
        await self.wait_healthy(within)

    async def healthy(self) -> bool:
        """One ``/healthz`` probe."""
        try:
            timeout = aiohttp.ClientTimeout(total=1)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{self.url}/healthz") as resp,
            ):
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_healthy(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self._proc.returncode} while starting:\n{self.log_tail()}"
                )
            if await self.healthy():
                return
            await asyncio.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} not healthy within {within:.0f}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown, whatever it was doing is cut off."""
        self._terminate(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
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
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:]) if text else "(no log)"
