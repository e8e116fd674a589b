"""`concord-agent receipts export DIR`: this store's receipts, for `concord audit --receipts`.

Every number the coordinator handed this store came with a receipt ``{position, hash}``
(of its ``NumberReserved`` event, and of its ``NumberIssued`` event once confirmed), kept in
``mod_concord_receipts`` beside WHMCS — out of the coordinator's reach. Exported as JSON
lines, one number per line::

    {"store", "reservation_id", "invoice_id", "doctype", "series", "period", "number",
     "formatted", "reserved": {"position", "hash"}, "issued": {"position", "hash"} | null}

The rows are streamed (an unbuffered cursor) and the file is written under a temporary
name, then renamed: a file named ``*.jsonl`` in DIR is always complete.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from asyncmy.cursors import SSDictCursor
from tqdm import tqdm

COLUMNS = (
    "reservation_id, invoice_id, doctype, series, period, number, formatted,"
    " reserved_position, reserved_hash, issued_position, issued_hash"
)


def receipt_line(store: str, row: dict[str, Any]) -> bytes:
    issued = None
    if row["issued_position"] is not None:
        issued = {"position": row["issued_position"], "hash": row["issued_hash"]}
    return (
        orjson.dumps(
            {
                "store": store,
                "reservation_id": row["reservation_id"],
                "invoice_id": row["invoice_id"],
                "doctype": row["doctype"],
                "series": row["series"],
                "period": row["period"],
                "number": row["number"],
                "formatted": row["formatted"],
                "reserved": {"position": row["reserved_position"], "hash": row["reserved_hash"]},
                "issued": issued,
            }
        )
        + b"\n"
    )


async def export_receipts(
    pool: Any, directory: Path, store: str, *, progress: bool | None = None
) -> tuple[Path, int]:
    """Write every receipt to a new file in ``directory`` (which exists); return the file and
    the count."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"receipts-{re.sub(r'[^A-Za-z0-9_.-]', '_', store) or 'store'}-{stamp}.jsonl"
    partial = path.with_name(path.name + ".part")
    count = 0
    async with pool.acquire() as conn:
        async with conn.cursor() as cur:
            await cur.execute("SELECT COUNT(*) AS n FROM mod_concord_receipts")
            total = (await cur.fetchone())["n"]
        with (
            partial.open("wb") as out,
            tqdm(
                total=total,
                unit="receipt",
                desc="receipts",
                disable=None if progress is None else not progress,
            ) as bar,
        ):
            async with conn.cursor(SSDictCursor) as cur:
                await cur.execute(f"SELECT {COLUMNS} FROM mod_concord_receipts ORDER BY reserved_position")
                while rows := await cur.fetchmany(1000):
                    out.write(b"".join(receipt_line(store, row) for row in rows))
                    count += len(rows)
                    bar.update(len(rows))
            out.flush()
            os.fsync(out.fileno())
    partial.replace(path)
    return path, count
