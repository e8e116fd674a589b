"""`concord export` and `concord verify`: the file round-trips, and any change is detected."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.audit import verify_chain
from coordinator.audit.export import export_ledger
from coordinator.audit.receipts import load_receipts
from coordinator.audit.verify import verify_file
from coordinator.db import connect
from tests.support.ledger_tamper import populate, rechain_export, rewrite_tail, write_receipts


def concord(
    *args: str, database_url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONCORD_LOG_LEVEL": "warning", **(env or {})}
    prefix = ["--database-url", database_url] if database_url else []
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *prefix, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def _export(database_url: str, path: Path) -> tuple[int, bytes]:
    conn = await connect(database_url)
    try:
        return await export_ledger(conn, path, progress=False)
    finally:
        await conn.close()


async def test_export_round_trips_and_verifies_offline(client, tokens, database_url, tmp_path) -> None:
    told = await populate(client, tokens.operator)
    path = tmp_path / "ledger.jsonl"
    exported = await asyncio.to_thread(concord, "export", str(path), database_url=database_url)
    assert exported.returncode == 0, exported.stderr
    head = (await (await client.get("/healthz")).json())["ledger"]
    assert f"exported {head['position']} events" in exported.stdout
    lines = path.read_bytes().splitlines()
    assert len(lines) == head["position"] + 1
    assert json.loads(lines[0]) == {"format": "concord-ledger-export/1", **head}

    # Offline: no database URL at all, and one that does not answer.
    receipts = write_receipts(tmp_path / "receipts", told["receipts"])
    nowhere = {"CONCORD_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    verified = await asyncio.to_thread(
        concord, "verify", str(path), "--receipts", str(receipts), "--json", env=nowhere
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["position"] == head["position"]
    assert report["hash"] == head["hash"]
    assert report["receipts"] == sum(1 + bool(r["issued"]) for r in told["receipts"])
    assert set(report["checks"]) == {"chain", "positions", "invariants", "receipts"}
    human = await asyncio.to_thread(concord, "verify", str(path))
    assert human.returncode == 0 and "RESULT: every check holds" in human.stdout
    assert f"head hash {head['hash']}" in human.stdout


async def test_a_one_byte_change_anywhere_is_detected(client, tokens, database_url, tmp_path) -> None:
    await populate(client, tokens.operator)
    path = tmp_path / "ledger.jsonl"
    await _export(database_url, path)
    original = path.read_bytes()
    assert verify_file(path, progress=False).findings.ok
    # A large file is checked by two processes at once: the same verdicts.
    assert verify_file(path, progress=False, parallel=True).findings.ok
    newline = original.index(b"\n")
    offsets = sorted(
        {
            0,
            20,
            newline,
            newline + 1,
            newline + 12,
            len(original) // 3,
            len(original) // 2,
            len(original) - 40,
            len(original) - 3,
            len(original) - 1,
        }
    )
    for offset in offsets:
        changed = bytearray(original)
        # A different byte of the same kind, so the line still parses where it can.
        old = changed[offset]
        changed[offset] = {ord("a"): ord("b"), ord("0"): ord("1"), ord("A"): ord("B")}.get(
            old, ord("x") if old != ord("x") else ord("y")
        )
        path.write_bytes(bytes(changed))
        findings = verify_file(path, progress=False).findings
        assert not findings.ok, f"a change at byte {offset} ({chr(old)!r}) went unnoticed"
    # Upper case in a hash reads as the same bytes: still refused.
    last = original.rstrip(b"\n").rsplit(b"\n", 1)[1]
    hex_at = len(original) - 1 - 66 + next(i for i, ch in enumerate(last[-66:-2]) if chr(ch) in "abcdef")
    changed = bytearray(original)
    changed[hex_at] = ord(chr(changed[hex_at]).upper())
    path.write_bytes(bytes(changed))
    assert not verify_file(path, progress=False).findings.ok
    assert not verify_file(path, progress=False, parallel=True).findings.ok
    # Lines removed from the end: the header's head no longer matches.
    lines = original.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    truncated = verify_file(path, progress=False).findings
    assert any("lines were added or removed" in f.message for f in truncated.kept)
    failed = await asyncio.to_thread(concord, "verify", str(path))
    assert failed.returncode == 1 and "RESULT: FAILED" in failed.stdout


async def test_verify_names_a_rewrite_the_receipts_reveal(client, tokens, database_url, tmp_path) -> None:
    told = await populate(client, tokens.operator)
    first_issue = min(r["issued"]["position"] for r in told["receipts"] if r["issued"])
    await rewrite_tail(database_url, first_issue - 1, lambda tail: tail[1:])  # drop a confirm
    path = tmp_path / "ledger.jsonl"
    await _export(database_url, path)
    verified = verify_file(
        path, load_receipts(write_receipts(tmp_path / "r", told["receipts"])), progress=False
    )
    assert verified.findings.held("chain")  # recomputed: the file alone looks fine
    receipts = [f for f in verified.findings.kept if f.check == "receipts"]
    assert receipts[0].position == first_issue and receipts[0].number == 1
    invariants = [f for f in verified.findings.kept if f.check == "invariants"]
    assert not invariants  # dropping a confirm leaves a pending number: no invariant breaks


def test_verify_refuses_what_is_not_a_file(tmp_path) -> None:
    missing = concord("verify", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "bad.jsonl").write_text("{not json\n")
    (tmp_path / "x.jsonl").write_text("")
    bad = concord("verify", str(tmp_path / "x.jsonl"), "--receipts", str(tmp_path / "r"))
    assert bad.returncode == 1 and "bad.jsonl:1" in bad.stderr


async def test_verify_reads_window_by_window_in_one_or_two_processes(
    client, tokens, database_url, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large file is read a window at a time (here: a few lines each); a change in any
    window is named at its own position, whichever process reads it."""
    await populate(client, tokens.operator)
    path = tmp_path / "ledger.jsonl"
    await _export(database_url, path)
    monkeypatch.setattr(verify_chain, "WINDOW", 1500)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    assert len(lines) > 8 and len(original) > 6 * 1500
    for parallel in (False, True):
        verified = verify_file(path, progress=False, parallel=parallel)
        assert verified.findings.ok, verified.findings.kept
        assert verified.position == len(lines) - 1
    for position in (2, len(lines) // 2, len(lines) - 2):
        changed = list(lines)
        changed[position] = changed[position].replace(b'"stream":"', b'"stream":"x', 1)
        path.write_bytes(b"".join(changed))
        for parallel in (False, True):
            found = verify_file(path, progress=False, parallel=parallel).findings
            assert [(f.check, f.position) for f in found.kept] == [("chain", position)], found.kept


async def test_verify_names_what_a_rechained_file_breaks(client, tokens, database_url, tmp_path) -> None:
    """A forger who recomputes every hash keeps the chain whole; positions and the data of the
    numbering events still have to hold, and each break is named."""
    await populate(client, tokens.operator)
    path = tmp_path / "ledger.jsonl"
    await _export(database_url, path)
    original = path.read_bytes()

    def forged(forge) -> list[tuple[str, int | None, str]]:
        path.write_bytes(original)
        rechain_export(path, forge)
        findings = verify_file(path, progress=False).findings
        assert findings.held("chain")
        return [(f.check, f.position, f.message) for f in findings.kept]

    def reserved(events: list[dict]) -> dict:
        return next(e for e in events if e["type"] == "NumberReserved")

    def number_as_text(events: list[dict]) -> None:
        reserved(events)["data"]["number"] = "1"

    found = forged(number_as_text)
    assert any(
        check == "invariants" and "NumberReserved data is malformed" in message and "number" in message
        for check, _, message in found
    ), found

    def skipped(events: list[dict]) -> None:
        for event in events[3:]:
            event["position"] += 1

    assert ("positions", 5, "expected position 4, found 5 (events missing)") in forged(skipped)
