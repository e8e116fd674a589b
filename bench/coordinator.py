"""Coordinator processes for a run: ``python -m coordinator serve`` as a real subprocess each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.postgres import connected
from bench.processes import START_TIMEOUT, Process, ProcessError, free_port, start, stop, wait_healthy

CHAIN_TIMEOUT = 900.0  # the background chain check of a large ledger after a start


class CoordinatorError(Exception):
    pass


@dataclass(frozen=True)
class Cluster:
    urls: list[str]
    pids: list[int]
    peer_token: str


def command(database_url: str, *args: str) -> list[str]:
    """The command line of ``concord --database-url database_url args…``."""
    return [sys.executable, "-m", "coordinator", "--database-url", database_url, *args]


def _request(
    url: str, *, body: dict[str, Any] | None = None, token: str | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers=headers, method="GET" if body is None else "POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def operator_token(database_url: str, env: dict[str, str]) -> str:
    """A new operator token, made by ``concord tokens create``."""
    made = subprocess.run(
        command(database_url, "tokens", "create", "--role", "operator"),
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    if made.returncode != 0:
        raise CoordinatorError(f"tokens create failed: {made.stderr[-2000:]}")
    return made.stdout.strip()


def register_peer(url: str, operator: str, name: str) -> dict[str, Any]:
    """Register a peer (an agent) named ``name``; its ``peer_id`` and ``token``."""
    try:
        return _request(
            f"{url}/v1/peers", token=operator, body={"name": name, "url": "http://127.0.0.1:8701"}
        )
    except urllib.error.HTTPError as exc:
        raise CoordinatorError(f"POST /v1/peers: {exc.code} {exc.read()[:2000].decode()}") from None


def serve(
    database_url: str, env: dict[str, str], log_path: Path, name: str = "coordinator"
) -> tuple[Process, str]:
    """A ``concord serve`` process on a free port, and its base URL (not waited for)."""
    port = free_port()
    process = start(
        name, command(database_url, "serve", "--host", "127.0.0.1", "--port", str(port)), log_path, env
    )
    return process, f"http://127.0.0.1:{port}"


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
    raise CoordinatorError(f"the chain check did not reach position {head} in {CHAIN_TIMEOUT:.0f} s")


@contextlib.contextmanager
def coordinators(database_url: str, count: int) -> Iterator[Cluster]:
    """``count`` coordinator processes serving one database, and a registered peer's token."""
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp:
        env = {**os.environ, "CONCORD_DATA_DIR": tmp, "CONCORD_LOG_LEVEL": "warning"}
        operator = operator_token(database_url, env)
        processes: list[Process] = []
        try:
            urls = []
            for index in range(count):
                process, url = serve(
                    database_url, env, Path(tmp) / f"coordinator-{index}.log", f"coordinator {index}"
                )
                processes.append(process)
                urls.append(url)
            for url, process in zip(urls, processes, strict=True):
                try:
                    asyncio.run(wait_healthy(process, url))
                except ProcessError as exc:
                    raise CoordinatorError(str(exc)) from None
            peer = register_peer(urls[0], operator, "bench")
            yield Cluster(urls=urls, pids=[p.pid for p in processes], peer_token=peer["token"])
        finally:
            for process in processes:
                stop(process)


def _metric_sums(text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("concord_ledger_batch_") and ("_sum " in line or "_count " in line):
            name, value = line.rsplit(" ", 1)
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def writer_stats(urls: Sequence[str]) -> dict[str, float]:
    """Group commit as the coordinators at ``urls`` saw it so far: the sums and counts of
    their ``concord_ledger_batch_*`` histograms, added up.

    Read before and after a run (``writer_totals``), so only the run counts.
    """
    totals: dict[str, float] = {}
    for url in urls:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            for name, value in _metric_sums(resp.read().decode()).items():
                totals[name] = totals.get(name, 0.0) + value
    return totals


def writer_totals(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Between two ``writer_stats``: ledger transactions, commands in them, seconds in them."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    return {
        "transactions": delta("concord_ledger_batch_commands_count"),
        "commands": delta("concord_ledger_batch_commands_sum"),
        "seconds": delta("concord_ledger_batch_seconds_sum"),
    }


def writer_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``writer_totals`` per transaction: commands in one, milliseconds in one."""
    totals = writer_totals(before, after)
    batches = totals["transactions"]
    return {
        "transactions": int(batches),
        "commands_per_transaction": round(totals["commands"] / max(batches, 1), 1),
        "ms_per_transaction": round(totals["seconds"] * 1000 / max(batches, 1), 2),
    }


async def _ledger_check(url: str) -> dict[str, Any]:
    async with connected(url) as conn:
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
    return {"issued": row["issued"], "handed_out": row["handed_out"], "events": events, "gapless": holes == 0}


def ledger_check(url: str) -> dict[str, Any]:
    """After a run: how many invoice numbers are held (issued), and whether every series and
    period holds exactly 1..highest (released numbers waiting for reuse included)."""
    return asyncio.run(_ledger_check(url))
