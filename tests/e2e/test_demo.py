"""The demo (``python -m simulator.demo``, ``make demo``) against a real coordinator: numbers,
releases, warnings, and the ledger."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator.demo import STORE_NAMES, shares
from tests.conftest import Tokens, bearer
from tests.support.coordinator_process import CoordinatorProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def coordinator(database_url: str, tokens: Tokens, tmp_path: Path) -> AsyncIterator[str]:
    process = CoordinatorProcess(database_url, tmp_path / "coordinator", "coordinator")
    try:
        await process.start()
        yield process.url
    finally:
        process.stop()


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The demo as `make demo` runs it: from the checkout, which holds simulator/."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    return subprocess.run(
        [sys.executable, "-m", "simulator.demo", *args],
        cwd=ROOT,
        env={**clean, "CONCORD_LOG_LEVEL": "warning", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def ledger(url: str, token: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(headers=bearer(token)) as http:
        while True:
            after = events[-1]["position"] if events else 0
            async with http.get(f"{url}/v1/events?after={after}&limit=1000") as resp:
                page = (await resp.json())["events"]
            if not page:
                return events
            events += page


async def peer_names(url: str, token: str) -> dict[str, str]:
    async with aiohttp.ClientSession(headers=bearer(token)) as http, http.get(f"{url}/v1/peers") as resp:
        return {p["peer_id"]: p["name"] for p in (await resp.json())["peers"]}


def assert_gapless(events: list[dict[str, Any]]) -> None:
    """Per counter, the issued numbers are 1, 2, 3, … and every released one was reused."""
    issued: dict[tuple[str, str], list[int]] = defaultdict(list)
    for e in events:
        if e["type"] == "NumberIssued":
            issued[(e["data"]["series"], e["data"]["period"])].append(e["data"]["number"])
    for counter, numbers in issued.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), counter

    def key(data: dict[str, Any]) -> tuple[str, str, int]:
        return data["series"], data["period"], data["number"]

    for released in (e for e in events if e["type"] == "NumberReleased"):
        assert any(
            e["type"] == "NumberIssued"
            and e["position"] > released["position"]
            and key(e["data"]) == key(released["data"])
            for e in events
        ), f"released number {key(released['data'])} was not handed out again"


async def test_demo_issues_numbers_from_three_stores_through_the_api(
    coordinator: str, tokens: Tokens, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(
        demo, "--url", coordinator, "--token", tokens.operator, "--documents", "30", "--seed", "7"
    )
    assert done.returncode == 0, done.stderr

    events = await ledger(coordinator, tokens.reader)
    names = await peer_names(coordinator, tokens.operator)
    issued = [e["data"] for e in events if e["type"] == "NumberIssued"]
    assert len(issued) >= 30
    per_store = defaultdict(int)
    for d in issued:
        per_store[names[d["peer_id"]]] += 1
    assert dict(per_store) == dict(zip(STORE_NAMES, shares(30, 3), strict=True))
    assert {d["doctype"] for d in issued} <= {"invoice", "creditnote"}
    assert_gapless(events)
    assert any(e["type"] == "NumberReleased" for e in events), "no release was shown"

    # One line per number: store, doctype, document id, formatted number, ledger position.
    positions = {
        (names[e["data"]["peer_id"]], e["data"]["doctype"], e["data"]["doc_id"], e["data"]["formatted"]): e[
            "position"
        ]
        for e in events
        if e["type"] == "NumberIssued"
    }
    for (store, doctype, doc_id, formatted), position in positions.items():
        line = re.compile(
            rf"^{re.escape(store)}\s+{doctype}\s+#{doc_id}\s+{re.escape(formatted)}"
            rf"\s+ledger position {position}\b",
            re.M,
        )
        assert line.search(done.stdout), (store, doctype, doc_id, formatted, position)
    assert "released" in done.stdout and "reused a released number" in done.stdout

    # The drifting store's warning opened and resolved, and the output said so.
    warnings = [e["data"] for e in events if e["type"] in ("WarningRaised", "WarningResolved")]
    raised = [w for w in warnings if w.get("code") == "whmcs_sequential_numbering"]
    assert len(raised) == 1
    assert any(w.get("warning_id") == raised[0]["warning_id"] and "by" in w for w in warnings)
    assert "sequential numbering ON" in done.stdout and "resolved" in done.stdout
    head = events[-1]
    assert f"ledger head: position {head['position']}, hash {head['hash']}" in done.stdout
    assert "open warnings: 0" in done.stdout

    # Again, with the operator token `concord serve` saved: the stores get fresh tokens and
    # issue new documents; the numbering carries on without a gap.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "operator.token").write_text(tokens.operator + "\n")
    again = await asyncio.to_thread(
        demo, "--url", coordinator, "--documents", "6", env={"CONCORD_DATA_DIR": str(data_dir)}
    )
    assert again.returncode == 0, again.stderr
    events = await ledger(coordinator, tokens.reader)
    assert sum(e["type"] == "NumberIssued" for e in events) == 36
    assert sum(e["type"] == "PeerRegistered" for e in events) == 3
    assert sum(e["type"] == "PeerTokenRotated" for e in events) == 3
    assert_gapless(events)


async def test_demo_explains_what_is_missing(coordinator: str, tmp_path: Path) -> None:
    refused = await asyncio.to_thread(demo, "--url", coordinator, "--token", "not-a-token")
    assert refused.returncode == 1 and "refused the operator token" in refused.stderr
    no_token = await asyncio.to_thread(
        demo, "--url", coordinator, env={"CONCORD_DATA_DIR": str(tmp_path / "empty")}
    )
    assert no_token.returncode == 1 and "no operator token" in no_token.stderr
    assert "--token" in no_token.stderr
