"""The chain pass of `concord verify`: every hash recomputed over the line's own bytes (nothing
re-serialised), every byte around the event where the export format puts it, and event ids
unique."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from coordinator.events.canonical import GENESIS_HASH
from coordinator.ledger.chain import SEAL_BROKEN, EventIds
from coordinator.ledger.export_format import (
    FORMAT,
    HASH_KEY,
    HEX_AT,
    LINE_END,
    LINE_PREFIX,
    SUFFIX_LENGTH,
    header_line,
    stored_hash,
)
from coordinator.ledger.findings import Findings
from coordinator.ledger.mapped_file import WINDOW, forget, mapped, populate

_PREFIX = len(LINE_PREFIX)
_END = len(LINE_END)
_TAIL = b',"event_id":"'
_ID_END = len(_TAIL) + 36  # a UUID's text


def chain_pass(path: Path, progress: bool | None
               ) -> tuple[Findings, bytes, dict[str, Any] | None]:
    """Findings, the stored hash of the last event, and the header."""
    findings = Findings()
    findings.ran.update(("chain", "positions"))
    with mapped(path) as m, tqdm(total=len(m), unit="B", unit_scale=True, desc="verify",
                                 disable=None if progress is None else not progress) as bar:
        start = m.find(b"\n") + 1 or len(m)
        header = _header(m[:start], findings)
        ids = EventIds()
        head, lines = _events(m, start, findings, ids, bar)
    _duplicates(path, ids, findings)
    if header is not None and (header["position"], header["hash"]) != (lines, head.hex()):
        findings("chain", f"the header announces position {header['position']} with hash "
                 f"{header['hash']}, the file holds {lines} events ending with hash "
                 f"{head.hex()}: lines were added or removed", position=lines)
    return findings, head, header


def _events(m: Any, pos: int, findings: Findings, ids: EventIds, bar: tqdm[Any]
            ) -> tuple[bytes, int]:
    """Every event line from ``pos`` on: the stored hash of the last one, and how many."""
    size = len(m)
    prev, lines = GENESIS_HASH, 0
    with memoryview(m) as view:
        while pos < size:
            start = pos
            populate(m, start, min(start + WINDOW, size) + 4096)
            ends, seals = _seal_window(m, view, start, prev)
            event_ids = _sound_window(m, start, ends, seals)
            if event_ids is None:  # something in the window is wrong: find and name it
                event_ids, seals[-1] = _lines(m, start, ends, prev, lines, findings)
            ids.add_window(event_ids)
            prev, lines, pos = seals[-1], lines + len(ends), ends[-1]
            forget(m, start, pos)
            bar.update(pos - start)
    return prev, lines


def _seal_window(m: Any, view: memoryview, pos: int, prev: bytes
                 ) -> tuple[list[int], list[bytes]]:
    """The ends of the lines in the window from ``pos`` and each one's seal, recomputed
    assuming every line sound: the tightest loop, its checks left to _sound_window."""
    size, find, sha256 = len(m), m.find, hashlib.sha256
    stop = min(pos + WINDOW, size)
    ends: list[int] = []
    seals: list[bytes] = []
    add_end, add_seal = ends.append, seals.append
    while pos < stop:
        end = find(b"\n", pos) + 1 or size
        prev = sha256(prev + view[pos + _PREFIX:end - SUFFIX_LENGTH]).digest()
        add_end(end)
        add_seal(prev)
        pos = end
    return ends, seals


def _sound_window(m: Any, start: int, ends: list[int], seals: list[bytes]
                  ) -> list[bytes] | None:
    """The window's event ids if every line in it is sound — its hash, in lower-case hex, is
    its seal, between the fixed bytes around it — else None."""
    starts = [start, *ends[:-1]]
    count = len(ends)
    if b"".join(seals).hex().encode() != b"".join([m[e - HEX_AT:e - _END] for e in ends]) \
            or b"".join([m[e - SUFFIX_LENGTH:e - HEX_AT] for e in ends]) != HASH_KEY * count \
            or b"".join([m[e - _END:e] for e in ends]) != LINE_END * count \
            or b"".join([m[s:s + _PREFIX] for s in starts]) != LINE_PREFIX * count:
        return None
    tails = list(map(m.rfind, [_TAIL] * count, starts, ends))
    if min(tails) < 0:
        return None
    return [m[at + len(_TAIL):at + _ID_END] for at in tails]


def _lines(m: Any, pos: int, ends: list[int], prev: bytes, lines: int, findings: Findings
           ) -> tuple[list[bytes], bytes]:
    """Line by line, naming what is wrong: the window's event ids and the hash to go on from."""
    event_ids: list[bytes] = []
    for number, end in enumerate(ends, lines + 1):
        prev = _line(m[pos:end], number, prev, findings, event_ids.append)
        pos = end
    return event_ids, prev


def _line(line: bytes, number: int, prev: bytes, findings: Findings,
          add_id: Callable[[bytes], None]) -> bytes:
    """Check event line ``number`` and name what is wrong with it; the hash to continue the
    chain from: its stored one where it has one, so one edited event is named once."""
    if line.startswith(LINE_PREFIX) and line.endswith(LINE_END) \
            and line[-SUFFIX_LENGTH:-HEX_AT] == HASH_KEY:
        body, hex_hash = line[_PREFIX:-SUFFIX_LENGTH], line[-HEX_AT:-_END]
        try:
            tail = orjson.loads(b"{" + body[body.rfind(_TAIL) + 1:])
            position, event_id = tail["position"], tail["event_id"].encode()
            stored = stored_hash(line)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            pass
        else:
            add_id(event_id)
            if hashlib.sha256(prev + body).digest() != stored:
                findings("chain", SEAL_BROKEN, position=position)
            if hex_hash.lower() != hex_hash:  # fromhex() reads upper case as the same
                findings("chain", "hash not in lower-case hex", position=position)
            return stored
    findings("chain", f"line {number + 1} is not an event line of an export", position=number)
    return prev


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

    def pairs() -> Iterator[tuple[int, bytes]]:
        with path.open("rb") as lines:
            lines.readline()
            for line in lines:
                body = line[len(LINE_PREFIX):-SUFFIX_LENGTH]
                try:
                    tail = orjson.loads(b"{" + body[body.rfind(_TAIL) + 1:])
                    yield tail["position"], tail["event_id"].encode()
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    continue

    for event_id, positions in EventIds.confirm(suspects, pairs()).items():
        findings("positions", f"event id {event_id.decode()} occurs at positions "
                 f"{', '.join(map(str, positions))}", position=positions[1])
