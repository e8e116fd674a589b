"""Issued documents change after issue; documents numbered before Concord are imported."""

from __future__ import annotations

from coordinator.http.keys import POOL, WRITER
from coordinator.monitors.silent_stores import flag_silent
from tests.conftest import bearer
from tests.support.api_helpers import DOCUMENT, add_store, confirm, ledger_position, reserve

PAID = {"ClientData": {"Name": "Ada"}, "DocData": {"Total": "12.10", "Status": "Paid"}}


async def _events(client, tokens, type_: str) -> list[dict]:
    resp = await client.get("/v1/events?limit=1000", headers=bearer(tokens.reader))
    return [e for e in (await resp.json())["events"] if e["type"] == type_]


async def test_document_update_is_recorded_once_per_change(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    r = await reserve(client, store["token"], "7")
    await confirm(client, store["token"], r["reservation_id"])
    for expected in (True, False):
        resp = await client.put(
            "/v1/documents/invoice/7", headers=bearer(store["token"]), json={"document": PAID}
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["changed"] is expected
    [updated] = await _events(client, tokens, "DocumentUpdated")
    assert updated["data"]["document"] == PAID


async def test_repeated_confirm_brings_a_changed_snapshot_up_to_date(client, tokens) -> None:
    """An agent that crashed before it recorded the acknowledgement confirms again, with the
    document as it is now: the ledger must not keep the stale snapshot."""
    store = await add_store(client, tokens.operator)
    r = await reserve(client, store["token"], "7")
    issued = await confirm(client, store["token"], r["reservation_id"])
    for _ in range(2):
        resp = await client.post(
            f"/v1/reservations/{r['reservation_id']}/confirm",
            headers=bearer(store["token"]),
            json={"document": PAID},
        )
        assert resp.status == 200, await resp.text()
        assert await resp.json() == issued
    [updated] = await _events(client, tokens, "DocumentUpdated")
    assert updated["data"]["document"] == PAID
    assert updated["data"]["doc_id"] == "7"


async def test_update_of_unknown_or_foreign_document_is_refused(client, tokens) -> None:
    alpha = await add_store(client, tokens.operator, "alpha")
    beta = await add_store(client, tokens.operator, "beta")
    r = await reserve(client, alpha["token"], "7")
    await confirm(client, alpha["token"], r["reservation_id"])
    before = await ledger_position(client)
    for token, path in (
        (alpha["token"], "/v1/documents/invoice/8"),
        (beta["token"], "/v1/documents/invoice/7"),
        (alpha["token"], "/v1/documents/creditnote/7"),
    ):
        resp = await client.put(path, headers=bearer(token), json={"document": PAID})
        assert resp.status == 404, path
    resp = await client.put("/v1/documents/quote/7", headers=bearer(alpha["token"]), json={"document": PAID})
    assert resp.status == 404
    assert await ledger_position(client) == before


async def test_import_skips_repeats_and_warns_on_collisions(client, tokens) -> None:
    alpha = await add_store(client, tokens.operator, "alpha")
    beta = await add_store(client, tokens.operator, "beta")
    docs = [
        {"doctype": "invoice", "doc_id": str(i), "number": f"2025-{i}", "document": DOCUMENT}
        for i in range(1, 4)
    ]
    resp = await client.post("/v1/documents/import", headers=bearer(alpha["token"]), json={"documents": docs})
    assert await resp.json() == {"imported": 3, "already_imported": 0, "collisions": []}
    again = await client.post(
        "/v1/documents/import", headers=bearer(alpha["token"]), json={"documents": docs}
    )
    assert await again.json() == {"imported": 0, "already_imported": 3, "collisions": []}
    clash = await client.post(
        "/v1/documents/import",
        headers=bearer(beta["token"]),
        json={"documents": [{"doctype": "invoice", "doc_id": "1", "number": "2025-2", "document": DOCUMENT}]},
    )
    result = await clash.json()
    assert result["imported"] == 0
    assert "invoice 2 of store alpha" in result["collisions"][0]["reason"]
    warnings = (await (await client.get("/v1/warnings?state=open", headers=bearer(tokens.reader))).json())[
        "warnings"
    ]
    assert [w["code"] for w in warnings] == ["import_collision"]
    assert "2025-2" in warnings[0]["message"]
    assert len(await _events(client, tokens, "DocumentImported")) == 3
    # An imported document can be updated like an issued one.
    resp = await client.put(
        "/v1/documents/invoice/1", headers=bearer(alpha["token"]), json={"document": PAID}
    )
    assert (await resp.json())["changed"] is True


async def test_import_refuses_bad_batches(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    before = await ledger_position(client)
    one = {"doctype": "invoice", "doc_id": "1", "number": "A-1", "document": DOCUMENT}
    for body, named in (
        ({"documents": []}, "documents"),
        ({"documents": [one, one]}, "twice"),
        ({"documents": [{**one, "number": ""}]}, "number"),
        ({"documents": [{**one, "document": {"DocData": {}}}]}, "ClientData"),
    ):
        resp = await client.post("/v1/documents/import", headers=bearer(store["token"]), json=body)
        assert resp.status == 400
        assert named in (await resp.json())["error"]["message"]
    assert await ledger_position(client) == before


async def _open_codes(client, tokens) -> list[str]:
    resp = await client.get("/v1/warnings?state=open", headers=bearer(tokens.reader))
    return sorted(w["code"] for w in (await resp.json())["warnings"])


async def test_sequential_numbering_in_whmcs_warns_until_switched_off(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    for value, expected in (("on", ["whmcs_sequential_numbering"]), ("on", None), ("", [])):
        resp = await client.post(
            "/v1/heartbeat",
            headers=bearer(store["token"]),
            json={"agent_version": "1", "settings": {"SequentialInvoiceNumbering": value}},
        )
        assert resp.status == 200
        if expected is not None:
            assert await _open_codes(client, tokens) == expected
    assert len(await _events(client, tokens, "WarningRaised")) == 1


async def test_silent_store_warns_until_its_next_heartbeat(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    await client.post("/v1/heartbeat", headers=bearer(store["token"]), json={"agent_version": "1"})
    app = client.server.app
    assert await flag_silent(app[POOL], app[WRITER], interval=15, missed=3) == 0
    assert await flag_silent(app[POOL], app[WRITER], interval=0, missed=3) == 1
    assert await flag_silent(app[POOL], app[WRITER], interval=0, missed=3) == 0
    assert await _open_codes(client, tokens) == ["peer_silent"]
    await client.post("/v1/heartbeat", headers=bearer(store["token"]), json={"agent_version": "1"})
    assert await _open_codes(client, tokens) == []
