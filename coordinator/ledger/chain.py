"""Verifying the hash chain event by event, in constant memory. Pure.

Each event is checked twice: its *seal* (``hash = sha256(prev_hash ‖ canonical event)``,
recomputed) and its *link* (its ``prev_hash`` is the stored hash of the event before). The
chain continues from the stored hash, so one edited event is named once instead of
breaking every later one; positions must run 1, 2, 3… without a gap.
"""

from __future__ import annotations

import hashlib
import itertools
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

from coordinator.events.canonical import GENESIS_HASH, canonical_event, canonical_json
from coordinator.ledger.findings import Findings

_MASK64 = (1 << 64) - 1


class ChainVerifier:
    def __init__(self, findings: Findings, *, position: int = 0, hash_: bytes = GENESIS_HASH) -> None:
        self.findings = findings
        self.position = position  # of the last event checked
        self.hash = hash_  # its stored hash
        self.broken_at: int | None = None  # first position whose seal or link failed

    def feed(self, position: int, body: bytes, hash_: bytes, prev_hash: bytes | None = None) -> bool:
        """Check one event given its canonical body; False if its seal or link is broken."""
        ok = True
        if position != self.position + 1:
            self.findings("positions", f"expected position {self.position + 1}, found {position}"
                          + (" (events missing)" if position > self.position + 1 else ""),
                          position=position)
        if prev_hash is not None and prev_hash != self.hash:
            ok = False
            self.findings("chain", f"prev_hash {prev_hash.hex()} is not the hash of the event "
                          f"before ({self.hash.hex()}): an event was removed or inserted",
                          position=position)
        if hashlib.sha256(self.hash + body).digest() != hash_:
            ok = False
            self.findings("chain", "the event does not match its hash: it was changed after "
                          "it was written", position=position)
        if not ok and self.broken_at is None:
            self.broken_at = position
        self.position, self.hash = position, hash_
        return ok


class EventIds:
    """Event-id uniqueness in 8 bytes per event: 64-bit hashes, sorted in 256 buckets at the
    end. Equal hashes are only *suspects*; ``confirm`` re-reads the ids to name true repeats."""

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(256)]

    def add(self, event_id: bytes) -> None:
        h = hash(event_id) & _MASK64
        self._buckets[h & 255].append(h)

    def suspects(self) -> set[int]:
        found: set[int] = set()
        for bucket in self._buckets:
            ordered = sorted(bucket)
            found.update(a for a, b in itertools.pairwise(ordered) if a == b)
        return found

    @staticmethod
    def confirm(suspects: set[int], ids: Iterable[tuple[int, bytes]]) -> dict[bytes, list[int]]:
        """The event ids among (position, event_id) pairs that occur more than once."""
        seen: dict[bytes, list[int]] = {}
        for position, event_id in ids:
            if hash(event_id) & _MASK64 in suspects:
                seen.setdefault(event_id, []).append(position)
        return {eid: positions for eid, positions in seen.items() if len(positions) > 1}


def stored_body(row: Mapping[str, Any]) -> bytes:
    """The canonical form of an event read back with ``EVENT_COLUMNS``, as it was hashed."""
    return canonical_event(row["position"], row["event_id"], row["type"], row["stream"],
                           canonical_json(row["data"]), row["stamp"])


# The stored columns of an event; the timestamp also as its hashed text, formatted by
# PostgreSQL (as format_recorded_at does), which is much cheaper than strftime per event.
EVENT_COLUMNS = ("position, event_id::text AS event_id, type, stream, data,"
                 " to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                 " AS stamp, prev_hash, hash")
