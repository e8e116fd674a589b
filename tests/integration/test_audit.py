"""`concord audit`: a clean ledger passes; each kind of tampering is detected and named."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from coordinator.audit.findings import Finding
from coordinator.audit.receipts import load_receipts
from coordinator.audit.replay import Replay, audit
from coordinator.db import connect
from tests.support.ledger_tamper import populate, rewrite_tail, superuser, write_receipts


def named(result: Any, check: str) -> list[Finding]:
    return [f for f in result.findings.kept if f.check == check]


async def test_a_clean_ledger_passes_every_check(client, tokens, database_url, tmp_path) -> None:
    told = await populate(client, tokens.operator)
    receipts = load_receipts(write_receipts(tmp_path / "r", told["receipts"]))
    result = await audit(database_url, receipts=receipts, progress=False)
    assert result.findings.ok, [f.line() for f in result.findings.kept]
    assert result.findings.ran >= {"chain", "positions", "invariants", "replay", "projections", "receipts"}
    assert result.receipts == len(receipts) > 10
    (invoice,) = result.series
    assert invoice["released"] == [told["pool"]]
    assert result.rows["reservations"] == 9 and result.rows["released_numbers"] == 1
    async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as pool:
        left = await pool.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'concord_audit_%'")
    assert left == 0  # the scratch schema is dropped


async def test_an_edited_event_is_named(client, tokens, database_url) -> None:
    await populate(client, tokens.operator)
    position = await _position_of(database_url, "NumberIssued", 2)
    await superuser(
        database_url,
        "UPDATE events SET data = jsonb_set(data, '{document,DocData,Total}',"
        " '\"0.01\"') WHERE position = $1",
        position,
    )
    result = await audit(database_url, progress=False)
    assert not result.findings.ok
    (broken,) = named(result, "chain")
    assert broken.position == position and "changed after it was written" in broken.message
    # The replay follows the edited event, so the document row differs from the live one.
    (snapshot,) = named(result, "projections")
    assert snapshot.table == "documents" and "column snapshot" in snapshot.message
    assert snapshot.position == position and "0.01" in snapshot.message


async def test_a_rewritten_tail_is_caught_by_the_receipts(client, tokens, database_url, tmp_path) -> None:
    told = await populate(client, tokens.operator)
    receipts = load_receipts(write_receipts(tmp_path / "r", told["receipts"]))
    last_issue = max(r["issued"]["position"] for r in told["receipts"] if r["issued"])

    def forge(tail: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The last confirm now carries another total; the events after it are dropped.
        first = tail[0]
        first["data"]["document"]["DocData"]["Total"] = "1.00"
        return [first]

    await rewrite_tail(database_url, last_issue - 1, forge)
    without = await audit(database_url, progress=False)
    assert not named(without, "chain")  # the chain was recomputed: only receipts can tell
    result = await audit(database_url, receipts=receipts, progress=False)
    found = named(result, "receipts")
    assert found and found[0].position == last_issue
    assert "rewritten" in found[0].message
    issued = next(r for r in told["receipts"] if r["issued"] and r["issued"]["position"] == last_issue)
    assert (found[0].series, found[0].period, found[0].number) == ("invoice", "all", issued["number"])


async def test_a_corrupted_projection_row_is_named_and_rebuilt(client, tokens, database_url) -> None:
    await populate(client, tokens.operator)
    await superuser(database_url, "UPDATE counters SET next = 3 WHERE series = 'invoice'")
    await superuser(database_url, "UPDATE reservations SET state = 'issued' WHERE number = 5")
    result = await audit(database_url, progress=False)
    lines = {(f.table, f.key, f.message.split(":")[0]) for f in named(result, "projections")}
    assert ("counters", "(invoice, all)", "column next") in lines
    assert any(t == "reservations" and m == "column state" for t, _, m in lines)
    assert result.findings.held("chain") and result.findings.held("invariants")

    rebuilt = await audit(database_url, rebuild=True, progress=False)
    assert rebuilt.rebuilt and rebuilt.findings.ok
    after = await audit(database_url, progress=False)
    assert after.findings.ok, [f.line() for f in after.findings.kept]
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT next FROM counters WHERE series = 'invoice'") == 9
        assert await conn.fetchval("SELECT count(*) FROM warnings WHERE code = 'projections_rebuilt'") == 1
    finally:
        await conn.close()


async def test_a_number_removed_from_the_pool_is_named(client, tokens, database_url) -> None:
    told = await populate(client, tokens.operator)
    await superuser(database_url, "DELETE FROM released_numbers")
    result = await audit(database_url, progress=False)
    (missing,) = named(result, "projections")
    assert (missing.table, missing.series, missing.period, missing.number) == (
        "released_numbers",
        "invoice",
        "all",
        told["pool"],
    )
    assert "missing from the live table" in missing.message


async def test_rebuild_is_refused_when_the_chain_is_broken(client, tokens, database_url) -> None:
    await populate(client, tokens.operator)
    position = await _position_of(database_url, "NumberReserved", 1)
    await superuser(
        database_url,
        "UPDATE events SET data = jsonb_set(data, '{number}', '2') WHERE position = $1",
        position,
    )
    await superuser(database_url, "UPDATE counters SET next = 1")
    result = await audit(database_url, rebuild=True, progress=False)
    assert not result.rebuilt
    assert any("not rebuilt" in f.message for f in named(result, "replay"))
    invariants = named(result, "invariants")
    assert invariants and all(f.series == "invoice" for f in invariants)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT next FROM counters WHERE series = 'invoice'") == 1
    finally:
        await conn.close()


async def _position_of(database_url: str, type_: str, nth: int) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT position FROM events WHERE type = $1 ORDER BY position OFFSET $2 LIMIT 1", type_, nth - 1
        )
    finally:
        await conn.close()


async def test_the_replay_reads_the_ledger_and_cannot_write_it(client, tokens, database_url) -> None:
    await populate(client, tokens.operator)
    conn = await connect(database_url)
    replay = Replay(conn)
    try:
        head = await conn.fetchval("SELECT max(position) FROM public.events")
        await replay.create()
        # Unqualified, "events" is the scratch view the batch functions see: the ledger itself.
        assert await conn.fetchval("SELECT max(position) FROM events") == head > 10
        with pytest.raises(asyncpg.PostgresError, match="refused"):
            await conn.execute(
                "INSERT INTO events SELECT position + 1, gen_random_uuid(), type,"
                " stream, data, recorded_at, hash, hash FROM events"
                " ORDER BY position DESC LIMIT 1"
            )
        assert await conn.fetchval("SELECT max(position) FROM public.events") == head
    finally:
        await replay.drop()
        await conn.close()


async def test_a_failure_mid_replay_surfaces_and_leaves_no_scratch_schema(
    client, tokens, database_url, monkeypatch
) -> None:
    await populate(client, tokens.operator)

    def failing_check(self: object, rows: object, events: object) -> None:
        raise RuntimeError("check failed while the database was writing")

    # The checks run while the chunk's round trip is in flight: the error must come out as
    # itself, after that statement has finished, and the scratch schema still be dropped.
    monkeypatch.setattr("coordinator.audit.replay._Checks.check", failing_check)
    with pytest.raises(RuntimeError, match="while the database was writing"):
        await audit(database_url, progress=False)
    async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as pool:
        left = await pool.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'concord_audit_%'")
    assert left == 0
