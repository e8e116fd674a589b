"""The numbering invariants of docs/design.md §2, checked on the stream of events. Pure.

Per series and period: the numbers handed out are the counter's numbers in order, with no
hole except numbers sitting released in the pool; no number is handed out twice; each
(store, doctype, doc_id) holds at most one live number; each confirmed number has exactly
one document (one ``NumberIssued`` for a pending reservation).

Memory: one byte per number handed out (sparse pages), the pending reservations, and the
ids of documents holding a number (a few dozen bytes each); never the events themselves.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from coordinator.audit import event_records as rec
from coordinator.audit.findings import Findings
from coordinator.events import catalogue as ev
from coordinator.ledger import series_defaults

FREE, RESERVED, ISSUED, RELEASED, VOID, IMPORTED = range(6)
STATE_NAMES = (
    "never handed out",
    "reserved",
    "issued",
    "released",
    "void",
    "carried by an imported document",
)

_DEFAULT = (series_defaults.START, series_defaults.INCREMENT)  # (start, increment)
Key = tuple[str, str]


class _Period:
    """One series and period: its counter, its pool of released numbers, and one byte per
    number (in pages of 4096 allocated on use) saying what became of it."""

    __slots__ = ("handed_out", "highest", "increment", "key", "next", "pages", "pool")

    def __init__(self, key: Key, start: int, increment: int) -> None:
        self.key = key
        self.next = start
        self.increment = increment  # the series' (SeriesConfigured keeps it current)
        self.highest = -1  # none handed out yet (numbers are never negative)
        self.pool: list[int] = []
        self.pages: dict[int, bytearray] = {}
        self.handed_out = 0

    def state(self, number: int) -> int:
        page = self.pages.get(number >> 12)
        return page[number & 4095] if page is not None else FREE

    def set(self, number: int, state: int) -> None:
        page = self.pages.get(number >> 12)
        if page is None:
            page = self.pages[number >> 12] = bytearray(4096)
        page[number & 4095] = state


class Invariants:
    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.settings: dict[str, tuple[int, int]] = {}  # series -> (start, increment)
        self.periods: dict[Key, _Period] = {}
        # reservation id -> (its period, number, the set holding its document, the doc id)
        self.pending: dict[str, tuple[_Period, int, set[int | str], int | str]] = {}
        # (store, doctype) -> ids of its documents holding a number
        self.holding: dict[tuple[str, str], set[int | str]] = {}
        # Per checked event type: its check, fed the event's typed record (event_records.py).
        self.checks: dict[str, Callable[[int, Any], None]] = {
            ev.SERIES_CONFIGURED: self._configured,
            ev.NUMBER_RESERVED: self._reserved,
            ev.NUMBER_ISSUED: self._issued,
            ev.NUMBER_RELEASED: self._released,
            ev.NUMBER_VOIDED: self._voided,
            ev.DOCUMENT_IMPORTED: self._imported,
            ev.EXTERNAL_NUMBER_DETECTED: self._external,
        }

    def feed(self, position: int, type_: str, data: Any) -> None:
        """One event whose data is already parsed (a dict)."""
        check = self.checks.get(type_)
        if check is None:
            return
        try:
            record = rec.record(type_, data)
        except rec.RecordError as exc:
            self.malformed(position, type_, exc)
            return
        check(position, record)

    def malformed(self, position: int, type_: str, error: Exception) -> None:
        self.findings("invariants", f"{type_} data is malformed ({error})", position=position)

    def _fail(self, message: str, position: int, key: Key, number: int | None) -> None:
        self.findings("invariants", message, position=position, series=key[0], period=key[1], number=number)

    def _period(self, key: Key) -> _Period:
        found = self.periods.get(key)
        if found is None:
            start, increment = self.settings.get(key[0], _DEFAULT)
            found = self.periods[key] = _Period(key, start, increment)
        return found

    def _configured(self, position: int, d: rec.SeriesConfigured) -> None:
        name, settings = d.series, d.settings
        self.settings[name] = (settings.start, settings.increment)
        for key, period in self.periods.items():
            if key[0] == name:
                period.increment = settings.increment
        change = d.next
        if change is None:
            return
        period = self._period((name, change.period))
        if change.number <= period.highest:
            self._fail(
                f"'next' set to {change.number}, not above {period.highest} already "
                "handed out: numbers would repeat",
                position,
                period.key,
                change.number,
            )
        period.next = change.number

    def _reserved(self, position: int, d: rec.NumberReserved) -> None:
        # The hottest path of an audit: plain lookups, findings only off the straight path.
        key: Key = (d.series, d.period)
        number, rid, pending, holding = d.number, d.reservation_id, self.pending, self.holding
        period = self.periods.get(key) or self._period(key)
        text = d.doc_id
        doc_id: int | str = text
        if text.isdigit() and text.isascii() and text[0] != "0":
            doc_id = int(text)  # a WHMCS invoice id: a third of the memory of its text
        held = holding.get((d.peer_id, d.doctype))
        if held is None:
            held = holding[d.peer_id, d.doctype] = set()
        if doc_id in held:
            self._fail(
                f"{d.doctype} {d.doc_id} of store {d.peer_id} already holds a "
                "number: a document gets one number",
                position,
                key,
                number,
            )
        if rid in pending:
            self._fail(f"reservation id {rid} reserved twice", position, key, number)
        page = period.pages.get(number >> 12)
        if page is None:
            page = period.pages[number >> 12] = bytearray(4096)
        state = page[number & 4095]
        if d.from_pool:
            self._from_pool(position, d, period, number, state)
        elif state != FREE or number != period.next or period.pool or d.next != number + period.increment:
            self._from_counter_failed(position, d, period, number, state)
        period.next = d.next
        if number > period.highest:
            period.highest = number
        page[number & 4095] = RESERVED
        period.handed_out += 1
        held.add(doc_id)
        pending[rid] = (period, number, held, doc_id)

    def _from_pool(
        self, position: int, d: rec.NumberReserved, period: _Period, number: int, state: int
    ) -> None:
        pool, key = period.pool, period.key
        index = bisect.bisect_left(pool, number)
        if index == len(pool) or pool[index] != number:
            self._fail(
                f"taken from the pool but it was not released (it is {STATE_NAMES[state]}): handed out twice",
                position,
                key,
                number,
            )
        else:
            if index:
                self._fail(
                    f"taken from the pool before the lower released number {pool[0]}", position, key, number
                )
            del pool[index]
        if d.next != period.next:
            self._fail(
                f"reusing a released number moved the counter from {period.next} to {d.next}",
                position,
                key,
                number,
            )

    def _from_counter_failed(
        self, position: int, d: rec.NumberReserved, period: _Period, number: int, state: int
    ) -> None:
        key, expected, increment = period.key, period.next, period.increment
        if state != FREE:
            self._fail(f"handed out twice: it was {STATE_NAMES[state]} already", position, key, number)
        elif number > expected:
            last = number - increment
            skipped = f"{expected}" if last <= expected else f"{expected}…{last}"
            self._fail(f"hole: {skipped} skipped (the counter stood at {expected})", position, key, number)
        elif number < expected:
            self._fail(f"not the counter's next number {expected}", position, key, number)
        if period.pool:
            self._fail(
                f"taken from the counter while released {period.pool[0]} waited in the pool",
                position,
                key,
                number,
            )
        if d.next != number + increment:
            self._fail(
                f"the counter advanced to {d.next} instead of {number + increment}", position, key, number
            )

    def _take_pending(self, position: int, d: rec.ReservationEnded, what: str) -> tuple[Any, ...] | None:
        found = self.pending.pop(d.reservation_id, None)
        key: Key = (d.series, d.period)
        if found is None:
            self._fail(
                f"{what} reservation {d.reservation_id}, which is not pending "
                "(unknown, or already issued, released or void)",
                position,
                key,
                d.number,
            )
            return None
        if found[0].key != key or found[1] != d.number:
            self._fail(
                f"{what} reservation {d.reservation_id} as {key[0]} {key[1]} "
                f"#{d.number}, but it holds {found[0].key[0]} {found[0].key[1]} "
                f"#{found[1]}",
                position,
                found[0].key,
                found[1],
            )
        return found

    def _issued(self, position: int, d: rec.ReservationEnded) -> None:
        found = self._take_pending(position, d, "issued")
        if found is not None:
            found[0].set(found[1], ISSUED)

    def _released(self, position: int, d: rec.ReservationEnded) -> None:
        found = self._take_pending(position, d, "released")
        if found is not None:
            period, number, held, doc_id = found
            period.set(number, RELEASED)
            bisect.insort(period.pool, number)
            held.discard(doc_id)

    def _voided(self, position: int, d: rec.NumberVoided) -> None:
        if d.was == "reserved":
            found = self._take_pending(position, d, "voided")
            if found is not None:
                found[0].set(found[1], VOID)
            return
        period = self._period((d.series, d.period))
        state = period.state(d.number)
        if state != ISSUED:
            self._fail(
                f"voided as issued, but the number is {STATE_NAMES[state]}", position, period.key, d.number
            )
        period.set(d.number, VOID)

    def _imported(self, position: int, d: rec.DocumentImported) -> None:
        if d.number is None:
            return
        period = self._period((d.number.series, d.number.period))
        state = period.state(d.number.number)
        if state != FREE:
            self._fail(
                f"imported, but the number is {STATE_NAMES[state]} already: a number carried twice",
                position,
                period.key,
                d.number.number,
            )
        period.set(d.number.number, IMPORTED)

    def _external(self, position: int, d: rec.ExternalNumberDetected) -> None:
        period = self._period((d.series, d.period))
        if d.from_pool:  # an import claims a released number: it leaves the pool
            if d.first not in period.pool:
                self._fail(
                    f"claimed from the pool by an import, but it is {STATE_NAMES[period.state(d.first)]}",
                    position,
                    period.key,
                    d.first,
                )
            else:
                period.pool.remove(d.first)
                period.set(d.first, FREE)
            return
        if d.first != period.next:
            self._fail(
                f"imported numbers skipped from {d.first}, but the counter stood at {period.next}",
                position,
                period.key,
                d.first,
            )
        if period.pool:
            self._fail(
                f"imported numbers skipped while released {period.pool[0]} waited in the pool",
                position,
                period.key,
                d.first,
            )
        if d.last < d.first or (d.last - d.first) % period.increment:
            self._fail(
                f"a skipped run {d.first}…{d.last} that the increment "
                f"{period.increment} does not step through",
                position,
                period.key,
                d.first,
            )
        else:
            for number in range(d.first, d.last + 1, period.increment):
                if period.state(number) != IMPORTED:
                    self._fail(
                        f"skipped as imported, but it is {STATE_NAMES[period.state(number)]}: a hole",
                        position,
                        period.key,
                        number,
                    )
        if d.next != d.last + period.increment:
            self._fail(
                f"skipping imported numbers up to {d.last} moved the counter to {d.next} "
                f"instead of {d.last + period.increment}",
                position,
                period.key,
                d.first,
            )
        period.next = d.next

    def summary(self) -> list[dict[str, Any]]:
        """Per series and period: how many numbers, the highest, the released ones."""
        pending: dict[Key, int] = {}
        for found in self.pending.values():
            pending[found[0].key] = pending.get(found[0].key, 0) + 1
        return [
            {
                "series": key[0],
                "period": key[1],
                "handed_out": p.handed_out,
                "highest": p.highest if p.handed_out else None,
                "next": p.next,
                "released": p.pool[:50],
                "pending": pending.get(key, 0),
            }
            for key, p in sorted(self.periods.items())
        ]
