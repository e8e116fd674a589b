"""The records pass of `concord verify`: each event decoded straight into a typed record
(event_records.py) — a ``NumberIssued`` without its document snapshot, which is most of its
bytes — for positions, the numbering invariants and the receipts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from coordinator.events import catalogue as ev
from coordinator.ledger import event_records as rec
from coordinator.ledger.export_format import SUFFIX_LENGTH, stored_hash
from coordinator.ledger.findings import Findings
from coordinator.ledger.invariants import Invariants
from coordinator.ledger.mapped_file import WINDOW, forget, mapped, populate
from coordinator.ledger.receipts import Receipt, ReceiptCheck

# The last 4 letters of a type's name end 2 bytes before the line's fixed suffix; they tell
# the checked types apart, and each one's tagged decoder refuses any other type.
_NAME_END = SUFFIX_LENGTH + len(b'"}')
_NAME_TAIL = _NAME_END + 4
# Sorted keys put NumberIssued's document snapshot before "formatted"; a `,"` cannot occur
# inside a JSON string, so the last `,"formatted":"` is data's own key, and the line decodes
# as the same line without the snapshot.
_ISSUED_CUT = b',"formatted":"'
_ISSUED_HEAD = b'{"event":{"data":{'


def records_pass(path: Path, receipts: list[Receipt] | None
                 ) -> tuple[Findings, int, list[dict[str, Any]], int]:
    """Findings, the last position, the series summary, and how many receipts were given."""
    findings = Findings()
    findings.ran.update(("positions", "invariants"))
    if receipts is not None:
        findings.ran.add("receipts")
    invariants = Invariants(findings)
    receipt_check = ReceiptCheck(findings, receipts or [])
    upcoming = iter(sorted(receipt_check.by_position))
    receipt_at = next(upcoming, math.inf)
    kinds = {type_[-4:].encode(): (decoder.decode, invariants.checks[type_],
                                   type_ == ev.NUMBER_ISSUED)
             for type_, decoder in rec.LINE_DECODERS.items()}
    any_type = (rec.ANY_LINE.decode, None, False)
    last = 0
    with mapped(path) as m, memoryview(m) as view:
        size, find, rfind = len(m), m.find, m.rfind
        pos = find(b"\n") + 1 or size
        while pos < size:
            start, stop = pos, min(pos + WINDOW, size)
            populate(m, start, stop + 4096)
            while pos < stop:
                end = find(b"\n", pos) + 1 or size
                decode, check, issued = kinds.get(m[end - _NAME_TAIL:end - _NAME_END], any_type)
                try:
                    if issued and (cut := rfind(_ISSUED_CUT, pos, end)) > 0:
                        event = decode(_ISSUED_HEAD + m[cut + 1:end]).event
                    else:
                        event = decode(view[pos:end]).event
                except rec.DecodeError:
                    event, check = _off_path(m[pos:end], invariants), None
                    if event is None:  # not an event line: named by the chain pass
                        pos = end
                        continue
                position = event.position
                if position != last + 1:
                    findings("positions", f"expected position {last + 1}, found {position}"
                             + (" (events missing)" if position > last + 1 else ""),
                             position=position)
                last = position
                if check is not None:
                    check(position, event.data)
                if position >= receipt_at:
                    if position in receipt_check.by_position:
                        _feed_receipt(receipt_check, position, m[pos:end])
                    while receipt_at <= position:
                        receipt_at = next(upcoming, math.inf)
                pos = end
            forget(m, start, pos)
    receipt_check.finish(last)
    return findings, last, invariants.summary(), receipt_check.count


def _off_path(line: bytes, invariants: Invariants) -> rec.Event | None:
    """A line its type's decoder refused: fed to the invariants as parsed JSON (naming data that
    is malformed); its id and position, or None if it is not an event line at all."""
    try:
        event = orjson.loads(line)["event"]
        found = rec.Event(event["event_id"], event["position"])
        if not (isinstance(found.event_id, str) and type(found.position) is int):
            return None
        invariants.feed(found.position, str(event["type"]), event["data"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return found


def _feed_receipt(receipt_check: ReceiptCheck, position: int, line: bytes) -> None:
    try:
        event = orjson.loads(line)["event"]
        stored = stored_hash(line)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return  # named by the chain pass
    receipt_check.feed(position, stored, event.get("type"), event.get("data") or {})

