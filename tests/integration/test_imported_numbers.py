"""Numbers carried by imported documents are never handed out again (issue 12, item 13)."""

from __future__ import annotations

from coordinator.audit.replay import audit
from coordinator.db import create_pool
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter
from tests.conftest import bearer
from tests.support.api_helpers import DOCUMENT, add_store, confirm, ledger_position, reserve


async def _set_series(client, tokens, **body) -> None:
    resp = await client.put("/v1/series/invoice", headers=bearer(tokens.operator), json=body)
    assert resp.status == 200, await resp.text()


async def _import(client, token: str, numbers: dict[str, str]) -> dict:
    resp = await client.post(
        "/v1/documents/import",
        headers=bearer(token),
        json={
            "documents": [
                {"doctype": "invoice", "doc_id": doc_id, "number": number, "document": DOCUMENT}
                for doc_id, number in numbers.items()
            ]
        },
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def _events(client, tokens, type_: str) -> list[dict]:
    resp = await client.get("/v1/events?limit=1000", headers=bearer(tokens.reader))
    return [e for e in (await resp.json())["events"] if e["type"] == type_]


async def _audit_passes(database_url: str) -> None:
    result = await audit(database_url, progress=False)
    assert result.findings.ok, [f.line() for f in result.findings.kept]
    assert {"invariants", "projections"} <= result.findings.ran
    assert result.rows["external_numbers"] > 0


async def test_reserve_skips_numbers_of_imported_documents(client, tokens, database_url) -> None:
    """The issue's case: import INV-60 and INV-61, set next 55, issue 10."""
    alpha = await add_store(client, tokens.operator, "alpha")
    beta = await add_store(client, tokens.operator, "beta")
    await _set_series(client, tokens, format="INV-{NUMBER}")
    assert await _import(client, alpha["token"], {"900": "INV-60", "901": "INV-61"}) == {
        "imported": 2,
        "already_imported": 0,
        "collisions": [],
    }
    await _set_series(client, tokens, next=55)
    issued = []
    for i in range(10):
        store = (alpha, beta)[i % 2]
        r = await reserve(client, store["token"], str(i))
        await confirm(client, store["token"], r["reservation_id"])
        issued.append(r["formatted"])
    assert issued == [f"INV-{n}" for n in (55, 56, 57, 58, 59, 62, 63, 64, 65, 66)]
    [skip] = await _events(client, tokens, "ExternalNumberDetected")
    assert {k: skip["data"][k] for k in ("series", "period", "first", "last", "next")} == {
        "series": "invoice",
        "period": "all",
        "first": 60,
        "last": 61,
        "next": 62,
    }
    await _audit_passes(database_url)


async def test_a_retried_reserve_that_skipped_gets_its_first_answer(client, tokens) -> None:
    """The skip is the reserve's first event: it carries the request's event id."""
    store = await add_store(client, tokens.operator)
    await _set_series(client, tokens, format="INV-{NUMBER}")
    await _import(client, store["token"], {"900": "INV-1"})
    body = {
        "doctype": "invoice",
        "doc_id": "7",
        "date": "2026-03-01",
        "event_id": "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
    }
    answers = []
    for _ in range(2):
        resp = await client.post("/v1/reservations", headers=bearer(store["token"]), json=body)
        assert resp.status in (200, 201), await resp.text()
        answers.append(await resp.json())
    assert answers[0]["formatted"] == answers[1]["formatted"] == "INV-2"


async def test_yearly_series_reads_the_period_from_the_text(client, tokens, database_url) -> None:
    store = await add_store(client, tokens.operator)
    await _set_series(client, tokens, format="{YEAR}/{NUMBER:4}", reset="yearly")
    await _import(client, store["token"], {"900": "2026/0001", "901": "2025/0002"})
    first = await reserve(client, store["token"], "1", date="2026-03-01")
    last_year = await reserve(client, store["token"], "2", date="2025-12-30")
    assert (first["formatted"], last_year["formatted"]) == ("2026/0002", "2025/0001")
    following = await reserve(client, store["token"], "3", date="2025-12-31")
    assert following["formatted"] == "2025/0003"
    await _audit_passes(database_url)


async def test_import_of_a_reserved_number_is_a_collision(client, tokens) -> None:
    """A number handed out but not yet confirmed is taken too."""
    alpha = await add_store(client, tokens.operator, "alpha")
    beta = await add_store(client, tokens.operator, "beta")
    await _set_series(client, tokens, format="INV-{NUMBER}")
    held = await reserve(client, alpha["token"], "1")
    assert held["formatted"] == "INV-1"
    result = await _import(client, beta["token"], {"77": "INV-1", "78": "INV-0001"})
    assert result["imported"] == 0
    reasons = [c["reason"] for c in result["collisions"]]
    assert all(
        "Concord handed out as INV-1 (reserved) to invoice 1 of store alpha" in reason for reason in reasons
    ), reasons
    # The same number in another spelling, by an imported document, is a collision too.
    await _import(client, beta["token"], {"80": "INV-5"})
    again = await _import(client, alpha["token"], {"81": "INV-05"})
    assert "the imported INV-5 carries already" in again["collisions"][0]["reason"]


async def test_import_claims_a_released_number_from_the_pool(client, tokens, database_url) -> None:
    store = await add_store(client, tokens.operator)
    await _set_series(client, tokens, format="INV-{NUMBER}")
    first = await reserve(client, store["token"], "1")
    await reserve(client, store["token"], "2")
    resp = await client.post(
        f"/v1/reservations/{first['reservation_id']}/release",
        headers=bearer(store["token"]),
        json={"reason": "cancelled"},
    )
    assert resp.status == 200, await resp.text()
    assert (await _import(client, store["token"], {"90": "INV-1"}))["imported"] == 1
    # INV-1 left the pool: the next reserve takes the counter's next number.
    assert (await reserve(client, store["token"], "3"))["formatted"] == "INV-3"
    await _audit_passes(database_url)


async def test_texts_outside_the_format_are_imported_without_a_number(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    await _set_series(client, tokens, format="INV-{NUMBER}")
    before = await ledger_position(client)
    assert (await _import(client, store["token"], {"1": "OLD-1", "2": "INV-٢"}))["imported"] == 2
    assert await ledger_position(client) == before + 2
    assert (await reserve(client, store["token"], "3"))["formatted"] == "INV-1"


async def test_a_writer_with_nothing_cached_reads_an_import_with_the_current_format(
    client, tokens, database_url
) -> None:
    """A coordinator just started knows no format and no store name until its first batch
    is opened: an import as that first batch must still see the reserved number."""
    store = await add_store(client, tokens.operator)
    await _set_series(client, tokens, format="{STORE}-{NUMBER}")
    held = await reserve(client, store["token"], "1")
    pool = await create_pool(database_url, size=2)
    fresh = LedgerWriter(pool)
    await fresh.start()
    try:
        result = await fresh.execute(
            c.ImportDocuments(
                peer_id=store["peer_id"],
                documents=(
                    c.ImportedDocument(
                        doctype="invoice", doc_id="77", formatted=held["formatted"], document=DOCUMENT
                    ),
                ),
            )
        )
    finally:
        await fresh.stop()
        await pool.close()
    assert result["imported"] == 0
    assert "Concord handed out as alpha-1 (reserved)" in result["collisions"][0]["reason"]
