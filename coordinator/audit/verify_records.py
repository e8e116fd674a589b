"""The records pass of `concord verify`: each event decoded straight into a typed record
(event_records.py) — a ``NumberIssued`` without its document snapshot, which is most of its
bytes — for positions, the numbering invariants and the receipts. It is fed the windows the
chain pass found, in order, with each line's kind (``line_kinds``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from coordinator.audit import event_records as rec
from coordinator.audit.export_format import LINE_PREFIX, SUFFIX_LENGTH, stored_hash
from coordinator.audit.findings import Findings
from coordinator.audit.invariants import Invariants
from coordinator.audit.mapped_file import forget, mapped, populate
from coordinator.audit.receipts import Receipt, ReceiptCheck
from coordinator.events import catalogue as ev

# A line's kind: 0 for an event the invariants do not read, else 1 + its index in _CHECKED.
# The last 4 letters of the type's name, which end 2 bytes before the line's fixed suffix,
# tell the checked types apart; each one's tagged decoder refuses any other type.
_CHECKED = tuple(rec.EVENT_DECODERS)
_KIND_OF_NAME_TAIL = {type_[-4:].encode(): kind for kind, type_ in enumerate(_CHECKED, 1)}
_NAME_END = SUFFIX_LENGTH + len(b'"}')
_NAME_TAIL = _NAME_END + 4
_PREFIX = len(LINE_PREFIX)
# Sorted keys put NumberIssued's document snapshot before "formatted"; a `,"` cannot occur
# inside a JSON string, so the last `,"formatted":"` is data's own key, and the event decodes
# as the same event without the snapshot.
_ISSUED_CUT = b',"formatted":"'
_ISSUED_HEAD = b'{"data":{'


def line_kinds(m: Any, ends: Sequence[int]) -> bytes:
    """The kind of each line ending at ``ends``."""
    kind_of = _KIND_OF_NAME_TAIL
    return bytes([kind_of.get(m[end - _NAME_TAIL : end - _NAME_END], 0) for end in ends])


class RecordsPass:
    def __init__(self, path: Path, receipts: list[Receipt] | None) -> None:
        self.findings = Findings()
        self.findings.ran.update(("positions", "invariants"))
        if receipts is not None:
            self.findings.ran.add("receipts")
        self.invariants = Invariants(self.findings)
        self.receipts = ReceiptCheck(self.findings, receipts or [])
        self._upcoming = iter(sorted(self.receipts.by_position))
        self._receipt_at = next(self._upcoming, math.inf)
        self.last = 0  # position of the last event read
        # Per kind: how its line decodes, its check, and whether to cut its snapshot off.
        self._kinds = [(rec.ANY_EVENT.decode, None, False)]
        self._kinds += [
            (rec.EVENT_DECODERS[type_].decode, self.invariants.checks[type_], type_ == ev.NUMBER_ISSUED)
            for type_ in _CHECKED
        ]
        self._exit = ExitStack()
        self._m = self._exit.enter_context(mapped(path))
        self._view = self._exit.enter_context(memoryview(self._m))

    def __enter__(self) -> RecordsPass:
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def window(self, pos: int, ends: Sequence[int], kinds: bytes) -> None:
        """The lines from ``pos`` ending at ``ends``, of ``kinds``."""
        m, view, rfind, findings, last = self._m, self._view, self._m.rfind, self.findings, self.last
        start, table, receipt_at = pos, self._kinds, self._receipt_at
        if ends:
            populate(m, start, ends[-1])
        for end, kind in zip(ends, kinds, strict=True):
            decode, check, issued = table[kind]
            try:  # the event alone, between the line's fixed prefix and suffix
                if issued and (cut := rfind(_ISSUED_CUT, pos, end)) > 0:
                    event = decode(_ISSUED_HEAD + m[cut + 1 : end - SUFFIX_LENGTH])
                else:
                    event = decode(view[pos + _PREFIX : end - SUFFIX_LENGTH])
            except rec.DecodeError:
                event, check = _off_path(m[pos:end], self.invariants), None
                if event is None:  # not an event line: named by the chain pass
                    pos = end
                    continue
            position = event.position
            if position != last + 1:
                findings(
                    "positions",
                    f"expected position {last + 1}, found {position}"
                    + (" (events missing)" if position > last + 1 else ""),
                    position=position,
                )
            last = position
            if check is not None:
                check(position, event.data)
            if position >= receipt_at:
                receipt_at = self._receipt(position, m[pos:end])
            pos = end
        self.last, self._receipt_at = last, receipt_at
        forget(m, start, pos)

    def _receipt(self, position: int, line: bytes) -> float:
        """Check the receipts at ``position``; the next position a receipt names."""
        if position in self.receipts.by_position:
            try:
                event = orjson.loads(line)["event"]
                stored = stored_hash(line)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                pass  # named by the chain pass
            else:
                self.receipts.feed(position, stored, event.get("type"), event.get("data") or {})
        return next((p for p in self._upcoming if p > position), math.inf)

    def finish(self) -> tuple[Findings, int, list[dict[str, Any]], int]:
        """Findings, the last position, the series summary, and how many receipts were given."""
        self.receipts.finish(self.last)
        return self.findings, self.last, self.invariants.summary(), self.receipts.count


def _off_path(line: bytes, invariants: Invariants) -> rec.Event | None:
    """A line its kind's decoder refused: fed to the invariants as parsed JSON (naming data that
    is malformed); its position, or None if it is not an event line at all."""
    try:
        event = orjson.loads(line)["event"]
        found = rec.Event(event["position"])
        if type(found.position) is not int:
            return None
        invariants.feed(found.position, str(event["type"]), event["data"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return found
