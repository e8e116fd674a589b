"""Receipts from the store's side: the agent keeps them in MariaDB as it numbers invoices,
`concord-agent receipts export DIR` writes them out, and `concord audit --receipts DIR`
catches a ledger rewritten behind the stores' backs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.whmcs import queries
from agent.whmcs.database import create_agent_tables, create_pool, parse_mysql_url
from simulator.generator import StoreGenerator
from simulator.whmcs import connection, create_invoice, load_store
from tests.support.api_helpers import DOCUMENT, add_store, confirm, reserve
from tests.support.ledger_tamper import rewrite_tail

INVOICE_TABLES = ("tblinvoices", "tblinvoiceitems", "tblaccounts", "mod_invoicedata")


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CONCORD_LOG_LEVEL": "warning", **env},
    )


@pytest.mark.slow
async def test_exported_receipts_catch_a_rewritten_ledger(
    client, tokens, database_url, whmcs_database, tmp_path: Path
) -> None:
    generator = StoreGenerator(7, "north", clients=8, invoices=40)
    async with connection(whmcs_database) as conn:
        await load_store(
            conn, {t: ([] if t in INVOICE_TABLES else rows) for t, rows in generator.base().items()}
        )
        invoices = [await create_invoice(conn, generator.new_invoice(status="Paid")) for _ in range(3)]
    store = await add_store(client, tokens.operator, "north")
    pool = await create_pool(parse_mysql_url(whmcs_database))
    try:
        await create_agent_tables(pool)
        for invoice_id in invoices:  # what the agent's numbering loop and relay record
            reserved = await reserve(client, store["token"], str(invoice_id))
            assert await queries.write_numbers(pool, {invoice_id: reserved}) == {invoice_id: "written"}
            if invoice_id != invoices[-1]:
                issued = await confirm(client, store["token"], reserved["reservation_id"])
                snap = queries.Snapshot(invoice_id, "invoice", reserved["formatted"], "0" * 32, DOCUMENT)
                await queries.mark_confirmed(
                    pool, [queries.Confirmed(reserved["reservation_id"], snap, issued["receipt"])]
                )
    finally:
        pool.close()
        await pool.wait_closed()

    directory = tmp_path / "receipts"
    agent_env = {"CONCORD_AGENT_WHMCS_URL": whmcs_database, "CONCORD_AGENT_STORE": "north"}
    exported = await asyncio.to_thread(run, "agent", "receipts", "export", str(directory), env=agent_env)
    assert exported.returncode == 0, exported.stderr
    assert "exported 3 receipt(s)" in exported.stdout
    (path,) = directory.glob("receipts-north-*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["number"] for line in lines] == [1, 2, 3]
    assert lines[0]["store"] == "north" and lines[0]["invoice_id"] == invoices[0]
    assert lines[0]["issued"]["position"] > lines[0]["reserved"]["position"]
    assert lines[2]["issued"] is None  # reserved, not confirmed yet

    db = {"CONCORD_DATABASE_URL": database_url}
    clean = await asyncio.to_thread(run, "coordinator", "audit", "--receipts", str(directory), env=db)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "receipts checked: 5" in clean.stdout

    # A superuser rewrites the ledger from the second number's confirm on, chain recomputed.
    second = lines[1]["issued"]["position"]

    def forge(tail: list[dict]) -> list[dict]:
        tail[0]["data"]["document"] = {"ClientData": {}, "DocData": {"Total": "0.00"}}
        return tail

    await rewrite_tail(database_url, second - 1, forge)
    caught = await asyncio.to_thread(
        run, "coordinator", "audit", "--receipts", str(directory), "--json", env=db
    )
    assert caught.returncode == 1
    report = json.loads(caught.stdout)
    assert report["checks"]["chain"]["ok"]  # the chain alone cannot tell
    found = [f for f in report["findings"] if f["check"] == "receipts"]
    assert found[0]["position"] == second and found[0]["number"] == 2
    assert "rewritten" in found[0]["message"]
