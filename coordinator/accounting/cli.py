"""`concord sync kashflow`: one run with progress, the daily schedule in the foreground, or
KashFlow's payment methods, bank accounts and currencies to fill in the mapping."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import orjson
from tqdm import tqdm

from coordinator.accounting.schedule import kashflow_client, run_daily, run_once
from coordinator.ledger.writer import open_ledger
from coordinator.settings import Settings


async def sync_once(url: str, settings: Settings, limit: int | None) -> int:
    async with open_ledger(url, pool_size=3) as (pool, writer):
        with tqdm(total=0, unit="invoice", desc="KashFlow", file=sys.stderr) as bar:
            report = await run_once(pool, writer, settings, limit, bar)
    sys.stdout.write(orjson.dumps(report.as_dict()).decode() + "\n")
    return 0


async def sync_daily(url: str, settings: Settings) -> int:
    """The coordinator's daily schedule, for a deployment that runs it apart; until a signal."""
    async with open_ledger(url, pool_size=3) as (pool, writer):
        task = asyncio.create_task(run_daily(pool, writer, settings))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return 0


async def show_options(settings: Settings) -> int:
    kashflow = kashflow_client(settings)
    try:
        methods = await kashflow.payment_methods()
        accounts = await kashflow.bank_accounts()
        currencies = await kashflow.currencies()
    finally:
        await kashflow.aclose()
    out = ["KashFlow payment methods (kashflow_gateways.<gateway>.method):"]
    out += [f"  {m['id']:>8}  {m['name']}" for m in methods]
    out += ["KashFlow bank accounts (kashflow_gateways.<gateway>.account):"]
    out += [f"  {a['id']:>8}  {a['name']} ({a['code']})" for a in accounts]
    out += [
        "KashFlow currencies (matched by code to the ones each store's agent reports; "
        "kashflow_currencies.<store> overrides single ids):"
    ]
    out += [f"  {c.code}" for c in currencies.values()]
    out += ["Mapped gateways:"]
    names = {m["id"]: m["name"] for m in methods}
    banks = {a["id"]: a["name"] for a in accounts}
    for gateway, target in sorted(settings.kashflow_gateways.items()):
        method = names.get(target.method, f"UNKNOWN method {target.method}")
        account = banks.get(target.account, f"UNKNOWN account {target.account}")
        out.append(f"  {gateway} -> {method} / {account}")
    if not settings.kashflow_gateways:
        out += [
            "  none yet; in the settings file, for example:",
            "",
            "  [kashflow_gateways.paypal]",
            "  method = 1",
            "  account = 2",
        ]
    sys.stdout.write("\n".join(out) + "\n")
    return 0
