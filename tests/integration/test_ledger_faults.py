"""The ledger writer under faults it must survive without hurting other requests.

A command that fails inside PostgreSQL fails alone (a trigger stands in for any value the
boundary let through); a failed batch leaves nothing of itself in the writer's memory; an
event id answers only the request that first used it; a held ledger lock, a full queue and
a slow ledger each get a bounded 503 with Retry-After, and nothing the caller was told is
unwritten is written later.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from coordinator.app import create_app
from coordinator.ledger.writer import LedgerWriter
from coordinator.settings import Settings
from tests.conftest import Tokens, bearer
from tests.support.api_helpers import DOCUMENT, add_store, confirm, ledger_held, reserve, until_writer_waits
from tests.support.concord_cli import concord

# Refuses one kind of row the way PostgreSQL refuses a bad value (SQLSTATE class 22).
REFUSE_SQL = """
CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {condition} THEN
        RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_refuse BEFORE INSERT OR UPDATE ON {table}
    FOR EACH ROW EXECUTE FUNCTION test_refuse();
"""


async def _refuse(database_url: str, table: str, condition: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(REFUSE_SQL.format(table=table, condition=condition))
    finally:
        await conn.close()


def _audit(database_url: str) -> None:
    concord(database_url, "audit")  # exit 0 only when every check holds


async def test_a_command_failing_in_the_database_fails_alone(
    client, tokens: Tokens, database_url: str
) -> None:
    good = await add_store(client, tokens.operator, "good")
    bad = await add_store(client, tokens.operator, "bad")
    await _refuse(database_url, "reservations", "NEW.doc_id LIKE 'poison%'")

    async def post_reserve(token: str, doc_id: str) -> tuple[int, dict[str, Any]]:
        resp = await client.post(
            "/v1/reservations",
            headers=bearer(token),
            json={"doctype": "invoice", "doc_id": doc_id, "date": "2026-03-01"},
        )
        return resp.status, await resp.json()

    numbers: list[int] = []
    for round_ in range(5):
        answers = await asyncio.gather(
            post_reserve(bad["token"], f"poison-{round_}"),
            *(post_reserve(good["token"], f"{round_}-{k}") for k in range(30)),
        )
        (poison_status, poison), *rest = answers
        assert poison_status == 400 and poison["error"]["code"] == "invalid_value", poison
        assert [status for status, _ in rest] == [201] * 30, rest
        numbers += [answer["number"] for _, answer in rest]
    assert sorted(numbers) == list(range(1, 151))
    # The poisoned reserves were written nowhere: the next number follows on.
    assert (await reserve(client, bad["token"], "fine"))["number"] == 151
    metrics = await (await client.get("/metrics")).text()
    assert 'concord_ledger_faults_total{kind="command_failed"}' in metrics
    await asyncio.to_thread(_audit, database_url)  # the app in this loop must keep running


async def test_a_failed_batch_leaves_nothing_in_memory(client, tokens: Tokens, database_url: str) -> None:
    """On an empty ledger, a series change that fails in the database must not number the
    next document with the settings that were never stored."""
    await _refuse(database_url, "series", "NEW.settings->>'format' = 'PH-{NUMBER:4}'")
    resp = await client.put(
        "/v1/series/invoice", headers=bearer(tokens.operator), json={"format": "PH-{NUMBER:4}", "start": 500}
    )
    assert resp.status == 400, await resp.text()
    store = await add_store(client, tokens.operator)
    first = await reserve(client, store["token"], "1")
    assert (first["number"], first["formatted"]) == (1, "1")
    await confirm(client, store["token"], first["reservation_id"])
    await asyncio.to_thread(_audit, database_url)  # the app in this loop must keep running


async def test_an_event_id_answers_only_its_own_request(client, tokens: Tokens) -> None:
    a = await add_store(client, tokens.operator, "a")
    b = await add_store(client, tokens.operator, "b")
    event_id = str(uuid.uuid4())
    body = {"doctype": "invoice", "doc_id": "7", "date": "2026-03-01", "event_id": event_id}

    async def post(path: str, token: str, json: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        resp = await client.post(path, headers=bearer(token), json=json)
        return resp.status, await resp.json()

    status, first = await post("/v1/reservations", a["token"], body)
    assert status == 201
    assert await post("/v1/reservations", a["token"], body) == (200, first)  # a retry

    # Another store, another document, another kind of command: refused, nothing written.
    for token, json in ((b["token"], body), (a["token"], {**body, "doc_id": "8"})):
        status, refused = await post("/v1/reservations", token, json)
        assert (status, refused["error"]["code"]) == (409, "event_id_reused"), refused
    rid = first["reservation_id"]
    status, refused = await post(
        f"/v1/reservations/{rid}/confirm", a["token"], {"document": DOCUMENT, "event_id": event_id}
    )
    assert (status, refused["error"]["code"]) == (409, "event_id_reused"), refused
    events = await (await client.get("/v1/events", headers=bearer(tokens.reader))).json()
    registered = next(e for e in events["events"] if e["type"] == "PeerRegistered")
    status, refused = await post(
        f"/v1/reservations/{rid}/release", a["token"], {"reason": "x", "event_id": registered["event_id"]}
    )
    assert (status, refused["error"]["code"]) == (409, "event_id_reused"), refused

    # Store b's own reserve of document 7 still runs, with a new id.
    status, own = await post("/v1/reservations", b["token"], {**body, "event_id": str(uuid.uuid4())})
    assert status == 201 and own["peer_id"] == b["peer_id"] and own["number"] == 2
    assert (await confirm(client, a["token"], rid))["state"] == "issued"


@pytest.fixture
async def slow_client(aiohttp_client, database_url: str, tokens: Tokens, tmp_path: Path):
    """An app that waits at most 2 s for the ledger and queues at most 3 commands."""
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        timezone="UTC",
        answer_timeout_seconds=2.0,
        database_timeout_seconds=30.0,
        queue_limit=3,
    )
    return await aiohttp_client(create_app(settings))


async def test_a_held_ledger_gets_bounded_503s_and_writes_nothing_it_refused(
    slow_client, tokens: Tokens, database_url: str
) -> None:
    client = slow_client
    store = await add_store(client, tokens.operator)
    async with ledger_held(database_url) as holder:  # a replica stuck mid-batch

        async def post_reserve(doc_id: str) -> tuple[int, dict[str, Any], str | None]:
            resp = await client.post(
                "/v1/reservations",
                headers=bearer(store["token"]),
                json={"doctype": "invoice", "doc_id": doc_id, "date": "2026-03-01"},
            )
            return resp.status, await resp.json(), resp.headers.get("Retry-After")

        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(post_reserve("held-0"))
        await until_writer_waits(holder)
        answers = [*await asyncio.gather(*(post_reserve(f"held-{k}") for k in range(1, 8))), await first]
        waited = loop.time() - started
        codes = sorted(answer["error"]["code"] for _, answer, _ in answers)
        assert all(status == 503 and after == "1" for status, _, after in answers), answers
        # One batch waits for the lock, three commands wait in the queue, the rest are
        # refused at once; none of them waited longer than the answer timeout.
        assert codes == ["busy"] * 4 + ["unavailable"] * 4, codes
        assert waited < 5, waited
    after = await reserve(client, store["token"], "after")
    assert after["number"] == 1, "a command whose caller was told 'not written' was written"
    health = await client.get("/healthz")
    assert health.status == 200, await health.text()


async def _health_until(client: Any, status: int, within: float = 10.0) -> dict[str, Any]:
    """``/healthz`` once it answers ``status`` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        resp = await client.get("/healthz")
        body = await resp.json()
        if resp.status == status:
            return body
        assert loop.time() < deadline, f"/healthz still {resp.status} {body}"
        await asyncio.sleep(0.1)


async def test_a_read_only_database_gets_503_until_it_is_writable_again(
    client, tokens: Tokens, database_url: str
) -> None:
    """What a failover looks like from the coordinator: its connections end, and the server
    it reaches again accepts reads but refuses writes until it is promoted."""
    store = await add_store(client, tokens.operator)
    admin = await asyncpg.connect(database_url)
    name = await admin.fetchval("SELECT current_database()")

    async def sessions_read_only(on: bool) -> None:
        await admin.execute(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'
        )
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )

    try:
        await sessions_read_only(True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:  # a pooled connection ended mid-use may fail a read once first
            resp = await client.post(
                "/v1/reservations",
                headers=bearer(store["token"]),
                json={"doctype": "invoice", "doc_id": "1", "date": "2026-03-01"},
            )
            body = await resp.json()
            assert resp.status == 503 and resp.headers["Retry-After"] == "1", body
            assert body["error"]["code"] == "unavailable", body  # refused: certainly unwritten
            if "read-only" in body["error"]["message"] or loop.time() > deadline:
                break
        assert "read-only" in body["error"]["message"], body
        health = await _health_until(client, 503)
        assert "read-only" in health["reason"], health
        await sessions_read_only(False)
        await _health_until(client, 200)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await admin.close()
    assert (await reserve(client, store["token"], "1"))["number"] == 1


async def test_the_writer_starts_again_after_a_crash_of_its_loop(
    aiohttp_client, settings: Settings, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that ends the writer's loop must not stop numbering for good, nor leave the
    callers of the batch it held waiting."""
    write = LedgerWriter._write_isolating
    crashes: list[int] = []

    async def crash_once(self: LedgerWriter, batch: list[Any]) -> None:
        if not crashes:
            crashes.append(len(batch))
            raise RuntimeError("a bug in the writer's loop")
        await write(self, batch)

    monkeypatch.setattr(LedgerWriter, "_write_isolating", crash_once)
    client = await aiohttp_client(create_app(settings))
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.post(
        "/v1/peers", json={"name": "alpha", "url": "http://127.0.0.1:8701"}, headers=bearer(tokens.operator)
    )
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (503, "unavailable"), body
    assert loop.time() - started < 2, "the crashed batch's caller waited for the timeout"
    assert crashes == [1]
    store = await add_store(client, tokens.operator)  # the same request again: written now
    assert (await reserve(client, store["token"], "1"))["number"] == 1


async def test_a_batch_none_of_which_could_be_written_is_a_503(
    slow_client, tokens: Tokens, database_url: str
) -> None:
    store = await add_store(slow_client, tokens.operator)
    async with ledger_held(database_url):
        resp = await slow_client.post(
            "/v1/reservations/batch",
            headers=bearer(store["token"]),
            json={
                "documents": [
                    {"doctype": "invoice", "doc_id": str(k), "date": "2026-03-01"} for k in range(2)
                ]
            },
        )
        body = await resp.json()
        assert (resp.status, resp.headers.get("Retry-After")) == (503, "1"), body
        assert body["error"]["code"] == "unavailable", body
    assert (await reserve(slow_client, store["token"], "0"))["number"] == 1
