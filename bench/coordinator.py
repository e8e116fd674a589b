"""Coordinator processes for a run: ``python -m coordinator serve`` as a real subprocess each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
CHAIN_TIMEOUT = 900.0  # the background chain check of a large ledger after a start


class CoordinatorError(Exception):
    pass


@dataclass(frozen=True)
class Cluster:
    urls: list[str]
    pids: list[int]
    peer_token: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(database_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "coordinator", "--database-url", database_url, *args]


def _request(url: str, *, body: dict[str, Any] | None = None, token: str | None = None,
             timeout: float = 5.0) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers,
                                     method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CoordinatorError(f"coordinator exited with {process.returncode}:\n"
                                   f"{log.read_text()[-2000:]}")
        try:
            if _request(f"{url}/healthz", timeout=1.0).get("status") == "ok":
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)
    raise CoordinatorError(f"{url}/healthz did not answer within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def wait_for_chain(url: str, head: int) -> float:
    """Seconds until the background chain check of the coordinator at ``url`` has verified
    the ledger up to position ``head`` (it starts from the genesis when the process starts)."""
    started = time.monotonic()
    while time.monotonic() - started < CHAIN_TIMEOUT:
        chain = _request(f"{url}/healthz").get("chain") or {}
        if chain.get("broken_at") is not None:
            raise CoordinatorError(f"the chain check found the chain broken at {chain['broken_at']}")
        if (chain.get("verified_position") or 0) >= head:
            return time.monotonic() - started
        time.sleep(0.5)
    raise CoordinatorError(f"the chain check did not reach position {head} in "
                           f"{CHAIN_TIMEOUT:.0f} s")


@contextlib.contextmanager
def coordinators(database_url: str, count: int) -> Iterator[Cluster]:
    """``count`` coordinator processes serving one database, and a registered peer's token."""
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp:
        env = {**os.environ, "CONCORD_DATA_DIR": tmp, "CONCORD_LOG_LEVEL": "warning"}
        made = subprocess.run(_cli(database_url, "tokens", "create", "--role", "operator"),
                              env=env, capture_output=True, text=True, timeout=START_TIMEOUT)
        if made.returncode != 0:
            raise CoordinatorError(f"tokens create failed: {made.stderr[-2000:]}")
        operator = made.stdout.strip()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            urls, logs = [], []
            for index in range(count):
                port = _free_port()
                log = Path(tmp) / f"coordinator-{index}.log"
                with log.open("wb") as out:
                    processes.append(subprocess.Popen(
                        _cli(database_url, "serve", "--host", "127.0.0.1", "--port", str(port)),
                        env=env, stdout=out, stderr=subprocess.STDOUT,
                    ))
                urls.append(f"http://127.0.0.1:{port}")
                logs.append(log)
            for url, process, log in zip(urls, processes, logs, strict=True):
                _wait_healthy(url, process, log)
            peer = _request(f"{urls[0]}/v1/peers", token=operator,
                            body={"name": "bench", "url": "http://127.0.0.1:8701"})
            yield Cluster(urls=urls, pids=[p.pid for p in processes], peer_token=peer["token"])
        finally:
            for process in processes:
                _stop(process)


def _metric_sums(text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("concord_ledger_batch_") and ("_sum " in line or "_count " in line):
            name, value = line.rsplit(" ", 1)
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def writer_stats(cluster: Cluster) -> dict[str, float]:
    """Group commit as the coordinators saw it: transactions, commands per one, time in one.

    Read from each process's /metrics before and after a run, so only the run counts.
    """
    totals: dict[str, float] = {}
    for url in cluster.urls:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            for name, value in _metric_sums(resp.read().decode()).items():
                totals[name] = totals.get(name, 0.0) + value
    return totals


def writer_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("concord_ledger_batch_commands_count")
    return {
        "transactions": int(batches),
        "commands_per_transaction": round(delta("concord_ledger_batch_commands_sum")
                                          / max(batches, 1), 1),
        "ms_per_transaction": round(delta("concord_ledger_batch_seconds_sum") * 1000
                                    / max(batches, 1), 2),
    }


async def _ledger_check(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS handed_out, count(*) FILTER (WHERE state = 'issued') AS issued"
            " FROM reservations WHERE series = 'invoice' AND state <> 'released'"
        )
        # Per series and period, the numbers held and the released ones waiting in the pool
        # together are exactly 1..highest, each held once (start and increment 1 throughout).
        holes = await conn.fetchval(
            "SELECT count(*) FROM ("
            " SELECT series, period, count(*) AS held, count(DISTINCT number) AS distinct_held,"
            "  min(number) AS lowest, max(number) AS highest"
            " FROM reservations WHERE state <> 'released' GROUP BY series, period) h"
            " LEFT JOIN LATERAL (SELECT count(*) AS pooled FROM released_numbers p"
            "  WHERE p.series = h.series AND p.period = h.period) p ON true"
            " WHERE h.held <> h.distinct_held OR h.held + p.pooled <> h.highest"
            "  OR least(h.lowest, (SELECT min(number) FROM released_numbers q"
            "   WHERE q.series = h.series AND q.period = h.period)) <> 1"
        )
        events = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
    return {"issued": row["issued"], "handed_out": row["handed_out"], "events": events,
            "gapless": holes == 0}


def ledger_check(url: str) -> dict[str, Any]:
    """After a run: how many invoice numbers are held (issued), and whether every series and
    period holds exactly 1..highest (released numbers waiting for reuse included)."""
    return asyncio.run(_ledger_check(url))
