"""The agent benchmark's ``--profile``: py-spy attached to a process during the run, and its
samples summarised by what the process was doing."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.processes import Process, ProcessError, clean_env, start, stopped


@dataclass
class Spy:
    name: str
    process: Process
    output: Path

    @classmethod
    async def attach(cls, name: str, pid: int, workdir: Path) -> Spy:
        binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if binary is None:
            raise ProcessError("--profile needs py-spy: .venv/bin/pip install py-spy")
        slug = name.replace(" ", "-")
        output = workdir / f"profile-{slug}.txt"
        process = start(
            f"py-spy {name}",
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--nolineno",
                "--rate",
                "100",
                "--output",
                str(output),
            ],
            workdir / f"py-spy-{slug}.log",
            clean_env(),
        )
        await asyncio.sleep(0.3)
        if not process.running():
            raise ProcessError(f"py-spy could not attach to {name}: {process.log_tail()}")
        return cls(name, process, output)

    async def stop(self) -> None:
        # py-spy writes its output when interrupted.
        await stopped(self.process, signal.SIGINT, grace=30)


# What a sample was doing: the first rule (in order) matching a frame of its stack wins.
# Each rule: (label, function name regex, file substring).
AGENT_ACTIVITIES: list[tuple[str, str, str]] = [
    ("startup (imports, settings, first heartbeat)", r"^_find_and_load$|^run_agent$", ""),
    ("changes scan / reconcile", r"^ChangeReporter\.", "agent/changes.py"),
    ("heartbeat", r"^beat$", "agent/heartbeat.py"),
    ("numbering: batch reserve over HTTP", r"^CoordinatorClient\.reserve_many$", "agent/client.py"),
    ("numbering: MySQL transaction (invoicenums + outbox + receipts)", r"^write_numbers$", "queries.py"),
    ("numbering: query due documents", r"^due_documents$", "queries.py"),
    ("relay: batch confirm over HTTP", r"^CoordinatorClient\.confirm_many$", "agent/client.py"),
    ("relay: MySQL transaction (mark confirmed + documents)", r"^mark_confirmed$", "queries.py"),
    ("relay: build snapshots (MySQL reads + document JSON)", r"^snapshots$", "queries.py"),
    ("relay: query pending outbox", r"^pending_outbox$", "queries.py"),
    ("HTTP client I/O callbacks (aiohttp, outside a request)", r".", "aiohttp/"),
    ("MySQL driver I/O callbacks (asyncmy, outside a query)", r".", "asyncmy/"),
    ("event loop (scheduling, select, tasks)", r".", "asyncio/"),
]
COORDINATOR_ACTIVITIES: list[tuple[str, str, str]] = [
    ("startup", r"^_find_and_load$", ""),
    ("ledger writer (group commit: decide, append, projections)", r".", "coordinator/ledger/writer.py"),
    ("POST /v1/reservations/batch (handler)", r"^reserve_batch$", "routes.py"),
    ("POST /v1/reservations/confirm (handler)", r"^confirm_batch$", "routes.py"),
    ("POST /v1/heartbeat, GET /metrics, other handlers", r"^(heartbeat|metrics|healthz)$", "routes.py"),
    ("HTTP middleware (auth, errors, logging)", r".", "coordinator/http/middleware.py"),
    ("aiohttp server (parse, respond)", r".", "aiohttp/"),
    ("asyncpg outside a query", r".", "asyncpg/"),
    ("event loop", r".", "uvloop/"),
    ("event loop", r".", "asyncio/"),
]
# The layer a sample's innermost frame belongs to.
LAYERS: list[tuple[str, str]] = [
    ("aiohttp/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("multidict/", "aiohttp"),
    ("asyncmy/", "asyncmy (MySQL driver)"),
    ("asyncpg/", "asyncpg (PostgreSQL driver)"),
    ("asyncio/", "asyncio"),
    ("uvloop/", "uvloop"),
    ("tenacity/", "tenacity (retries)"),
    ("structlog/", "structlog (logging)"),
    ("logging/", "logging"),
    ("pydantic", "pydantic (validation)"),
    ("json/", "json"),
    ("coordinator/events/", "canonical JSON / document"),
    ("coordinator/ledger/", "ledger code"),
    ("coordinator/", "coordinator code"),
    ("agent/", "agent code"),
    ("importlib", "imports"),
    ("<frozen", "imports"),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text)
    return (match["func"], match["file"]) if match else (text, "")


def _layer(file: str) -> str:
    for needle, label in LAYERS:
        if needle in file:
            return label
    return file.split("/", 1)[0] or "other"


# Samples whose innermost frame is the event loop's poll: the process sleeps in epoll, or it
# was woken and waits for a core (py-spy counts a runnable thread as active). With uvloop (the
# coordinator) the poll and uvloop's own C code show as Runner.run.
_WAITING = re.compile(r"^(EpollSelector\.select|Runner\.run|BaseEventLoop\.run_forever)$")


@dataclass
class Profile:
    name: str
    samples: int  # all samples py-spy kept
    waiting: int  # of which in the event loop's poll (see _WAITING)
    activities: Counter[str]  # the others, by what they were doing
    layers: Counter[str]
    leaves: Counter[str]

    @property
    def busy(self) -> int:
        return self.samples - self.waiting

    @classmethod
    def read(cls, path: Path, name: str) -> Profile:
        rules = AGENT_ACTIVITIES if name.startswith("agent") else COORDINATOR_ACTIVITIES
        compiled = [(label, re.compile(func), file) for label, func, file in rules]
        activities: Counter[str] = Counter()
        layers: Counter[str] = Counter()
        leaves: Counter[str] = Counter()
        total = waiting = 0
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame(part) for part in stack.split(";")]
            total += count
            leaf_func, leaf_file = frames[-1]
            if _WAITING.match(leaf_func):
                waiting += count
                continue
            label = "other"
            for rule_label, func, file in compiled:
                if any(func.search(f) and file in path_ for f, path_ in frames):
                    label = rule_label
                    break
            activities[label] += count
            layers[_layer(leaf_file)] += count
            leaves[f"{leaf_func} ({leaf_file})"] += count
        if not total:
            raise ValueError(f"no samples in {path}")
        return cls(name, total, waiting, activities, layers, leaves)
