"""What the ledger says after the agent benchmark's run: its events, whether it agrees with
the stores, and PostgreSQL's statistics on it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from bench.agent_stores import Store
from bench.postgres import connected
from simulator.whmcs import connection, fetch_all


async def event_counts(pg_url: str) -> dict[str, int]:
    """Events in the ledger, by type."""
    async with connected(pg_url) as conn:
        return {
            r["type"]: r["n"]
            for r in await conn.fetch("SELECT type, count(*) AS n FROM events GROUP BY type")
        }


async def verify(pg_url: str, stores: Sequence[Store], total: int) -> list[str]:
    """The ledger and the stores agree: N issued, 1..N, each invoicenum the ledger's, date order
    (N counting the numbered history of --preload)."""
    events = await event_counts(pg_url)
    async with connected(pg_url) as conn:
        reservations = await conn.fetch(
            "SELECT peer_id::text AS peer_id, doc_id, number, formatted, state"
            " FROM reservations WHERE series = 'invoice'"
        )
    problems: list[str] = []
    if events.get("NumberIssued", 0) != total:
        problems.append(f"{events.get('NumberIssued', 0)} NumberIssued events, expected {total}")
    numbers = sorted(r["number"] for r in reservations)
    if numbers != list(range(1, total + 1)):
        problems.append(
            f"numbers are not exactly 1..{total}: {len(numbers)} handed out,"
            f" lowest {numbers[:1]}, highest {numbers[-1:]}"
        )
    states = Counter(r["state"] for r in reservations)
    if set(states) - {"issued"}:
        problems.append(f"reservation states {dict(states)}")
    ledger = {(r["peer_id"], r["doc_id"]): r for r in reservations}
    for store in stores:
        async with connection(store.url) as mconn:
            rows = await fetch_all(mconn, "SELECT id, date, invoicenum FROM tblinvoices ORDER BY date, id")
        wrong, previous, out_of_order = 0, 0, 0
        for row in rows:
            reservation = ledger.get((store.peer_id, str(row["id"])))
            if reservation is None or reservation["formatted"] != row["invoicenum"]:
                wrong += 1
                continue
            if reservation["number"] < previous:
                out_of_order += 1
            previous = reservation["number"]
        if wrong:
            problems.append(f"{store.name}: {wrong} invoices whose invoicenum is not the ledger's")
        if out_of_order:
            problems.append(f"{store.name}: {out_of_order} numbers out of date order")
    return problems


async def table_scans(pg_url: str) -> dict[str, tuple[int, int, int]]:
    """(sequential scans, rows they read, index scans) per ledger table."""
    async with connected(pg_url) as conn:
        rows = await conn.fetch(
            "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan"
            " FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            ["events", "reservations", "documents", "counters", "released_numbers"],
        )
    return {r["relname"]: (r["seq_scan"], r["seq_tup_read"], r["idx_scan"]) for r in rows}


async def function_times(pg_url: str) -> dict[str, tuple[int, float]]:
    """(calls, total ms) of the ledger's SQL functions, when track_functions records them."""
    async with connected(pg_url) as conn:
        rows = await conn.fetch("SELECT funcname, calls, total_time FROM pg_stat_user_functions")
    return {r["funcname"]: (r["calls"], r["total_time"]) for r in rows}


async def ledger_span(pg_url: str, after: int) -> float:
    """First NumberReserved -> last NumberIssued among the events after position ``after``."""
    async with connected(pg_url) as conn:
        row = await conn.fetchrow(
            "SELECT min(recorded_at) FILTER (WHERE type = 'NumberReserved') AS first,"
            " max(recorded_at) FILTER (WHERE type = 'NumberIssued') AS last FROM events"
            " WHERE position > $1",
            after,
        )
    if row["first"] is None or row["last"] is None:
        return 0.0
    return float((row["last"] - row["first"]).total_seconds())
