"""Verifying the hash chain event by event, in constant memory. Pure.

Each event is checked twice: its *seal* (``hash = sha256(prev_hash ‖ canonical event)``,
recomputed) and its *link* (its ``prev_hash`` is the stored hash of the event before). The
chain continues from the stored hash, so one edited event is named once instead of
breaking every later one; positions must run 1, 2, 3… without a gap.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from coordinator.events.canonical import GENESIS_HASH, canonical_event, canonical_json
from coordinator.ledger.findings import Findings

SEAL_BROKEN = "the event does not match its hash: it was changed after it was written"


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
            self.findings("chain", SEAL_BROKEN, position=position)
        if not ok and self.broken_at is None:
            self.broken_at = position
        self.position, self.hash = position, hash_
        return ok


class EventIds:
    """Event-id uniqueness in 8 bytes per event: the ``hash()`` of each id, kept in 64 buckets
    by value. Ids come a window at a time, so hashing, sorting and bucketing run in C; equal
    hashes are only *suspects*, which ``confirm`` turns into true repeats by reading the ids
    again."""

    _BOUNDS = tuple(-(1 << 63) + (k << 58) for k in range(1, 64))  # hash(): signed 64 bits

    def __init__(self) -> None:
        self.buckets = [array("q") for _ in range(64)]

    def add_window(self, event_ids: list[bytes]) -> None:
        run, start = sorted(map(hash, event_ids)), 0
        for bucket, bound in zip(self.buckets, self._BOUNDS, strict=False):
            stop = bisect.bisect_left(run, bound, start)
            bucket.extend(run[start:stop])
            start = stop
        self.buckets[-1].extend(run[start:])

    def suspects(self) -> set[int]:
        found: set[int] = set()
        for bucket in self.buckets:
            if len(set(bucket)) != len(bucket):
                found.update(h for h, count in Counter(bucket).items() if count > 1)
        return found

    @staticmethod
    def confirm(suspects: set[int], ids: Iterable[tuple[int, bytes]]) -> dict[bytes, list[int]]:
        """The event ids among (position, event_id) pairs that occur more than once."""
        seen: dict[bytes, list[int]] = {}
        for position, event_id in ids:
            if hash(event_id) in suspects:
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
