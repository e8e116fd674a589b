"""`concord verify FILE.jsonl`: chain and invariants of an exported ledger, offline.

No database and no settings: the file alone (and optionally the stores' receipts). It is read
through a memory map a window at a time, in constant memory apart from what the invariants
keep (see invariants.py).

Two passes over each window:

- the chain pass (verify_chain.py) finds the lines, recomputes every hash over the line's own
  bytes and checks the header and that every byte around the event is where the format puts
  it; it hands the window's line ends and kinds on to
- the records pass (verify_records.py), which decodes each event into a typed record and
  checks positions, the numbering invariants and the receipts.

A large file is verified by two processes at once, one per pass, joined by a pipe that carries
the line ends; a small one by this process alone.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from coordinator.audit.findings import Findings
from coordinator.audit.receipts import Receipt
from coordinator.audit.verify_chain import chain_pass
from coordinator.audit.verify_records import RecordsPass, line_kinds

PARALLEL_BYTES = 32 << 20  # from this size on, the two passes run in two processes


@dataclass
class Verified:
    findings: Findings
    position: int  # last event read
    hash: bytes  # its hash
    header: dict[str, Any] | None
    series: list[dict[str, Any]]
    receipts: int


def verify_file(
    path: Path,
    receipts: list[Receipt] | None = None,
    *,
    progress: bool | None = None,
    parallel: bool | None = None,
) -> Verified:
    if parallel is None:
        parallel = path.stat().st_size >= PARALLEL_BYTES and (os.cpu_count() or 1) > 1
    if parallel and "fork" in get_all_start_methods():
        findings, hash_, header, records = _two_processes(path, receipts, progress)
    else:
        with RecordsPass(path, receipts) as pass_:
            findings, hash_, header = chain_pass(
                path, progress, lambda m, start, ends: pass_.window(start, ends, line_kinds(m, ends))
            )
            records = pass_.finish()
    numbering, position, series, receipt_count = records
    findings.merge(numbering)
    return Verified(findings, position, hash_, header, series, receipt_count)


def _two_processes(
    path: Path, receipts: list[Receipt] | None, progress: bool | None
) -> tuple[Findings, bytes, dict[str, Any] | None, Any]:
    """The chain pass here, the records pass in a forked child fed through a pipe (which
    holds a window or two, so the chain pass runs only a little ahead)."""
    windows_out, windows_in = _pipe()
    result_out, result_in = _pipe()
    child = get_context("fork").Process(
        target=_records_child, args=(path, receipts, windows_out, result_in, windows_in, result_out)
    )
    child.start()
    windows_out.close()
    result_in.close()
    try:
        findings, hash_, header = chain_pass(
            path, progress, lambda m, start, ends: windows_in.send_bytes(_window_message(m, start, ends))
        )
        windows_in.close()  # the child's end of input
        records = result_out.recv()
    finally:
        windows_in.close()
        child.join(5)
        if child.is_alive():  # the chain pass failed while the child was busy
            child.kill()
            child.join()
    if isinstance(records, BaseException):
        raise records
    return findings, hash_, header, records


def _pipe() -> tuple[Connection, Connection]:
    """(reading end, writing end)."""
    return get_context("fork").Pipe(duplex=False)


def _window_message(m: Any, start: int, ends: list[int]) -> bytes:
    """A window for the records pass: its first byte, its line ends, their kinds."""
    return array("q", [start, len(ends), *ends]).tobytes() + line_kinds(m, ends)


def _records_child(
    path: Path,
    receipts: list[Receipt] | None,
    windows: Connection,
    result: Connection,
    *parents_ends: Connection,
) -> None:
    for end in parents_ends:  # forked copies: the windows' writing end must be the parent's only
        end.close()
    try:
        with RecordsPass(path, receipts) as pass_:
            while True:
                try:
                    message = windows.recv_bytes()
                except EOFError:
                    break
                numbers = array("q")
                numbers.frombytes(message[:16])
                start, count = numbers
                ends = array("q")
                ends.frombytes(message[16 : 16 + 8 * count])
                pass_.window(start, ends, message[16 + 8 * count :])
            result.send(pass_.finish())
    except BaseException as exc:  # the parent raises it
        result.send(exc)
