"""Two coordinator replicas under twenty clients while the database fails beneath them.

Every coordinator backend is terminated five times mid-load (an idle-connection reaper or
an administrator does this), and a PostgreSQL of the test's own is stopped and started
mid-load (a restart or a failover). The clients resend whatever got a 503 or a broken
connection. Afterwards, as in test_concurrency: the ledger's chain is intact, per series
and period the issued numbers have no hole and no duplicate, every retry got the first
answer, nothing acknowledged was lost; no request waited longer than the answer timeout,
every 503 carried Retry-After, and ``concord audit`` passes. SIGTERM stops a replica within
seconds even while its database is away.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from coordinator.db import connect
from coordinator.migrations import migrate
from coordinator.peers.tokens import create_api_token
from tests.conftest import Tokens
from tests.e2e.test_concurrency import CREDIT_DEDICATED, Load, Scenario, _prepare, _report, _run, verify
from tests.support.concord_cli import concord
from tests.support.coordinator_process import CoordinatorProcess
from tests.support.scratch_cluster import ScratchCluster

DOCS_PER_CLIENT = 30
ANSWER_TIMEOUT = 10.0  # the coordinator's default answer_timeout_seconds
SIGTERM_SECONDS = 6.0


async def _health(proc: CoordinatorProcess) -> tuple[int, dict[str, object]]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{proc.url}/healthz") as resp:
        return resp.status, await resp.json()


async def _until_unhealthy(proc: CoordinatorProcess, within: float) -> dict[str, object]:
    """The first 503 of ``/healthz`` (bounded): it must come, with the reason."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status, body = await _health(proc)
        if status == 503:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{proc.name}: /healthz still 200 {within:.0f}s after the database went")


def _check(load: Load, problems: list[str], summary: dict[str, int], seconds: float) -> None:
    assert not problems, _report(problems, load, summary, seconds)
    assert summary["issued"] == len(load.docs), summary
    assert load.stats.unavailable > 0, f"the fault was never felt: {load.stats}"
    assert load.stats.slowest < ANSWER_TIMEOUT + 2, f"a request hung: {load.stats}"


def _stop_within(proc: CoordinatorProcess, seconds: float) -> float:
    started = time.monotonic()
    proc.stop(timeout=seconds)  # SIGTERM; SIGKILL only when it overstays
    took = time.monotonic() - started
    assert proc.returncode() == 0, (
        f"{proc.name} did not stop on SIGTERM within {seconds}s "
        f"(exit {proc.returncode()}):\n{proc.log_tail()}"
    )
    return took


@pytest.mark.slow
async def test_backends_terminated_five_times_mid_load(
    replicas: list[CoordinatorProcess],
    tokens: Tokens,
    database_url: str,
) -> None:
    seed = random.randrange(1 << 30)
    load = await _prepare(
        replicas, tokens, Scenario(creditnote=CREDIT_DEDICATED), docs_per_client=DOCS_PER_CLIENT, seed=seed
    )
    total = len(load.docs)
    terminated: list[int] = []

    async def terminate_every_backend_five_times() -> None:
        admin = await asyncpg.connect(database_url)
        try:
            for k in range(1, 6):
                await load.confirmed_at_least(k * total // 6)
                rows = await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE"
                    " datname = current_database() AND application_name = 'concord'"
                )
                terminated.append(len(rows))
        finally:
            await admin.close()

    seconds = await _run(load, terminate_every_backend_five_times)
    problems, summary = await verify(database_url, load)
    _check(load, problems, summary, seconds)
    assert len(terminated) == 5 and all(terminated), terminated
    for proc in replicas:
        status, body = await _health(proc)
        assert status == 200, body
    concord(database_url, "audit")
    print(f"\n{seconds:.1f}s seed {seed} terminated {terminated} {load.stats} {summary}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ScratchCluster]:
    scratch = ScratchCluster(tmp_path / "cluster")
    try:
        yield scratch
    finally:
        scratch.close()


@pytest.fixture
async def cluster_replicas(
    cluster: ScratchCluster, tmp_path: Path
) -> AsyncIterator[tuple[str, Tokens, list[CoordinatorProcess]]]:
    url = await cluster.create_database("concord")
    conn = await connect(url)
    try:
        await migrate(conn)
        tokens = Tokens(
            operator=await create_api_token(conn, "operator"), reader=await create_api_token(conn, "reader")
        )
    finally:
        await conn.close()
    procs = [CoordinatorProcess(url, tmp_path, f"coordinator-{n}") for n in "ab"]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield url, tokens, procs
    finally:
        for p in procs:
            p.stop()


@pytest.mark.slow
async def test_postgresql_restarted_mid_load(
    cluster: ScratchCluster,
    cluster_replicas: tuple[str, Tokens, list[CoordinatorProcess]],
) -> None:
    url, tokens, replicas = cluster_replicas
    seed = random.randrange(1 << 30)
    load = await _prepare(
        replicas, tokens, Scenario(creditnote=CREDIT_DEDICATED), docs_per_client=DOCS_PER_CLIENT, seed=seed
    )
    reasons: list[object] = []

    async def restart_postgresql() -> None:
        await load.confirmed_at_least(len(load.docs) // 3)
        await asyncio.to_thread(cluster.stop)
        for proc in replicas:
            reasons.append((await _until_unhealthy(proc, within=ANSWER_TIMEOUT))["reason"])
        await asyncio.to_thread(cluster.start)
        for proc in replicas:  # writable again without a restart of the coordinator
            await proc.wait_healthy(within=15)

    seconds = await _run(load, restart_postgresql)
    problems, summary = await verify(url, load)
    _check(load, problems, summary, seconds)
    assert all(isinstance(r, str) and r for r in reasons), reasons
    concord(url, "audit")

    # SIGTERM stops a replica within seconds, also while its database is away.
    await asyncio.to_thread(cluster.stop)
    took = [_stop_within(proc, SIGTERM_SECONDS) for proc in replicas]
    print(f"\n{seconds:.1f}s seed {seed} reasons {reasons} stops {took} {load.stats} {summary}")
