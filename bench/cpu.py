"""CPU time per component (coordinator, client, PostgreSQL, this process) from /proc.

Reported next to each figure because on a 2-core machine the question is always who used
the cores: a throughput limit can sit in the server, in the load generator or in PostgreSQL,
and a neighbour (``other``) may have taken some of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")

Pids = Callable[[], Iterable[int]]  # read again at each reading: processes may come and go


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


def _processes(names: set[str]) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose command name is one of ``names``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in names:
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), title))
    return found


def _postgres(database: str | None, *, backends: bool, shared: bool) -> list[int]:
    pids = []
    for pid, title in _processes({"postgres"}):
        client_backend = "(" in title or "[local]" in title
        if client_backend:
            if backends and database is not None and f" {database} " in title:
                pids.append(pid)
        elif shared:
            pids.append(pid)
    return pids


def postgres_backends(database: str) -> list[int]:
    """The backends serving ``database``; other databases' belong to whoever else uses the
    server."""
    return _postgres(database, backends=True, shared=False)


def postgres_shared() -> list[int]:
    """The server's shared processes (postmaster, WAL writer, checkpointer…)."""
    return _postgres(None, backends=False, shared=True)


def mariadb_pids() -> list[int]:
    return [pid for pid, _ in _processes({"mariadbd", "mysqld"})]


class CpuClock:
    """CPU seconds of named process groups between ``start`` and ``stop``, and ``other``:
    what the rest of the machine used meanwhile.

    A process that exits during the interval is not counted, so measured systems keep their
    processes and connections until ``stop``; one that starts during it counts in full.
    """

    def __init__(self, groups: Mapping[str, Pids]) -> None:
        self._groups = dict(groups)
        self._before: dict[str, dict[int, float]] = {}
        self._busy = 0.0

    def _take(self) -> dict[str, dict[int, float]]:
        return {name: {p: cpu_seconds(p) for p in pids()} for name, pids in self._groups.items()}

    def start(self) -> None:
        self._before = self._take()
        self._busy = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        after = self._take()
        busy = machine_busy_seconds() - self._busy
        used = {}
        for name, times in after.items():
            before = self._before.get(name, {})
            used[name] = sum(max(t - before.get(pid, 0.0), 0.0) for pid, t in times.items())
        used["other"] = max(busy - sum(used.values()), 0.0)
        return used


class CpuMeter:
    """Cores used by named process groups between ``start`` and ``stop`` (1.0 = one core
    busy), with ``bench`` (this process) and ``postgres`` (``database``'s backends and the
    shared server processes) added."""

    def __init__(
        self, groups: dict[str, Iterable[int]] | None = None, *, database: str | None = None
    ) -> None:
        fixed = {name: list(pids) for name, pids in (groups or {}).items()}
        self._clock = CpuClock(
            {
                **{name: (lambda pids=pids: pids) for name, pids in fixed.items()},
                "bench": lambda: [os.getpid()],
                "postgres": lambda: _postgres(database, backends=True, shared=True),
            }
        )
        self._started = 0.0

    def start(self) -> None:
        self._clock.start()
        self._started = time.monotonic()

    def stop(self) -> dict[str, float]:
        seconds = self._clock.stop()
        wall = max(time.monotonic() - self._started, 1e-9)
        return {name: round(value / wall, 2) for name, value in seconds.items()}


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
