"""Runs the HTTP load in client processes (``bench.client``) against a coordinator cluster."""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import orjson

from bench.coordinator import Cluster
from bench.cpu import CpuMeter
from bench.load import REQUEST_TIMEOUT

READY_TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parent.parent


class DriveError(Exception):
    pass


class _Client:
    def __init__(self, args: list[str], stack: contextlib.ExitStack) -> None:
        self.errors: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.client", *args],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
        )
        stack.callback(self.close)

    def read_line(self, deadline: float) -> str:
        out = self.process.stdout
        assert out is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([out], [], [], remaining)[0]:
            raise DriveError(f"client {self.process.pid} did not answer in time")
        line = out.readline()
        if not line:
            self.errors.seek(0)
            raise DriveError(
                f"client {self.process.pid} exited: {self.errors.read()[-2000:].decode(errors='replace')}"
            )
        return line.strip()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # the client exits when its stdin closes
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def run_clients(
    cluster: Cluster,
    database: str,
    mode: str,
    *,
    processes: int,
    duration: float,
    warmup: float,
    concurrency: int = 64,
    rate: float = 500.0,
    http: str = "raw",
    tag: str = "",
) -> dict[str, Any]:
    """Start ``processes`` clients sharing the concurrency (or rate); sum their results.

    ``tag`` keeps the doc_ids of several runs against one database apart.
    """
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    targets = [arg for url in cluster.urls for arg in ("--target", url)]
    with contextlib.ExitStack() as stack:
        clients = [
            _Client(
                [
                    mode,
                    *targets,
                    f"--token={cluster.peer_token}",
                    "--prefix",
                    f"{tag}{mode}{index}",
                    "--concurrency",
                    str(share),
                    "--rate",
                    str(rate / processes),
                    "--duration",
                    str(duration),
                    "--warmup",
                    str(warmup),
                    "--http",
                    http,
                ],
                stack,
            )
            for index, share in enumerate(shares)
        ]
        deadline = time.monotonic() + READY_TIMEOUT
        for client in clients:
            if client.read_line(deadline) != "ready":
                raise DriveError(f"client {client.process.pid} did not get ready")
        meter = CpuMeter(
            {"coordinator": cluster.pids, "client": [c.process.pid for c in clients]}, database=database
        )
        meter.start()
        for client in clients:
            client.send("go")
        deadline = time.monotonic() + warmup + duration + 2 * REQUEST_TIMEOUT + 30
        results = [orjson.loads(client.read_line(deadline)) for client in clients]
        cores = meter.stop()
    return _combine(results, cores)


def _combine(results: list[dict[str, Any]], cores: dict[str, float]) -> dict[str, Any]:
    combined: dict[str, Any] = {
        "numbers": sum(r["numbers"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        "cores": cores,
        "clients": results,
    }
    for key in ("window", "elapsed"):
        if key in results[0]:
            combined[key] = max(r[key] for r in results)
    if "offered" in results[0]:
        combined["offered"] = sum(r["offered"] for r in results)
    if len(results) == 1:  # percentiles of separate processes cannot be merged from summaries
        for key in ("reserve_ms", "confirm_ms"):
            if key in results[0]:
                combined[key] = results[0][key]
    return combined
