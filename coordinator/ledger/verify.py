"""`concord verify FILE.jsonl`: chain and invariants of an exported ledger, offline.

No database and no settings: the file alone (and optionally the stores' receipts). It is
read as a stream, line by line, in constant memory apart from 8 bytes per event (event-id
uniqueness) and what the invariants keep (see invariants.py).

Two passes over the file, independent of each other, so a large file is verified by two
processes at once (one per core) and a small one by this process alone:

- the chain pass recomputes every hash over the line's own bytes (nothing re-serialised),
  checks positions, event ids, the header, and that every byte is where the format puts it;
- the invariants pass parses each event's data — for ``NumberIssued`` without the document
  snapshot, which is most of its bytes — and checks the numbering invariants and receipts.

Each hot loop does the least per event: locals only, and a sound event on a straight path;
anything unexpected goes to the shared checkers, which name it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from coordinator.events import catalogue as ev
from coordinator.ledger.chain import ChainVerifier, EventIds
from coordinator.ledger.export_format import (
    FORMAT,
    HASH_KEY,
    LINE_END,
    LINE_PREFIX,
    SUFFIX_LENGTH,
    header_line,
)
from coordinator.ledger.findings import Findings
from coordinator.ledger.invariants import CHECKED_TYPES, Invariants
from coordinator.ledger.receipts import Receipt, ReceiptCheck

_TAIL = b',"event_id":"'
_ID_END = len(_TAIL) + 36  # a UUID's text
_POSITION = b'","position":%d,'
_DATA_START = len(LINE_PREFIX) + len(b'{"data":')  # in the line
_ISSUED_TAIL = b',"formatted":"'  # NumberIssued data keys after the document snapshot
_POSITION_KEY = b',"position":'
_TYPE_KEY = b',"type":"'
_PREFIX = len(LINE_PREFIX)
_HASH_AT, _HASH_END = -SUFFIX_LENGTH + len(HASH_KEY), -len(LINE_END)
READ_BUFFER = 1 << 20  # iterating lines from 1 MiB reads takes half the time of 8 KiB ones
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
            other = pool.submit(_invariants_pass, path, receipts)
            findings, position, hash_, header = _chain_pass(path, progress)
            numbering, series, receipt_count = other.result()
    else:
        findings, position, hash_, header = _chain_pass(path, progress)
        numbering, series, receipt_count = _invariants_pass(path, receipts)
    findings.merge(numbering)
    return Verified(findings, position, hash_, header, series, receipt_count)


def _chain_pass(path: Path, progress: bool | None
                ) -> tuple[Findings, int, bytes, dict[str, Any] | None]:
    findings = Findings()
    findings.ran.update(("chain", "positions"))
    chain = ChainVerifier(findings)
    ids = EventIds()
    sha256, loads, add_id = hashlib.sha256, orjson.loads, ids.add
    with path.open("rb", buffering=READ_BUFFER) as lines, tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc="verify",
            disable=None if progress is None else not progress) as bar:
        header = _header(lines.readline(), findings)
        read = 0
        for number, line in enumerate(lines, 2):
            read += len(line)
            if read > 1 << 22:
                bar.update(read)
                read = 0
            if not (line.startswith(LINE_PREFIX) and line.endswith(LINE_END)
                    and line[-SUFFIX_LENGTH:_HASH_AT] == HASH_KEY):
                findings("chain", f"line {number} is not an event line of an export",
                         position=chain.position + 1)
                continue
            body = line[_PREFIX:-SUFFIX_LENGTH]
            hex_hash = line[_HASH_AT:_HASH_END]
            cut = body.rfind(_TAIL)
            digest = sha256(chain.hash + body).digest()
            # A sound event: its hash, then its position right after the 36 characters of
            # its id — no JSON to parse.
            if digest.hex().encode() == hex_hash and body.startswith(
                    _POSITION % (chain.position + 1), cut + _ID_END):
                chain.position, chain.hash = chain.position + 1, digest
                add_id(body[cut + len(_TAIL):cut + _ID_END])
                continue
            try:
                tail = loads(b"{" + body[cut + 1:])
                position, event_id = tail["position"], tail["event_id"].encode()
                claimed = bytes.fromhex(hex_hash.decode())
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
                findings("chain", f"line {number} is not an event line of an export",
                         position=chain.position + 1)
                continue
            chain.feed(position, body, claimed)
            if hex_hash.lower() != hex_hash:  # fromhex() reads upper case as the same
                findings("chain", "hash not in lower-case hex", position=position)
            add_id(event_id)
        bar.update(read)
    _duplicates(path, ids, findings)
    if header is not None and (header["position"], header["hash"]) != (chain.position,
                                                                      chain.hash.hex()):
        findings("chain", f"the header announces position {header['position']} with hash "
                 f"{header['hash']}, the file ends at position {chain.position} with hash "
                 f"{chain.hash.hex()}: lines were added or removed", position=chain.position)
    return findings, chain.position, chain.hash, header


def _data(type_: str, line: bytes, end: int) -> Any:
    """The event's data, ``line[_DATA_START:end]``, parsed without copying it first."""
    if type_ == ev.NUMBER_ISSUED:
        # Sorted keys put the snapshot before "formatted"; a `,"` cannot occur inside a JSON
        # string, so the last `,"formatted":"` is data's own key. Parse what follows it.
        cut = line.rfind(_ISSUED_TAIL, _DATA_START, end)
        if cut > 0:
            try:
                return orjson.loads(b"{" + line[cut + 1:end])
            except orjson.JSONDecodeError:
                pass
    return orjson.loads(memoryview(line)[_DATA_START:end])


def _invariants_pass(path: Path, receipts: list[Receipt] | None
                     ) -> tuple[Findings, list[dict[str, Any]], int]:
    findings = Findings()
    findings.ran.add("invariants")
    if receipts is not None:
        findings.ran.add("receipts")
    invariants = Invariants(findings)
    receipt_check = ReceiptCheck(findings, receipts or [])
    by_position = receipt_check.by_position
    checked, feed = CHECKED_TYPES, invariants.feed
    last = 0
    end = -SUFFIX_LENGTH
    with path.open("rb", buffering=READ_BUFFER) as lines:
        lines.readline()
        for line in lines:
            if not (line.startswith(LINE_PREFIX) and line.endswith(LINE_END)):
                continue  # named by the chain pass
            # Position and type read off the bytes (canonical JSON fixes where they are): a
            # line the chain pass finds sound cannot fool this, and it names any other.
            cut = line.rfind(_TAIL, 0, end)
            at = line.find(_POSITION_KEY, cut, end)
            kind = line.rfind(_TYPE_KEY, at, end)
            if cut < 0 or at < 0 or kind < 0:
                continue  # named by the chain pass
            at += len(_POSITION_KEY)
            try:
                last = int(line[at:line.index(b",", at, end)])
            except ValueError:
                continue
            type_ = line[kind + len(_TYPE_KEY):end - 2].decode("utf-8", "replace")
            data: Any = {}
            if type_ in checked:
                try:
                    data = _data(type_, line, cut)
                except orjson.JSONDecodeError:
                    findings("invariants", f"{type_} data is not JSON", position=last)
                    continue
                feed(last, type_, data)
            if last in by_position:
                hex_hash = line[_HASH_AT:_HASH_END].decode()
                try:
                    receipt_check.feed(last, bytes.fromhex(hex_hash), type_, data)
                except ValueError:
                    continue  # named by the chain pass
    receipt_check.finish(last)
    return findings, invariants.summary(), receipt_check.count


def _header(line: bytes, findings: Findings) -> dict[str, Any] | None:
    try:
        header = orjson.loads(line)
        if (header.get("format") != FORMAT or header_line(header["position"],
                                                           bytes.fromhex(header["hash"])) != line):
            raise ValueError(line[:80])
        return header
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        findings("chain", f"the first line is not a {FORMAT} header", position=0)
        return None


def _duplicates(path: Path, ids: EventIds, findings: Findings) -> None:
    suspects = ids.suspects()
    if not suspects:
        return

    def pairs() -> Any:
        with path.open("rb") as lines:
            lines.readline()
            for line in lines:
                try:
                    body = line[_PREFIX:-SUFFIX_LENGTH]
                    tail = orjson.loads(b"{" + body[body.rfind(_TAIL) + 1:])
                    yield tail["position"], tail["event_id"].encode()
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue

    for event_id, positions in EventIds.confirm(suspects, pairs()).items():
        findings("positions", f"event id {event_id.decode()} occurs at positions "
                 f"{', '.join(map(str, positions))}", position=positions[1])
