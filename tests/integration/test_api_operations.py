"""What operators watch: heartbeats, warnings, events, health, metrics and logs."""

from __future__ import annotations

import itertools
import re

from coordinator.http.keys import POOL, WRITER
from coordinator.monitors.pending_reservations import flag_overdue
from tests.conftest import bearer
from tests.support.api_helpers import add_store, confirm, reserve


async def test_heartbeat_stores_reported_settings_once_and_returns_series(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    report = {"agent_version": "0.1.0", "settings": {"SequentialInvoiceNumbering": "off"}}
    for _ in range(3):
        resp = await client.post("/v1/heartbeat", headers=bearer(store["token"]), json=report)
        assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["settings"]["invoice"]["format"] == "{NUMBER}"
    events = (await (await client.get("/v1/events", headers=bearer(tokens.reader))).json())["events"]
    assert [e["type"] for e in events].count("PeerConfigReported") == 1
    peers = (await (await client.get("/v1/peers", headers=bearer(tokens.reader))).json())["peers"]
    assert peers[0]["reported_settings"] == report["settings"]
    assert peers[0]["agent_version"] == "0.1.0"
    assert peers[0]["last_heartbeat_at"] is not None


async def test_pending_reservation_raises_a_warning_that_clears_on_confirm(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    r = await reserve(client, store["token"], "1")
    app = client.server.app
    assert await flag_overdue(app[POOL], app[WRITER], minutes=0) == 1
    assert await flag_overdue(app[POOL], app[WRITER], minutes=0) == 0  # raised once only
    resp = await client.get("/v1/warnings?state=open", headers=bearer(tokens.reader))
    [warning] = (await resp.json())["warnings"]
    assert warning["code"] == "reservation_pending"
    assert warning["subject"] == r["reservation_id"]
    assert "1" in warning["message"]
    # The number is still the store's: no timer ever reassigns it.
    assert (await reserve(client, store["token"], "2"))["number"] == 2
    await confirm(client, store["token"], r["reservation_id"])
    resp = await client.get("/v1/warnings?state=open", headers=bearer(tokens.reader))
    assert (await resp.json())["warnings"] == []


async def test_operator_resolves_a_warning(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    await reserve(client, store["token"], "1")
    app = client.server.app
    await flag_overdue(app[POOL], app[WRITER], minutes=0)
    [warning] = (await (await client.get("/v1/warnings", headers=bearer(tokens.reader))).json())["warnings"]
    resp = await client.post(f"/v1/warnings/{warning['warning_id']}/resolve", headers=bearer(tokens.operator))
    assert (await resp.json())["state"] == "resolved"
    resp = await client.get("/v1/warnings?state=resolved", headers=bearer(tokens.reader))
    assert [w["warning_id"] for w in (await resp.json())["warnings"]] == [warning["warning_id"]]


async def test_events_page_in_order_with_a_chain(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    for i in range(5):
        await reserve(client, store["token"], str(i))
    seen = []
    after = 0
    while True:
        resp = await client.get(f"/v1/events?after={after}&limit=2", headers=bearer(tokens.reader))
        page = (await resp.json())["events"]
        if not page:
            break
        seen.extend(page)
        after = page[-1]["position"]
    assert [e["position"] for e in seen] == list(range(1, 7))
    for prev, event in itertools.pairwise(seen):
        assert event["prev_hash"] == prev["hash"]
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok"
    assert health["ledger"] == {"position": 6, "hash": seen[-1]["hash"]}


async def test_metrics_and_request_ids(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    resp = await client.post(
        "/v1/reservations",
        headers={**bearer(store["token"]), "X-Request-Id": "req-42"},
        json={"doctype": "invoice", "doc_id": "1", "date": "2026-01-01"},
    )
    assert resp.headers["X-Request-Id"] == "req-42"
    generated = {(await client.get("/healthz")).headers["X-Request-Id"] for _ in range(3)}
    assert len(generated) == 3 and all(len(rid) >= 16 for rid in generated), generated
    text = await (await client.get("/metrics")).text()
    assert 'concord_http_requests_total{method="POST",route="/v1/reservations",status="201"}' in text
    assert "concord_ledger_batch_commands_bucket" in text
    assert re.search(r'^concord_ledger_events_total\{type="NumberReserved"\} [1-9]', text, re.MULTILINE)


async def test_logs_carry_request_id_and_never_a_token(client, tokens, capsys) -> None:

    from concord_logs import configure_logging

    configure_logging(json=True, level="debug")
    store = await add_store(client, tokens.operator)
    await client.post(
        "/v1/reservations",
        headers={**bearer(store["token"]), "X-Request-Id": "r-7"},
        json={"doctype": "invoice", "doc_id": "1", "date": "2026-01-01"},
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if '"r-7"' in line]
    assert lines, err
    assert all('"request_id": "r-7"' in line for line in lines)
    assert store["token"] not in err and tokens.operator not in err
