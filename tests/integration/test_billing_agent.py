"""The agent's part of the billing checks against MariaDB: its heartbeat reports WHMCS's tax
settings and the numbers two of its documents carry, and the coordinator's monitor turns a
duplicate number into a warning (and resolves it once WHMCS is corrected)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent import heartbeat
from agent.client import CoordinatorClient
from agent.rules import RulesHolder
from agent.whmcs import queries
from agent.whmcs.database import create_pool, parse_mysql_url
from coordinator.app import create_app
from coordinator.settings import Settings
from simulator.whmcs import connection, insert_rows, set_config
from tests.conftest import Tokens, bearer


def invoice(invoice_id: int, number: str) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "userid": 1,
        "invoicenum": number,
        "date": "2026-03-02",
        "duedate": "2026-03-16",
        "datepaid": "0000-00-00 00:00:00",
        "last_capture_attempt": "0000-00-00 00:00:00",
        "subtotal": "10.00",
        "credit": "0.00",
        "tax": "0.00",
        "tax2": "0.00",
        "total": "10.00",
        "taxrate": "0.000",
        "taxrate2": "0.000",
        "status": "Unpaid",
        "paymentmethod": "banktransfer",
        "notes": "",
    }


async def test_the_duplicate_number_scan(whmcs_database: str) -> None:
    async with connection(whmcs_database) as conn:
        await insert_rows(
            conn,
            "tblinvoices",
            [
                invoice(1, "INV-58"),
                invoice(2, "INV-59"),
                invoice(3, "INV-58"),
                invoice(4, ""),
                invoice(5, ""),
                invoice(6, "INV-60"),
                invoice(7, "INV-60"),
                invoice(8, "INV-60"),
            ],
        )
    pool = await create_pool(parse_mysql_url(whmcs_database))
    try:
        async with pool.acquire() as conn:
            assert await queries.duplicate_numbers(conn, 10) == {"INV-58": [1, 3], "INV-60": [6, 7, 8]}
            assert await queries.duplicate_numbers(conn, 1) == {"INV-58": [1, 3]}
    finally:
        pool.close()
        await pool.wait_closed()


async def wait_for(check: Any, what: str, seconds: float = 10.0) -> Any:
    """Polls ``check`` until it answers something true, at most ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not (answer := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.1)
    return answer


async def test_a_number_on_two_whmcs_documents_raises_a_warning(
    aiohttp_client: Any,
    settings: Settings,
    tokens: Tokens,
    whmcs_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coordinator = await aiohttp_client(
        create_app(settings.model_copy(update={"billing_check_seconds": 0.1, "vies_url": ""}))
    )
    resp = await coordinator.post(
        "/v1/peers", headers=bearer(tokens.operator), json={"name": "eu-1", "url": "http://127.0.0.1:8701"}
    )
    peer = await resp.json()
    async with connection(whmcs_database) as conn:
        await insert_rows(conn, "tblinvoices", [invoice(12, "INV-58"), invoice(40, "INV-58")])
        await set_config(conn, "TaxType", "Inclusive")
        await set_config(conn, "TaxPerLineItem", "1")
    pool = await create_pool(parse_mysql_url(whmcs_database))
    client = CoordinatorClient(str(coordinator.make_url("")), peer["token"])
    rules = RulesHolder("negative_total")

    async def open_duplicates() -> list[dict[str, Any]]:
        answer = await coordinator.get("/v1/warnings?state=open", headers=bearer(tokens.operator))
        return [w for w in (await answer.json())["warnings"] if w["code"] == "billing_duplicate_number"]

    try:
        await heartbeat.beat(pool, client, rules, {})
        reported = await wait_for(lambda: _reported(coordinator, tokens), "settings reported")
        assert reported["DuplicateNumbers"] == {"INV-58": [12, 40]}
        assert reported["TaxType"] == "Inclusive" and reported["TaxPerLineItem"] == "1"
        (warning,) = await wait_for(open_duplicates, "the duplicate number's warning")
        assert warning["subject"] == f"{peer['peer_id']}/number/INV-58"
        assert "store eu-1" in warning["message"] and "ids 12, 40" in warning["message"]

        # Corrected in WHMCS: within the scan interval the last scan stands …
        async with connection(whmcs_database) as conn, conn.cursor() as cur:
            await cur.execute("UPDATE tblinvoices SET invoicenum = 'INV-61' WHERE id = 40")
        await heartbeat.beat(pool, client, rules, {})
        assert (await _reported(coordinator, tokens))["DuplicateNumbers"] == {"INV-58": [12, 40]}
        # … and the next scan resolves the warning.
        monkeypatch.setattr(heartbeat, "DUPLICATE_SCAN_SECONDS", 0.0)
        await heartbeat.beat(pool, client, rules, {})
        await wait_for(lambda: _no(open_duplicates), "the warning resolved")
    finally:
        await client.close()
        pool.close()
        await pool.wait_closed()


async def _reported(coordinator: Any, tokens: Tokens) -> dict[str, Any] | None:
    answer = await coordinator.get("/v1/peers", headers=bearer(tokens.operator))
    peers = (await answer.json())["peers"]
    return peers[0].get("reported_settings") if peers else None


async def _no(check: Any) -> bool:
    return not await check()
