"""Every endpoint refuses missing, wrong and under-privileged tokens; bad input changes nothing."""

from __future__ import annotations

import re
import uuid

import pytest
from openapi_spec_validator import validate

from coordinator.http.errors import MAX_BODY
from coordinator.http.routes import ROUTES
from tests.conftest import bearer
from tests.support.api_helpers import DOCUMENT, add_store, ledger_position, reserve

GUARDED = [r for r in ROUTES if r.roles]


def _concrete(path: str) -> str:
    return re.sub(
        r"\{(\w+)\}",
        lambda m: (
            "1"
            if m.group(1) == "number"
            else (
                "invoice"
                if m.group(1) in ("name", "series")
                else ("all" if m.group(1) == "period" else str(uuid.uuid4()))
            )
        ),
        path,
    )


@pytest.mark.parametrize("route", GUARDED, ids=lambda r: f"{r.method} {r.path}")
async def test_every_guarded_route_needs_a_valid_token(client, tokens, route) -> None:
    store = await add_store(client, tokens.operator)
    before = await ledger_position(client)
    path = _concrete(route.path)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        resp = await client.request(route.method, path, headers=headers, json={})
        assert resp.status == 401, (route.path, headers)
        body = await resp.json()
        assert body["error"]["code"] == "unauthenticated" and body["error"]["message"]
    for role, token in (("operator", tokens.operator), ("reader", tokens.reader), ("peer", store["token"])):
        if role in route.roles:
            continue
        resp = await client.request(route.method, path, headers=bearer(token), json={})
        assert resp.status == 403, (route.path, role)
        assert role in (await resp.json())["error"]["message"]
    assert await ledger_position(client) == before


async def test_a_store_cannot_touch_another_stores_reservation(client, tokens) -> None:
    alpha = await add_store(client, tokens.operator, "alpha")
    beta = await add_store(client, tokens.operator, "beta")
    r = await reserve(client, alpha["token"], "1")
    before = await ledger_position(client)
    for action, body in (("confirm", {"document": DOCUMENT}), ("release", {"reason": "x"})):
        resp = await client.post(
            f"/v1/reservations/{r['reservation_id']}/{action}", headers=bearer(beta["token"]), json=body
        )
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "not_your_reservation"
    assert await ledger_position(client) == before
    # The same document id in another store is another document.
    assert (await reserve(client, beta["token"], "1"))["number"] == 2


async def test_rotated_and_retired_tokens_stop_working(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    resp = await client.post(f"/v1/peers/{store['peer_id']}/rotate-token", headers=bearer(tokens.operator))
    new_token = (await resp.json())["token"]
    await reserve(client, store["token"], "1", expect=401)
    await reserve(client, new_token, "1")
    resp = await client.delete(f"/v1/peers/{store['peer_id']}", headers=bearer(tokens.operator))
    assert (await resp.json())["state"] == "retired"
    await reserve(client, new_token, "2", expect=401)
    peers = await (await client.get("/v1/peers", headers=bearer(tokens.reader))).json()
    assert peers["peers"][0]["state"] == "retired"
    again = await client.post(
        "/v1/peers", json={"name": "alpha", "url": "http://x.test"}, headers=bearer(tokens.operator)
    )
    assert again.status == 409  # names are never reused


BAD_RESERVATIONS = [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_body"),
    (b'{"doctype": "quote", "doc_id": "1", "date": "2026-01-01"}', "doctype"),
    (b'{"doctype": "invoice", "doc_id": "", "date": "2026-01-01"}', "doc_id"),
    (b'{"doctype": "invoice", "doc_id": "' + b"9" * 65 + b'", "date": "2026-01-01"}', "doc_id"),
    (b'{"doctype": "invoice", "doc_id": "1", "date": "2026-02-30"}', "date"),
    (b'{"doctype": "invoice", "doc_id": "1"}', "date"),
    (b'{"doctype": "invoice", "doc_id": "1", "date": "2026-01-01", "x": 1}', "x"),
    (b'{"doctype": "invoice", "doc_id": "1", "date": "2026-01-01", "event_id": "no"}', "event_id"),
]


@pytest.mark.parametrize(("raw", "named"), BAD_RESERVATIONS)
async def test_bad_reservation_bodies_are_refused_and_change_nothing(client, tokens, raw, named) -> None:
    store = await add_store(client, tokens.operator)
    before = await ledger_position(client)
    resp = await client.post("/v1/reservations", data=raw, headers=bearer(store["token"]))
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert named in error["code"] + error["message"]
    assert await ledger_position(client) == before


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"ClientData": {}}, "DocData"),
        ({"ClientData": {}, "DocData": {"Total": 12.5}}, "decimal numbers must be sent as strings"),
        ({"ClientData": {"Name": "a\u0000b"}, "DocData": {}}, "NUL"),
        ("text", "document"),
    ],
)
async def test_bad_documents_are_refused(client, tokens, document, named) -> None:
    store = await add_store(client, tokens.operator)
    r = await reserve(client, store["token"], "1")
    before = await ledger_position(client)
    resp = await client.post(
        f"/v1/reservations/{r['reservation_id']}/confirm",
        headers=bearer(store["token"]),
        json={"document": document},
    )
    assert resp.status == 400
    assert named in (await resp.json())["error"]["message"]
    assert await ledger_position(client) == before


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"format": "{NUMBER"}, 400, "braces"),
        ({"format": "{ID}"}, 400, "unknown token"),
        ({"reset": "yearly"}, 400, "{YEAR}"),
        ({"increment": 0}, 400, "increment"),
        ({"dedicated": False}, 400, "creditnote"),
        ({"reset": "monthly"}, 400, "reset"),
        ({}, 400, "nothing to change"),
        ({"next": 5, "period": "2026"}, 400, "never resets"),
    ],
)
async def test_bad_series_settings_are_refused(client, tokens, body, status, named) -> None:
    before = await ledger_position(client)
    resp = await client.put("/v1/series/invoice", headers=bearer(tokens.operator), json=body)
    assert resp.status == status
    assert named in (await resp.json())["error"]["message"]
    assert await ledger_position(client) == before


async def test_unknown_things_get_404(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    for method, path, token, body in (
        ("PUT", "/v1/series/quote", tokens.operator, {"start": 1}),
        ("POST", f"/v1/reservations/{uuid.uuid4()}/confirm", store["token"], {"document": DOCUMENT}),
        ("POST", "/v1/reservations/not-a-uuid/release", store["token"], {"reason": "x"}),
        ("POST", f"/v1/warnings/{uuid.uuid4()}/resolve", tokens.operator, {}),
        ("DELETE", f"/v1/peers/{uuid.uuid4()}", tokens.operator, {}),
        ("GET", "/v1/nothing", tokens.operator, None),
    ):
        resp = await client.request(method, path, headers=bearer(token), json=body)
        assert resp.status == 404, path
        assert (await resp.json())["error"]["message"]


async def test_bad_query_parameters(client, tokens) -> None:
    for path in (
        "/v1/reservations?state=lost",
        "/v1/reservations?limit=0",
        "/v1/events?after=x",
        "/v1/events?limit=5000",
        "/v1/warnings?state=closed",
    ):
        resp = await client.get(path, headers=bearer(tokens.operator))
        assert resp.status == 400, path
        assert "=" in (await resp.json())["error"]["message"]


async def test_body_over_the_limit_is_413(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    before = await ledger_position(client)
    big = b'{"doctype": "invoice", "doc_id": "1", "date": "2026-01-01", "pad": "' + (b"x" * MAX_BODY) + b'"}'
    resp = await client.post("/v1/reservations", data=big, headers=bearer(store["token"]))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "body_too_large"
    assert await ledger_position(client) == before


async def test_openapi_document_is_valid_and_names_every_route(client) -> None:
    resp = await client.get("/openapi.json")
    spec = await resp.json()
    validate(spec)
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = {
        (route.method, route.resource.canonical)
        for route in client.server.app.router.routes()
        if route.method != "HEAD" and not route.resource.canonical.startswith("/console")
    }  # the console (coordinator/console/) is HTML, not API
    assert served == documented
    for route in GUARDED:
        assert spec["paths"][route.path][route.method.lower()]["security"] == [{"bearer": []}]
