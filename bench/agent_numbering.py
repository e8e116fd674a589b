"""Agent benchmark: time to number N paid invoices across three WHMCS stores, end to end.

Three MariaDB databases with the WHMCS schema each holding N/3 invoices without a number,
and by default a history: 100,000 documents (``--preload``) numbered by Concord before the run,
in the stores, in the agents' tables and in the ledger (bench/agent_preload.py), as stores in
service have. One coordinator process on that PostgreSQL database, and three agent processes
(``python -m agent serve``) running beside it, as they do in service. The clock starts with a
payment run, one statement per store marking its N/3 Unpaid invoices Paid (a burst: WHMCS's
cron or a gateway's batch), and runs until every invoice of every store carries an
``invoicenum`` and every outbox row is confirmed. ``--cold-start`` instead starts the agents
with the clock, the invoices already paid: their start-up counts too. Afterwards the ledger is checked
(history + N ``NumberIssued``, numbers 1..history + N, each store's ``invoicenum`` the
ledger's number, numbers in date order within a store, the history reported unchanged) and
the CPU each process used is reported, to show what bounds the throughput. ``--profile``
attaches py-spy to one agent and to the coordinator during the run and summarises where
their CPU time goes.

    .venv/bin/python -m bench.agent_numbering            # 10,000 invoices, rewrites docs
    .venv/bin/python -m bench.agent_numbering --profile  # the same, with the py-spy summary
    .venv/bin/python -m bench.agent_numbering --quick    # 1,500 invoices, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import logging
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from agent.settings import AgentSettings
from bench import mariadb
from bench.agent_ledger import event_counts, function_times, ledger_span, table_scans, verify
from bench.agent_preload import preload_ledger
from bench.agent_profile import Profile, Spy
from bench.agent_report import Result, render
from bench.agent_stores import (
    POLL_SECONDS,
    STORES,
    Store,
    create_store,
    pay_all,
    server_now,
    store_progress,
)
from bench.audit import RebuildFailed
from bench.coordinator import (
    CoordinatorError,
    operator_token,
    register_peer,
    serve,
    wait_for_chain,
    writer_stats,
    writer_totals,
)
from bench.cpu import CpuClock, cpu_seconds, mariadb_pids, postgres_backends, postgres_shared, wait_for_quiet
from bench.postgres import admin_url, server_facts, with_database
from bench.processes import ProcessError, clean_env, free_port, start, stopped, wait_healthy
from bench.report import cpu_model, write_section
from simulator.scratch_postgres import run_sql
from simulator.whmcs import MySQLURL, connect, drop_database, parse_mysql_url

PROFILED_AGENT = STORES[0]
TITLE = "## Agent: numbering 10,000 paid invoices across three stores"
BEGIN = "<!-- bench:agent:begin (written by `python -m bench.agent_numbering`; edit outside) -->"
END = "<!-- bench:agent:end -->"
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
# What the agents import from this checkout; compiled before the clock, as `pip install`
# compiles an installed agent (an environment with PYTHONDONTWRITEBYTECODE set would
# otherwise have every agent compile them at start, ~90 ms of CPU each).
AGENT_PACKAGES = ("agent", "getfeed", "concord_logs", "coordinator")

# Agent log lines that mean something went wrong (as in tests/e2e/test_agent_stores.py).
BAD_AGENT_LOG = re.compile(
    r'"level": ?"(error|critical)"|Traceback|job_crashed|confirm_refused|outbox_invoice_missing'
    r"|invoice_numbered_elsewhere|number_taken_back|whmcs_write_failed"
)
AGENT_BATCH_SIZE: int = AgentSettings.model_fields["batch_size"].default
PRELOAD = 100_000  # documents numbered before the run: stores (and a ledger) in service


class BenchError(Exception):
    pass


async def _server_versions(pg_url: str, mysql_admin: MySQLURL) -> dict[str, str]:
    pg = await asyncio.to_thread(server_facts, pg_url)
    my = await mariadb.server_facts(mysql_admin)
    return {
        "postgres": f"PostgreSQL {pg.get('server_version', '?')} (fsync {pg.get('fsync')},"
        f" synchronous_commit {pg.get('synchronous_commit')})",
        "mariadb": f"MariaDB/MySQL {my['version']} (innodb_flush_log_at_trx_commit"
        f" {my['innodb_flush_log_at_trx_commit']}, binlog {my['log_bin']})",
    }


def machine_facts() -> dict[str, str]:
    return {"cores": str(os.cpu_count() or 0), "cpu": cpu_model(), "python": platform.python_version()}


class Cleanup:
    """Undo steps, run in reverse order whatever happened."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def push(self, what: str, step: Callable[[], Awaitable[Any]]) -> None:
        self._steps.append((what, step))

    async def run(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                await asyncio.wait_for(step(), 60)
            except Exception as exc:
                print(f"cleanup: {what} failed: {exc!r}", file=sys.stderr)


@contextlib.asynccontextmanager
async def cleanup() -> AsyncIterator[Cleanup]:
    steps = Cleanup()
    try:
        yield steps
    finally:
        await asyncio.shield(steps.run())


async def run(
    invoices: int,
    pg_admin: str,
    profile: bool,
    limit: float,
    workdir: Path,
    pg_settings: list[str] | None = None,
    preload: int = 0,
    batch_size: int = AGENT_BATCH_SIZE,
    cold_start: bool = False,
) -> Result:
    mysql_admin = parse_mysql_url(mariadb.ADMIN_URL).with_database("")
    tag = uuid.uuid4().hex[:8]
    pg_name = f"concord_bench_agent_{tag}"
    pg_url = with_database(pg_admin, pg_name)
    share, extra = divmod(invoices, len(STORES))
    stores = [
        Store(name, f"concord_bench_whmcs_{name}_{tag}", "", share + (1 if index < extra else 0))
        for index, name in enumerate(STORES)
    ]
    machine = {**machine_facts(), **await _server_versions(pg_admin, mysql_admin)}
    async with cleanup() as undo:
        # -- set up (not timed) ------------------------------------------------------------
        await run_sql(pg_admin, f'CREATE DATABASE "{pg_name}"')
        # The ledger's SQL functions report their time in pg_stat_user_functions (superuser only).
        with contextlib.suppress(asyncpg.PostgresError):
            await run_sql(pg_admin, f'ALTER DATABASE "{pg_name}" SET track_functions = pl')
        for setting in pg_settings or []:
            name, _, value = setting.partition("=")
            if not re.fullmatch(r"[a-z_]+", name) or not re.fullmatch(r"[A-Za-z0-9_.]+", value):
                raise BenchError(f"--pg-set {setting!r}: expected name=value")
            await run_sql(pg_admin, f'ALTER DATABASE "{pg_name}" SET {name} = {value}')
        undo.push(
            "drop PostgreSQL database",
            lambda: run_sql(pg_admin, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'),
        )
        env = {
            **clean_env(),
            "CONCORD_DATA_DIR": str(workdir),
            "CONCORD_LOG_LEVEL": "warning",
            "CONCORD_LOG_JSON": "true",
        }
        history = None
        if preload:
            print(f"preloading {preload:,} numbered documents …", file=sys.stderr, flush=True)
            try:
                history = await preload_ledger(pg_url, STORES, preload)
            except RebuildFailed as exc:
                raise BenchError(str(exc)) from None
            for store in stores:
                store.numbered = history.numbered[store.name]
                store.peer_id, store.token = history.peer_ids[store.name], history.tokens[store.name]
        operator = await asyncio.to_thread(operator_token, pg_url, env)
        coordinator, coordinator_url = serve(pg_url, env, workdir / "coordinator.log")
        undo.push("stop coordinator", lambda: stopped(coordinator))
        for store in stores:
            undo.push(
                f"drop WHMCS database {store.database}",
                lambda store=store: drop_database(mysql_admin, store.database),
            )
        # Building the stores overlaps with the coordinator's start.
        urls = await asyncio.gather(
            *(
                create_store(mysql_admin, s.database, s.name, s.invoices, s.numbered, unpaid=not cold_start)
                for s in stores
            )
        )
        for store, url in zip(stores, urls, strict=True):
            store.url = url
        await wait_healthy(coordinator, coordinator_url)
        # The coordinator checks the whole chain when it starts: the clock starts after that.
        head = history.head if history else 0
        await asyncio.to_thread(wait_for_chain, coordinator_url, head)
        for store in (s for s in stores if not s.peer_id):
            peer = await asyncio.to_thread(register_peer, coordinator_url, operator, store.name)
            store.peer_id, store.token = peer["peer_id"], peer["token"]
        with contextlib.suppress(asyncpg.PostgresError):
            await run_sql(pg_url, "CHECKPOINT")  # no run pays for the setup's dirty pages

        # -- the run -----------------------------------------------------------------------
        meter = CpuClock(
            {
                "coordinator": lambda: [coordinator.pid],
                **{f"agent {s.name}": (lambda s=s: [s.agent.pid] if s.agent else []) for s in stores},
                "postgres backends": lambda: postgres_backends(pg_name),
                "postgres shared processes": postgres_shared,
                "mariadb": mariadb_pids,
                "benchmark (polling)": lambda: [os.getpid()],
            }
        )
        spies: list[Spy] = []
        writer_before = await asyncio.to_thread(writer_stats, [coordinator_url])
        events_before = await event_counts(pg_url)
        await asyncio.sleep(0.6)  # the setup's statistics reach pg_stat_* (PGSTAT_MIN_INTERVAL)
        scans_before, functions_before = await table_scans(pg_url), await function_times(pg_url)
        watchers = []
        for store in stores:
            conn = await connect(store.url)
            watchers.append(conn)
            undo.push(f"close {store.name} watcher", lambda conn=conn: _close(conn))
        if profile:
            spies.append(await Spy.attach("coordinator", coordinator.pid, workdir))
            undo.push("stop py-spy on the coordinator", spies[-1].stop)
        for package in AGENT_PACKAGES:
            compileall.compile_dir(ROOT / package, quiet=1)
        if not cold_start:  # the agents run, and have looked at their stores, before the clock
            _start_agents(stores, coordinator_url, batch_size, workdir, undo)
            await asyncio.gather(*(_wait_idle(store) for store in stores))
            if profile:
                await _spy_on_agent(stores, spies, workdir, undo)
        # Neighbours (other benchmarks, tests) would take cores from the run: wait for a lull.
        neighbours = await asyncio.to_thread(wait_for_quiet, limit=0.2, longest=15.0)
        since = await server_now(watchers[0])
        meter.start()
        started = time.monotonic()
        if cold_start:
            _start_agents(stores, coordinator_url, batch_size, workdir, undo)
            if profile:
                await _spy_on_agent(stores, spies, workdir, undo)
        else:
            await asyncio.gather(*(pay_all(conn) for conn in watchers))

        first_number, numbered_at = await _until_numbered(watchers, stores, since, started, limit)
        wall = time.monotonic() - started
        cpu = meter.stop()
        writer = writer_totals(writer_before, await asyncio.to_thread(writer_stats, [coordinator_url]))
        profiles: dict[str, Profile] = {}
        errors: list[str] = []
        for spy in spies:
            cpu[f"py-spy ({spy.name})"] = cpu_seconds(spy.process.pid)
            await spy.stop()
            try:
                profiles[spy.name] = Profile.read(spy.output, spy.name)
            except (OSError, ValueError) as exc:
                errors.append(f"{spy.name}: {exc}; py-spy said: {spy.process.log_tail(5)}")
        span = await ledger_span(pg_url, head)
        await asyncio.sleep(0.6)  # statistics reach pg_stat_* within PGSTAT_MIN_INTERVAL
        scans = {
            table: tuple(a - b for a, b in zip(after, scans_before.get(table, (0, 0, 0)), strict=True))
            for table, after in (await table_scans(pg_url)).items()
        }
        functions = {
            name: (
                calls - functions_before.get(name, (0, 0.0))[0],
                total - functions_before.get(name, (0, 0.0))[1],
            )
            for name, (calls, total) in (await function_times(pg_url)).items()
            if calls > functions_before.get(name, (0, 0.0))[0]
        }
        # The history holds a few documents more than asked: those still reserved when the
        # ledger reached its size were issued too (bench/ledger_fixture.py, finish_pending).
        preloaded = sum(len(s.numbered) for s in stores)
        checks = await verify(pg_url, stores, preloaded + invoices)
        events = {
            kind: count - events_before.get(kind, 0)
            for kind, count in (await event_counts(pg_url)).items()
            if count > events_before.get(kind, 0)
        }
        if events.get("DocumentUpdated"):
            checks.append(
                f"{events['DocumentUpdated']} documents reported as changed: the"
                " numbered history should have been found unchanged"
            )
        for store in stores:
            if store.agent is not None:
                bad = [
                    line
                    for line in store.agent.log_path.read_text(errors="replace").splitlines()
                    if BAD_AGENT_LOG.search(line)
                ]
                if bad:
                    checks.append(f"agent {store.name} logged {len(bad)} problems, e.g. {bad[0][:300]}")
        return Result(
            invoices=invoices,
            wall=wall,
            first_number=first_number,
            numbered_at=numbered_at,
            ledger_span=span,
            cpu=cpu,
            events=events,
            writer=writer,
            checks=checks,
            machine=machine,
            neighbours=neighbours,
            scans=scans,
            functions=functions,
            profiles=profiles,
            profile_errors=errors,
            stores=stores,
            preloaded=preloaded,
            preload_events=head,
            preload_seconds=history.seconds if history else 0.0,
            batch_size=batch_size,
            cold_start=cold_start,
        )


async def _close(conn: Any) -> None:
    conn.close()


def _start_agents(
    stores: Sequence[Store], coordinator_url: str, batch_size: int, workdir: Path, undo: Cleanup
) -> None:
    for store in stores:
        store.port = free_port()
        agent_env = {
            **clean_env(),
            "CONCORD_AGENT_WHMCS_URL": store.url,
            "CONCORD_AGENT_COORDINATOR_URL": coordinator_url,
            "CONCORD_AGENT_TOKEN": store.token,
            "CONCORD_AGENT_STORE": store.name,
            "CONCORD_AGENT_HOST": "127.0.0.1",
            "CONCORD_AGENT_PORT": str(store.port),
            "CONCORD_AGENT_POLL_SECONDS": "0.2",
            "CONCORD_AGENT_BATCH_SIZE": str(batch_size),
            "CONCORD_AGENT_LOG_LEVEL": "warning",
            "CONCORD_AGENT_LOG_JSON": "true",
        }
        store.agent = start(
            f"agent {store.name}",
            [sys.executable, "-m", "agent", "serve"],
            workdir / f"agent-{store.name}.log",
            agent_env,
        )
        undo.push(f"stop agent {store.name}", lambda agent=store.agent: stopped(agent))


async def _wait_idle(store: Store) -> None:
    """Until the store's agent serves and has finished a numbering round (nothing was due)."""
    assert store.agent is not None
    url = f"http://127.0.0.1:{store.port}"
    await wait_healthy(store.agent, url)
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline:
            async with http.get(f"{url}/healthz") as resp:
                if (await resp.json()).get("numbering_rounds", 0) >= 1:
                    return
            await asyncio.sleep(0.05)
    raise BenchError(f"agent {store.name} finished no numbering round within 60 s")


async def _spy_on_agent(stores: Sequence[Store], spies: list[Spy], workdir: Path, undo: Cleanup) -> None:
    profiled = next(s for s in stores if s.name == PROFILED_AGENT)
    assert profiled.agent is not None
    await wait_healthy(profiled.agent, f"http://127.0.0.1:{profiled.port}")
    spies.append(await Spy.attach(f"agent {PROFILED_AGENT}", profiled.agent.pid, workdir))
    undo.push(f"stop py-spy on agent {PROFILED_AGENT}", spies[-1].stop)


async def _until_numbered(
    watchers: Sequence[Any], stores: Sequence[Store], since: datetime, started: float, limit: float
) -> tuple[float, float]:
    """Poll the stores until every invoice is numbered and confirmed (at most ``limit`` s
    after ``started``); seconds from ``started`` to the first number and to the last."""
    invoices = sum(s.invoices for s in stores)
    first_number = numbered_at = 0.0
    deadline = started + limit
    while True:
        progress = [await store_progress(conn, since) for conn in watchers]
        now = time.monotonic() - started
        written = sum(p[0] for p in progress)
        if not first_number and written:
            first_number = now
        if written == invoices and not numbered_at:
            numbered_at = now
        if all(p == (s.invoices, s.invoices) for p, s in zip(progress, stores, strict=True)):
            break
        for store in stores:
            if store.agent is not None and not store.agent.running():
                raise BenchError(
                    f"agent {store.name} exited with {store.agent.returncode}:\n{store.agent.log_tail()}"
                )
        if time.monotonic() > deadline:
            raise BenchError(
                f"not done within {limit:.0f} s: {invoices - written} invoices without a"
                f" number, {sum(p[0] - p[1] for p in progress)} outbox rows unconfirmed\n"
                + "\n".join(f"== {s.name}\n{s.agent.log_tail(10)}" for s in stores if s.agent)
            )
        await asyncio.sleep(POLL_SECONDS)
    return first_number, numbered_at


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.agent_numbering",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--invoices",
        type=int,
        default=None,
        help="paid invoices across the three stores (default 10,000; 1,500 with --quick)",
    )
    parser.add_argument(
        "--preload",
        type=int,
        default=None,
        help="documents the stores (and the ledger) already hold, numbered by"
        " Concord before the run (default 100,000; 3,000 with --quick;"
        " 0 for fresh stores and a fresh ledger)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,500 invoices on 3,000 numbered documents; print, do not write docs",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy on one agent and on the coordinator during the run"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds the agents get to finish (default 30 s + 12 ms per"
        " invoice + 1 ms per preloaded document)",
    )
    parser.add_argument(
        "--pg-set",
        action="append",
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the benchmark's database (ALTER DATABASE …"
        " SET), e.g. plan_cache_mode=force_custom_plan; repeatable",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=AGENT_BATCH_SIZE,
        help=f"the agents' CONCORD_AGENT_BATCH_SIZE (default {AGENT_BATCH_SIZE}, the agent's own default)",
    )
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="start the agents with the clock, the invoices already paid (by default the agents"
        " run before it, and the clock starts with the payment run that makes them due)",
    )
    parser.add_argument("--output", type=Path, default=DOCS, help="the markdown file to rewrite")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the logs and profiles (printed path)")
    args = parser.parse_args(argv)
    if args.invoices is None:
        args.invoices = 1500 if args.quick else 10_000
    if args.preload is None:
        args.preload = 3000 if args.quick else PRELOAD
    if args.preload < 0:
        parser.error("--preload must be 0 or more")
    if args.invoices < len(STORES):
        parser.error("--invoices must be at least 3")
    if args.timeout is None:
        args.timeout = 30 + 0.012 * args.invoices + 0.001 * args.preload
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # asyncmy logs every MySQL warning; loading WHMCS rows in WHMCS's sql_mode gives many.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    # SIGTERM as Ctrl-C: the run is cancelled and its clean-up (processes, databases) runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="concord-bench-agent-"))
    try:
        with admin_url() as (pg_admin, _where):
            result = asyncio.run(
                run(
                    args.invoices,
                    pg_admin,
                    args.profile,
                    args.timeout,
                    workdir,
                    args.pg_set,
                    args.preload,
                    args.batch_size,
                    args.cold_start,
                )
            )
    except (BenchError, CoordinatorError, ProcessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        print(f"logs kept in {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        shutil.rmtree(workdir, ignore_errors=True)
        print("interrupted; processes stopped and databases dropped", file=sys.stderr)
        return 130
    block = render(result, profile_requested=args.profile)
    print(block)
    print(
        "\nPostgreSQL scans (sequential scans, rows read by them, index scans):",
        ", ".join(f"{name} {v[0]:,}/{v[1]:,}/{v[2]:,}" for name, v in sorted(result.scans.items())),
    )
    if result.functions:
        print(
            "PostgreSQL functions (calls, ms per call):",
            ", ".join(
                f"{name} {calls:,} {total / max(calls, 1):.2f}"
                for name, (calls, total) in sorted(result.functions.items())
            ),
        )
    if args.keep:
        print(f"\nlogs and profiles in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.checks:
        print("\nchecks failed: " + "; ".join(result.checks), file=sys.stderr)
        return 1
    if not (args.quick or args.no_write):
        write_section(args.output, TITLE, BEGIN, END, block.split("\n"))
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
