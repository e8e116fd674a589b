"""The coordinator's background chain check: /healthz shows how far it verified, and a
broken chain raises a warning."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg

from coordinator.http.keys import CHAIN_WATCH
from tests.conftest import bearer
from tests.support.ledger_tamper import populate, rewrite_tail


async def _health(client) -> dict:
    return await (await client.get("/healthz")).json()


async def _open_warnings(client, operator: str) -> list[dict]:
    resp = await client.get("/v1/warnings?state=open", headers=bearer(operator))
    assert resp.status == 200
    body = await resp.json()
    return body["warnings"] if isinstance(body, dict) else body


async def test_new_events_are_verified_in_the_background(client, tokens) -> None:
    await populate(client, tokens.operator)
    head = (await _health(client))["ledger"]["position"]
    for _ in range(50):  # the check runs every ChainWatch.CHECK_SECONDS
        health = await _health(client)
        if health["chain"]["verified_position"] == head:
            break
        await asyncio.sleep(0.1)
    assert health["chain"] == {"verified_position": head, "broken_at": None}
    assert health["ledger"]["position"] == head


async def test_a_forged_event_raises_a_warning(client, tokens, database_url) -> None:
    await populate(client, tokens.operator)
    watch = client.app[CHAIN_WATCH]
    await watch.check()
    head = watch.position
    conn = await asyncpg.connect(database_url)
    try:  # appended behind the writer's back, with a hash that is not the chain's
        await conn.execute(
            "INSERT INTO events (position, event_id, type, stream, data, recorded_at, prev_hash,"
            " hash) SELECT position + 1, $1, 'WarningResolved', 'x', '{}', now(), hash, $2"
            " FROM events WHERE position = $3",
            uuid.uuid4(),
            hashlib.sha256(b"x").digest(),
            head,
        )
    finally:
        await conn.close()
    await watch.check()
    health = await _health(client)
    assert health["chain"] == {"verified_position": head, "broken_at": head + 1}
    (warning,) = [
        w for w in await _open_warnings(client, tokens.operator) if w["code"] == "ledger_chain_broken"
    ]
    assert f"position {head + 1}" in warning["message"]
    assert await watch.check() == 0  # stays stopped at the break


async def test_a_tail_rewritten_after_verification_is_caught(client, tokens, database_url) -> None:
    await populate(client, tokens.operator)
    watch = client.app[CHAIN_WATCH]
    await watch.check()
    head = watch.position

    def forge(tail: list[dict]) -> list[dict]:
        tail[-1]["data"]["reason"] = "forged"
        return tail

    await rewrite_tail(database_url, head - 2, forge)
    await watch.check()
    assert (await _health(client))["chain"]["broken_at"] == head
    assert any(w["code"] == "ledger_chain_broken" for w in await _open_warnings(client, tokens.operator))
