"""The chain pass of `concord verify`: every hash recomputed over the line's own bytes (nothing
re-serialised), and every byte around the event where the export format puts it. It finds the
lines, so it hands each window's line ends on to the records pass (verify.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from coordinator.audit.chain import SEAL_BROKEN
from coordinator.audit.export_format import (
    FORMAT,
    HASH_KEY,
    HEX_AT,
    LINE_END,
    LINE_PREFIX,
    SUFFIX_LENGTH,
    header_line,
    stored_hash,
)
from coordinator.audit.findings import Findings
from coordinator.audit.mapped_file import WINDOW, forget, mapped, populate
from coordinator.events.canonical import GENESIS_HASH

_PREFIX = len(LINE_PREFIX)
_END = len(LINE_END)
_TAIL = b',"event_id":"'

# The bytes from a line's hash key to the next line's event, the hash left as zeros.
_BETWEEN_LINES = HASH_KEY + bytes(64) + LINE_END + LINE_PREFIX
# Called with the mapped file, a window's first byte and its line ends.
WindowSink = Callable[[Any, int, list[int]], None]


def chain_pass(
    path: Path, progress: bool | None, sink: WindowSink
) -> tuple[Findings, bytes, dict[str, Any] | None]:
    """Findings, the stored hash of the last event, and the header."""
    findings = Findings()
    findings.ran.add("chain")
    with (
        mapped(path) as m,
        tqdm(
            total=len(m),
            unit="B",
            unit_scale=True,
            desc="verify",
            disable=None if progress is None else not progress,
        ) as bar,
    ):
        start = m.find(b"\n") + 1 or len(m)
        header = _header(m[:start], findings)
        head, lines = _events(m, start, findings, sink, bar)
    if header is not None and (header["position"], header["hash"]) != (lines, head.hex()):
        findings(
            "chain",
            f"the header announces position {header['position']} with hash "
            f"{header['hash']}, the file holds {lines} events ending with hash "
            f"{head.hex()}: lines were added or removed",
            position=lines,
        )
    return findings, head, header


def _events(m: Any, pos: int, findings: Findings, sink: WindowSink, bar: tqdm[Any]) -> tuple[bytes, int]:
    """Every event line from ``pos`` on: the stored hash of the last one, and how many."""
    size = len(m)
    prev, lines = GENESIS_HASH, 0
    with memoryview(m) as view:
        while pos < size:
            start = pos
            populate(m, start, min(start + WINDOW, size) + 4096)
            ends, seals = _seal_window(m, view, start, prev)
            if not _sound_window(m, start, ends, seals):  # find what is wrong and name it
                seals[-1] = _lines(m, start, ends, prev, lines, findings)
            sink(m, start, ends)
            prev, lines, pos = seals[-1], lines + len(ends), ends[-1]
            forget(m, start, pos)
            bar.update(pos - start)
    return prev, lines


def _seal_window(m: Any, view: memoryview, pos: int, prev: bytes) -> tuple[list[int], list[bytes]]:
    """The ends of the lines in the window from ``pos`` and each one's seal, recomputed
    assuming every line sound: the tightest loop, its checks left to _sound_window."""
    size, find, sha256 = len(m), m.find, hashlib.sha256
    stop = min(pos + WINDOW, size)
    ends: list[int] = []
    seals: list[bytes] = []
    add_end, add_seal = ends.append, seals.append
    while pos < stop:
        end = find(b"\n", pos) + 1 or size
        prev = sha256(prev + view[pos + _PREFIX : end - SUFFIX_LENGTH]).digest()
        add_end(end)
        add_seal(prev)
        pos = end
    return ends, seals


def _sound_window(m: Any, start: int, ends: list[int], seals: list[bytes]) -> bool:
    """Whether every line in the window is sound: its hash, in lower-case hex, is its seal,
    between the fixed bytes around it. Compared all at once: each line's suffix with the prefix
    of the line after it, against the same bytes built from the seals with strided copies."""
    count = len(ends)
    found = b"".join([m[end - SUFFIX_LENGTH : end + _PREFIX] for end in ends[:-1]])
    found += m[ends[-1] - SUFFIX_LENGTH : ends[-1]]
    expected = bytearray(_BETWEEN_LINES * count)
    hex_seals = b"".join(seals).hex().encode()
    for at in range(64):
        expected[len(HASH_KEY) + at :: len(_BETWEEN_LINES)] = hex_seals[at::64]
    return m[start : start + _PREFIX] == LINE_PREFIX and found == expected[:-_PREFIX]


def _lines(m: Any, pos: int, ends: list[int], prev: bytes, lines: int, findings: Findings) -> bytes:
    """Line by line, naming what is wrong; the hash to go on from."""
    for number, end in enumerate(ends, lines + 1):
        prev = _line(m[pos:end], number, prev, findings)
        pos = end
    return prev


def _line(line: bytes, number: int, prev: bytes, findings: Findings) -> bytes:
    """Check event line ``number`` and name what is wrong with it; the hash to continue the
    chain from: its stored one where it has one, so one edited event is named once."""
    if line.startswith(LINE_PREFIX) and line.endswith(LINE_END) and line[-SUFFIX_LENGTH:-HEX_AT] == HASH_KEY:
        body, hex_hash = line[_PREFIX:-SUFFIX_LENGTH], line[-HEX_AT:-_END]
        try:
            position = orjson.loads(b"{" + body[body.rfind(_TAIL) + 1 :])["position"]
            stored = stored_hash(line)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        else:
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
        if (
            header.get("format") != FORMAT
            or header_line(header["position"], bytes.fromhex(header["hash"])) != line
        ):
            raise ValueError(line[:80])
        return header
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        findings("chain", f"the first line is not a {FORMAT} header", position=0)
        return None
