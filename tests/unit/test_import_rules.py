"""The dependency rules of docs/design.md §1, read from the source: pure core ← adapters ←
entrypoints, the agent apart from the coordinator, and the simulator outside what is installed.
A new import that breaks one fails here."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Pure: no I/O, no event loop, no database, no HTTP.
PURE = [
    *sorted((ROOT / "coordinator" / "events").glob("*.py")),
    *(
        ROOT / "coordinator" / "ledger" / f"{name}.py"
        for name in ("numbering", "decide", "state", "commands", "series_defaults")
    ),
    *(
        ROOT / "coordinator" / "audit" / f"{name}.py"
        for name in ("invariants", "event_records", "findings", "chain", "export_format")
    ),
    ROOT / "coordinator" / "monitors" / "billing_checks.py",
    # The Get contract's core; its edges are getfeed/lookup.py (asyncio) and getfeed/http.py.
    *(
        ROOT / "getfeed" / f"{name}.py"
        for name in ("query", "snapshot", "europe", "vies", "answer", "settings")
    ),
]
INSTALLED = ("coordinator", "agent", "getfeed", "concord_logs")  # pyproject's packages.find
IMPURE_MODULES = (
    "asyncio",
    "asyncpg",
    "aiohttp",
    "asyncmy",
    "socket",
    "subprocess",
    "urllib",
    "http",
    "zeep",
    "structlog",
    "coordinator.http",
    "coordinator.console",
    "coordinator.db",
    "getfeed.lookup",
    "getfeed.http",
)


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _breaks(paths: Iterator[Path], allowed: tuple[str, ...], of: tuple[str, ...]) -> set[str]:
    """Imports of a package in ``of`` that are not under ``allowed``, as "file: module"."""
    found = set()
    for path in paths:
        name = str(path.relative_to(ROOT))
        for module in _imports(path):
            if _under(module, *of) and not _under(module, *allowed):
                found.add(f"{name}: {module}")
    return found


def test_the_pure_core_does_no_io() -> None:
    found = {f"{p.relative_to(ROOT)}: {m}" for p in PURE for m in _imports(p) if _under(m, *IMPURE_MODULES)}
    assert found == set(), sorted(found)


def test_the_agent_uses_only_the_event_vocabulary_and_the_get_feed() -> None:
    agent = (ROOT / "agent").rglob("*.py")
    assert _breaks(agent, ("coordinator.events",), ("coordinator",)) == set()


def test_getfeed_uses_only_the_event_vocabulary() -> None:
    getfeed = (ROOT / "getfeed").rglob("*.py")
    assert _breaks(getfeed, ("coordinator.events",), ("coordinator", "agent")) == set()


def test_the_coordinator_does_not_import_the_agent() -> None:
    coordinator = (ROOT / "coordinator").rglob("*.py")
    assert _breaks(coordinator, (), ("agent",)) == set()


def test_the_ledger_does_not_reach_out_to_its_edges() -> None:
    ledger = (ROOT / "coordinator" / "ledger").rglob("*.py")
    edges = (
        "coordinator.http",
        "coordinator.console",
        "coordinator.webservice",
        "coordinator.accounting",
        "coordinator.notifications",
        "coordinator.app",
        "coordinator.cli",
    )
    assert _breaks(ledger, (), edges) == set()


def test_the_ledger_imports_neither_the_audit_nor_the_monitors() -> None:
    """The audit replays and checks the ledger, the monitors watch it: both import it, never
    the other way round."""
    ledger = (ROOT / "coordinator" / "ledger").rglob("*.py")
    assert _breaks(ledger, (), ("coordinator.audit", "coordinator.monitors")) == set()


def test_the_audit_does_not_import_the_monitors() -> None:
    """The chain watch runs the audit's chain check in the background, not the reverse."""
    audit = (ROOT / "coordinator" / "audit").rglob("*.py")
    assert _breaks(audit, (), ("coordinator.monitors",)) == set()


def test_the_shared_log_set_up_imports_none_of_the_programs() -> None:
    """concord_logs is the one module besides coordinator.events and getfeed that the agent
    shares with the coordinator: it stays a leaf."""
    logs = (ROOT / "concord_logs").rglob("*.py")
    assert _breaks(logs, (), ("coordinator", "agent", "getfeed", "simulator")) == set()


def test_the_installed_packages_do_not_import_the_simulator() -> None:
    """simulator/ (and the tests and benchmarks) are not installed: the checkout only."""
    installed = (p for package in INSTALLED for p in (ROOT / package).rglob("*.py"))
    assert _breaks(installed, (), ("simulator", "tests", "bench")) == set()


def test_the_installed_packages_are_those_pyproject_installs() -> None:
    """INSTALLED above is what pip installs, so the rule above covers all of it."""
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert sorted(name.rstrip("*") for name in found["include"]) == sorted(INSTALLED)
