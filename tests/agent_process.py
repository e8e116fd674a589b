"""Agent processes for tests: a real ``python -m agent serve`` beside one WHMCS database.

Start it, wait until its ``/healthz`` answers (it starts its HTTP server only after its
first heartbeat reached the coordinator), SIGKILL it, start it again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp

from tests.coordinator_process import free_port

# Short intervals so that tests settle within seconds.
FAST_LOOPS = {
    "CONCORD_AGENT_POLL_SECONDS": "0.2",
    "CONCORD_AGENT_UPDATE_SCAN_SECONDS": "1",
    "CONCORD_AGENT_HEARTBEAT_SECONDS": "1",
}


class AgentProcess:
    """One store's agent; ``kill`` and ``spawn``/``start`` again keep its port."""

    def __init__(self, store: str, whmcs_url: str, coordinator_url: str, token: str,
                 log_dir: Path, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.store = store
        self.whmcs_url = whmcs_url
        self.coordinator_url = coordinator_url
        self.token = token
        self.log_dir = log_dir
        self.port = port or free_port()
        self.log_path = log_dir / f"agent-{store}.log"
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

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def spawn(self) -> None:
        """Start the process and return at once (it may still be importing)."""
        if self.running():
            raise RuntimeError(f"agent {self.store} is already running (pid {self.pid})")
        self._close_log()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        env.update({
            "CONCORD_AGENT_WHMCS_URL": self.whmcs_url,
            "CONCORD_AGENT_COORDINATOR_URL": self.coordinator_url,
            "CONCORD_AGENT_TOKEN": self.token,
            "CONCORD_AGENT_STORE": self.store,
            "CONCORD_AGENT_HOST": "127.0.0.1",
            "CONCORD_AGENT_PORT": str(self.port),
            "CONCORD_AGENT_LOG_LEVEL": "warning",
            "CONCORD_AGENT_LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            **FAST_LOOPS,
            **self._env,
        })
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start #{self.starts + 1} on port {self.port}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
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
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(f"{self.url}/healthz") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_healthy(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"agent {self.store} exited with code {self._proc.returncode}"
                                   f" while starting:\n{self.log_tail()}")
            if await self.healthy():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"agent {self.store} not healthy within {within:.0f}s:\n"
                           f"{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup; whatever it was doing is cut off."""
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
