"""Verifying the hash chain event by event, in constant memory. Pure.

Each event is checked twice: its *seal* (``hash = sha256(prev_hash ‖ canonical event)``,
recomputed) and its *link* (its ``prev_hash`` is the stored hash of the event before). The
chain continues from the stored hash, so one edited event is named once instead of
breaking every later one; positions must run 1, 2, 3… without a gap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from coordinator.audit.findings import Findings
from coordinator.events.canonical import GENESIS_HASH, canonical_event, canonical_json

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
            self.findings(
                "positions",
                f"expected position {self.position + 1}, found {position}"
                + (" (events missing)" if position > self.position + 1 else ""),
                position=position,
            )
        if prev_hash is not None and prev_hash != self.hash:
            ok = False
            self.findings(
                "chain",
                f"prev_hash {prev_hash.hex()} is not the hash of the event "
                f"before ({self.hash.hex()}): an event was removed or inserted",
                position=position,
            )
        if hashlib.sha256(self.hash + body).digest() != hash_:
            ok = False
            self.findings("chain", SEAL_BROKEN, position=position)
        if not ok and self.broken_at is None:
            self.broken_at = position
        self.position, self.hash = position, hash_
        return ok


def stored_body(row: Mapping[str, Any]) -> bytes:
    """The canonical form of an event read back with ``EVENT_COLUMNS``, as it was hashed."""
    return canonical_event(
        row["position"],
        row["event_id"],
        row["type"],
        row["stream"],
        canonical_json(row["data"]),
        row["stamp"],
    )


# The stored columns of an event; the timestamp also as its hashed text, formatted by
# PostgreSQL (as format_recorded_at does), which is much cheaper than strftime per event.
EVENT_COLUMNS = (
    "position, event_id::text AS event_id, type, stream, data,"
    " to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    " AS stamp, prev_hash, hash"
)
