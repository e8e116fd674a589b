"""Heartbeat: tells the coordinator the agent is alive, how WHMCS numbers on its own, how it
computes taxes, and which numbers more than one of its documents carry."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from agent.client import CoordinatorClient
from agent.rules import RulesHolder
from agent.whmcs import queries
from coordinator.events.store_report import DUPLICATE_NUMBERS, TAX_SETTINGS

AGENT_VERSION = version("concord")
# The duplicate-number scan reads all of tblinvoices: its answer is reused this long.
DUPLICATE_SCAN_SECONDS = 900.0
DUPLICATES_REPORTED = 100  # most duplicate numbers in one report


@dataclass(frozen=True)
class _Scan:
    at: float  # time.monotonic() of the scan
    duplicates: dict[str, list[int]]


# The last scan of each WHMCS database (by its pool), for as long as the pool lives.
_scans: weakref.WeakKeyDictionary[Any, _Scan] = weakref.WeakKeyDictionary()


async def beat(
    pool: Any,
    client: CoordinatorClient,
    rules: RulesHolder,
    extra: dict[str, str],
    *,
    scan_duplicates: bool = True,
) -> None:
    """One heartbeat. ``scan_duplicates=False`` reports the duplicate numbers of the last scan
    and leaves them out before the first (the coordinator then keeps what it knows of them):
    the agent's first beat, which numbering waits for, and its beats while numbering or the
    relay has a backlog, which the scan would hold back."""
    async with pool.acquire() as conn:
        settings: dict[str, Any] = await queries.configuration(conn, queries.NUMBERING_SETTINGS)
        # The billing checks recompute Tax and Tax2 as this store's WHMCS does.
        settings.update(await queries.configuration(conn, TAX_SETTINGS))
        # The KashFlow sync matches a document's currency id to KashFlow's by this code.
        settings["Currencies"] = await queries.currencies(conn)
        duplicates = await _duplicates(pool, conn, scan_duplicates)
        if duplicates is not None:
            settings[DUPLICATE_NUMBERS] = duplicates
    reply = await client.heartbeat(AGENT_VERSION, {**settings, **extra})
    rules.update(reply["settings"])


async def _duplicates(pool: Any, conn: Any, scan: bool) -> dict[str, list[int]] | None:
    """The numbers more than one document carries, scanned at most every
    ``DUPLICATE_SCAN_SECONDS`` and only if ``scan``; None before the first scan."""
    last = _scans.get(pool)
    if scan and (last is None or time.monotonic() - last.at >= DUPLICATE_SCAN_SECONDS):
        last = _scans[pool] = _Scan(
            time.monotonic(), await queries.duplicate_numbers(conn, DUPLICATES_REPORTED)
        )
    return None if last is None else last.duplicates
