"""CPU time per component (coordinator, client, PostgreSQL, this process) from /proc.

Reported next to each figure because on a 2-core machine the question is always who used
the cores: a throughput limit can sit in the server, in the load generator or in PostgreSQL,
and a neighbour (``other``) may have taken some of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far; 0 once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float:
    """CPU time all cores spent outside idle and iowait since boot (steal included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def _postgres_pids(database: str | None) -> list[int]:
    """Backends of ``database`` plus the shared server processes (postmaster, WAL writer...).

    Backends of other databases are left out: they belong to whoever else uses the server.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        client_backend = "(" in title or "[local]" in title
        if not client_backend or (database is not None and f" {database} " in title):
            pids.append(int(entry.name))
    return pids


class CpuMeter:
    """Cores used by named process groups between ``start`` and ``stop`` (1.0 = one core busy).

    A process that exits during the interval is not counted, so measured systems keep their
    processes and connections until ``stop``; one that starts during it counts in full.
    """

    def __init__(self, groups: dict[str, Iterable[int]] | None = None, *,
                 database: str | None = None) -> None:
        self._groups = {name: list(pids) for name, pids in (groups or {}).items()}
        self._groups["bench"] = [os.getpid()]
        self._database = database
        self._before: dict[str, dict[int, float]] = {}
        self._started = 0.0
        self._busy = 0.0

    def _take(self) -> dict[str, dict[int, float]]:
        pids = {**self._groups, "postgres": _postgres_pids(self._database)}
        return {name: {p: cpu_seconds(p) for p in group} for name, group in pids.items()}

    def start(self) -> None:
        self._before = self._take()
        self._busy = machine_busy_seconds()
        self._started = time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self._take()
        busy = machine_busy_seconds() - self._busy
        wall = max(time.monotonic() - self._started, 1e-9)
        used = {}
        for name, times in after.items():
            before = self._before.get(name, {})
            spent = sum(max(t - before.get(pid, 0.0), 0.0) for pid, t in times.items())
            used[name] = spent / wall
        used["other"] = max(busy / wall - sum(used.values()), 0.0)
        return {name: round(value, 2) for name, value in used.items()}


def wait_for_quiet(*, limit: float = 0.3, longest: float = 20.0) -> float:
    """Wait (at most ``longest`` s) until neighbours use under ``limit`` cores; return their load.

    Called between runs, when nothing of the benchmark is busy, so any load is someone else's.
    """
    deadline = time.monotonic() + longest
    while True:
        busy, started = machine_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        load = (machine_busy_seconds() - busy) / (time.monotonic() - started)
        if load < limit or time.monotonic() >= deadline:
            return round(load, 2)
