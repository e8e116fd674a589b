"""Small helpers for API tests: a store with its token, a reserve-confirm round."""

from __future__ import annotations

from typing import Any

from tests.conftest import bearer

DOCUMENT = {"ClientData": {"Name": "Ada"}, "DocData": {"Total": "12.10"}}


async def add_store(client: Any, operator: str, name: str = "alpha") -> dict[str, Any]:
    resp = await client.post("/v1/peers", json={"name": name, "url": "http://127.0.0.1:8701"},
                             headers=bearer(operator))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def reserve(client: Any, token: str, doc_id: str, *, doctype: str = "invoice",
                  date: str = "2026-03-01", expect: int = 201) -> dict[str, Any]:
    resp = await client.post("/v1/reservations", headers=bearer(token),
                             json={"doctype": doctype, "doc_id": doc_id, "date": date})
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def confirm(client: Any, token: str, reservation_id: str) -> dict[str, Any]:
    resp = await client.post(f"/v1/reservations/{reservation_id}/confirm", headers=bearer(token),
                             json={"document": DOCUMENT})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def ledger_position(client: Any) -> int:
    resp = await client.get("/healthz")
    return (await resp.json())["ledger"]["position"]
