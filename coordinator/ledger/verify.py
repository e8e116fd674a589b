"""`concord verify FILE.jsonl`: chain and invariants of an exported ledger, offline.

No database and no settings: the file alone (and optionally the stores' receipts). It is read
through a memory map, in constant memory apart from 8 bytes per event (event-id uniqueness)
and what the invariants keep (see invariants.py).

Two passes over the file, independent of each other, so a large file is verified by two
processes at once (one per core) and a small one by this process alone:

- the chain pass (verify_chain.py) recomputes every hash over the line's own bytes and checks
  the header and that every byte around the event is where the format puts it;
- the records pass (verify_records.py) decodes each event into a typed record and checks
  positions, event ids, the numbering invariants and the receipts.

Each hot loop does the least per line: locals only, and a sound line on a straight path;
anything unexpected goes to a slow path that names it.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

from coordinator.ledger.findings import Findings
from coordinator.ledger.receipts import Receipt
from coordinator.ledger.verify_chain import chain_pass
from coordinator.ledger.verify_records import records_pass

PARALLEL_BYTES = 32 << 20  # from this size on, the two passes run in two processes


@dataclass
class Verified:
    findings: Findings
    position: int  # last event read
    hash: bytes  # its hash
    header: dict[str, Any] | None
    series: list[dict[str, Any]]
    receipts: int


def verify_file(path: Path, receipts: list[Receipt] | None = None, *,
                progress: bool | None = None, parallel: bool | None = None) -> Verified:
    if parallel is None:
        parallel = path.stat().st_size >= PARALLEL_BYTES and (os.cpu_count() or 1) > 1
    if parallel:
        # fork where there is one: the child starts at once, importing nothing again.
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(1, mp_context=get_context(method)) as pool:
            other = pool.submit(records_pass, path, receipts)
            findings, hash_, header = chain_pass(path, progress)
            records, position, series, receipt_count = other.result()
    else:
        findings, hash_, header = chain_pass(path, progress)
        records, position, series, receipt_count = records_pass(path, receipts)
    findings.merge(records)
    return Verified(findings, position, hash_, header, series, receipt_count)
