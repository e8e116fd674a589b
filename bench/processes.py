"""The processes a benchmark starts (coordinators, agents, serving processes, py-spy): a free
port for each, a log file, a bounded wait until one answers its /healthz, a bounded stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class ProcessError(Exception):
    pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This process's environment without Concord's settings (a process gets only the
    settings the benchmark gives it), unbuffered so its log is complete when read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Process:
    """A child process writing stdout and stderr to ``log_path``."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def start(name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> Process:
    """Start ``argv`` in its own session, so a Ctrl-C reaches the benchmark only and its
    clean-up stops the process."""
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        popen = subprocess.Popen(
            argv,
            env=None if env is None else dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, popen, log_path)


def stop(process: Process, sig: signal.Signals = signal.SIGTERM, grace: float = STOP_TIMEOUT) -> None:
    """Signal the process and wait for it; SIGKILL if it does not exit within ``grace``."""
    if not process.running():
        return
    with contextlib.suppress(ProcessLookupError):
        process.popen.send_signal(sig)
    try:
        process.popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=grace)


async def stopped(
    process: Process, sig: signal.Signals = signal.SIGTERM, grace: float = STOP_TIMEOUT
) -> None:
    """``stop`` for a caller on an event loop, which must go on meanwhile."""
    await asyncio.to_thread(stop, process, sig, grace)


async def wait_healthy(process: Process, url: str, within: float = START_TIMEOUT) -> None:
    """Until ``url``/healthz answers 200; fails at once when the process exits."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while time.monotonic() < deadline:
            if not process.running():
                raise ProcessError(
                    f"{process.name} exited with {process.returncode} while starting:\n{process.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise ProcessError(
        f"{process.name}: {url}/healthz did not answer within {within:.0f} s:\n{process.log_tail()}"
    )
