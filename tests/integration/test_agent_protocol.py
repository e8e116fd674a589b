"""Agents the coordinator serves, and settings every store must share (issue 12, 12 and 14)."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import pytest

from agent.client import PROTOCOL, PROTOCOL_HEADER, CoordinatorRefused
from agent.service import run_agent
from agent.settings import AgentSettings
from agent.whmcs.database import parse_mysql_url
from coordinator.app import create_app
from coordinator.http import agent_protocol
from tests.conftest import bearer
from tests.support.api_helpers import add_store, ledger_position


async def _beat(
    client,
    token: str,
    *,
    protocol: str | None = str(PROTOCOL),
    rule: str | None = "negative_total",
    agent_version: str = "1.0",
) -> object:
    headers = bearer(token)
    if protocol is not None:
        headers[PROTOCOL_HEADER] = protocol
    settings = {} if rule is None else {"credit_note_rule": rule}
    return await client.post(
        "/v1/heartbeat", headers=headers, json={"agent_version": agent_version, "settings": settings}
    )


def test_the_agent_speaks_a_protocol_the_coordinator_serves() -> None:
    assert agent_protocol.OLDEST <= PROTOCOL <= agent_protocol.NEWEST
    assert PROTOCOL_HEADER == agent_protocol.HEADER


@pytest.mark.parametrize(
    ("sent", "upgrade"),
    [
        (str(agent_protocol.OLDEST - 1), "upgrade concord-agent"),
        (str(agent_protocol.NEWEST + 1), "upgrade the coordinator"),
    ],
)
async def test_an_agent_of_another_protocol_is_refused_naming_both(
    client, tokens, sent: str, upgrade: str
) -> None:
    store = await add_store(client, tokens.operator)
    before = await ledger_position(client)
    for path, body in (
        ("/v1/heartbeat", {"agent_version": "0.1", "settings": {}}),
        ("/v1/reservations", {"doctype": "invoice", "doc_id": "1", "date": "2026-03-01"}),
    ):
        resp = await client.post(path, headers={**bearer(store["token"]), PROTOCOL_HEADER: sent}, json=body)
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "agent_protocol_unsupported"
        assert f"this agent speaks protocol {sent}" in error["message"]
        assert f"(concord {version('concord')}) speaks agent protocol" in error["message"]
        assert upgrade in error["message"]
    assert await ledger_position(client) == before


@pytest.mark.parametrize("sent", ["٢", "2.0", "", "99999", "two"])
async def test_a_malformed_protocol_header_is_a_clear_400(client, tokens, sent: str) -> None:
    store = await add_store(client, tokens.operator)
    resp = await _beat(client, store["token"], protocol=sent)
    assert resp.status == 400
    assert PROTOCOL_HEADER in (await resp.json())["error"]["message"]
    # Whoever names an agent protocol is held to it, whatever its token.
    resp = await client.get("/v1/series", headers={**bearer(tokens.operator), PROTOCOL_HEADER: sent})
    assert resp.status == 400


async def test_agents_and_api_clients_without_the_header_are_served(client, tokens) -> None:
    store = await add_store(client, tokens.operator)
    for protocol in (str(PROTOCOL), None):
        resp = await _beat(client, store["token"], protocol=protocol, agent_version="9.9.9")
        assert resp.status == 200, await resp.text()
    resp = await client.get("/v1/peers", headers=bearer(tokens.reader))
    [peer] = (await resp.json())["peers"]
    assert peer["agent_version"] == "9.9.9"


async def _drift(client, tokens) -> dict[str, str]:
    resp = await client.get("/v1/warnings?state=open", headers=bearer(tokens.reader))
    return {
        w["subject"]: w["message"] for w in (await resp.json())["warnings"] if w["code"] == "settings_drift"
    }


async def test_a_store_whose_credit_note_rule_differs_is_warned(client, tokens) -> None:
    alpha = await add_store(client, tokens.operator, "alpha")
    beta = await add_store(client, tokens.operator, "beta")
    gamma = await add_store(client, tokens.operator, "gamma")
    for store in (alpha, beta):
        assert (await _beat(client, store["token"])).status == 200
    assert (await _beat(client, gamma["token"], rule="none")).status == 200
    drift = await _drift(client, tokens)
    assert list(drift) == [gamma["peer_id"]]
    assert "store gamma decides which documents are credit notes by rule 'none'" in drift[gamma["peer_id"]]
    assert "'negative_total'" in drift[gamma["peer_id"]]
    # Repeated heartbeats keep one warning; setting the rule right resolves it.
    assert (await _beat(client, gamma["token"], rule="none")).status == 200
    assert list(await _drift(client, tokens)) == [gamma["peer_id"]]
    assert (await _beat(client, gamma["token"])).status == 200
    assert await _drift(client, tokens) == {}


async def test_on_a_tie_the_default_rule_is_the_usual_one(client, tokens) -> None:
    alpha = await add_store(client, tokens.operator, "alpha")
    beta = await add_store(client, tokens.operator, "beta")
    assert (await _beat(client, alpha["token"], rule="none")).status == 200
    assert await _drift(client, tokens) == {}  # alone, nothing to differ from
    assert (await _beat(client, beta["token"])).status == 200
    assert (await _beat(client, alpha["token"], rule="none")).status == 200
    assert list(await _drift(client, tokens)) == [alpha["peer_id"]]
    # An agent too old to report its rule is not compared.
    assert (await _beat(client, alpha["token"], rule=None)).status == 200
    assert await _drift(client, tokens) == {}


async def test_an_agent_the_coordinator_no_longer_serves_stops_saying_why(
    aiohttp_client, settings, tokens, whmcs_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator upgraded past the agent's protocol: the agent does not start numbering
    (it could misread the answers), and its message names both versions."""
    coordinator = await aiohttp_client(create_app(settings))
    store = await add_store(coordinator, tokens.operator)
    monkeypatch.setattr(agent_protocol, "OLDEST", PROTOCOL + 1)
    monkeypatch.setattr(agent_protocol, "NEWEST", PROTOCOL + 1)
    agent_settings = AgentSettings(
        coordinator_url=str(coordinator.make_url("")), token=store["token"], whmcs_url=whmcs_database
    )
    with pytest.raises(CoordinatorRefused) as refused:
        await asyncio.wait_for(run_agent(agent_settings, parse_mysql_url(whmcs_database)), 30)
    assert refused.value.code == "agent_protocol_unsupported"
    assert f"this agent speaks protocol {PROTOCOL}" in refused.value.message
    assert "upgrade concord-agent" in refused.value.message
    resp = await coordinator.get("/v1/events?limit=100", headers=bearer(tokens.reader))
    assert [e["type"] for e in (await resp.json())["events"]] == ["PeerRegistered"]
