"""The projections as plain objects, and how each event changes them. Pure.

The writer loads the part of the state a batch needs, lets the decider emit events, applies
them here, and flushes what changed (``Changes``) in the same transaction as the append.
Replaying every event onto an empty ``LedgerState`` yields the whole projection.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from coordinator.ledger.numbering import SERIES_NAMES, SeriesSettings


class Event(NamedTuple):
    """A recorded event. A named tuple: built for every event a replay reads, where a frozen
    dataclass's construction cost twice as much."""

    position: int
    event_id: str
    type: str
    stream: str
    data: dict[str, Any]
    recorded_at: datetime
    prev_hash: bytes
    hash: bytes
    data_json: bytes = b""  # canonical JSON of data, when the writer made it


@dataclass(slots=True)
class Reservation:
    id: str
    peer_id: str
    doctype: str
    doc_id: str
    series: str  # the counter the number came from
    period: str
    number: int
    formatted: str
    doc_date: date
    state: str  # reserved | issued | released | void
    reserved_at: datetime
    position: int  # receipt: the reservation's latest event
    hash: bytes
    warning_id: str | None = None


@dataclass(slots=True)
class Document:
    peer_id: str
    doctype: str
    doc_id: str
    reservation_id: str | None  # None: imported, numbered before Concord
    series: str | None
    period: str | None
    number: int | None
    formatted: str
    snapshot: dict[str, Any]
    voided: bool
    imported: bool
    position: int


@dataclass(slots=True)
class Peer:
    id: str
    name: str
    url: str
    token_sha256: str
    state: str  # active | retired
    agent_version: str | None = None
    reported: dict[str, Any] | None = None


@dataclass(slots=True)
class Warning_:
    id: str
    code: str
    subject: str
    message: str
    state: str  # open | resolved
    raised_at: datetime
    resolved_at: datetime | None = None


@dataclass(slots=True)
class Counter:
    next: int
    highest: int | None  # highest number handed out in the period, None before the first


@dataclass
class Changes:
    """Rows a batch touched, to flush in its transaction."""

    series: set[str] = field(default_factory=set)
    counters: set[tuple[str, str]] = field(default_factory=set)
    pool_added: set[tuple[str, str, int]] = field(default_factory=set)
    pool_removed: set[tuple[str, str, int]] = field(default_factory=set)
    new_reservations: set[str] = field(default_factory=set)
    reservations: set[str] = field(default_factory=set)
    documents: set[tuple[str, str, str]] = field(default_factory=set)
    voided_documents: set[str] = field(default_factory=set)
    external_added: set[tuple[str, str, int, str]] = field(default_factory=set)
    peers: set[str] = field(default_factory=set)
    warnings: set[str] = field(default_factory=set)


class LedgerState:
    def __init__(self) -> None:
        self.settings: dict[str, SeriesSettings] = {name: SeriesSettings() for name in SERIES_NAMES}
        self.counters: dict[tuple[str, str], Counter] = {}
        self.pool: dict[tuple[str, str], list[int]] = {}
        self.peers: dict[str, Peer] = {}
        # Loaded per batch: reservations by id and the active one per document key.
        self.reservations: dict[str, Reservation] = {}
        self.active_by_key: dict[tuple[str, str, str], str | None] = {}
        self.active_by_number: dict[tuple[str, str, int], str | None] = {}
        self.documents: dict[tuple[str, str, str], Document | None] = {}
        self.document_by_formatted: dict[str, tuple[str, str, str] | None] = {}
        # Loaded per batch: numbers imported documents carry, by series and period: those at
        # or above the counter (a reserve's candidates) and those an import names.
        self.external: dict[tuple[str, str], dict[int, str]] = {}
        self.warnings: dict[str, Warning_] = {}
        self.open_warning_by_subject: dict[tuple[str, str], str | None] = {}
        self.changes = Changes()

    # -- reads the decider uses ---------------------------------------------------------
    def counter(self, series: str, period: str) -> Counter:
        found = self.counters.get((series, period))
        return found if found else Counter(next=self.settings[series].start, highest=None)

    def released(self, series: str, period: str) -> list[int]:
        return self.pool.get((series, period), [])

    def active_reservation(self, peer_id: str, doctype: str, doc_id: str) -> Reservation | None:
        rid = self.active_by_key[(peer_id, doctype, doc_id)]  # KeyError = not loaded: a bug
        return self.reservations[rid] if rid else None

    def reservation_holding(self, series: str, period: str, number: int) -> Reservation | None:
        rid = self.active_by_number[(series, period, number)]
        return self.reservations[rid] if rid else None

    def open_warning(self, code: str, subject: str) -> Warning_ | None:
        wid = self.open_warning_by_subject[(code, subject)]
        return self.warnings[wid] if wid else None

    def document(self, peer_id: str, doctype: str, doc_id: str) -> Document | None:
        return self.documents[(peer_id, doctype, doc_id)]  # KeyError = not loaded: a bug

    def imported_number(self, series: str, period: str, number: int) -> str | None:
        """The formatted number of the imported document that carries this number, if any."""
        return self.external.get((series, period), {}).get(number)

    def document_numbered(self, formatted: str) -> tuple[str, str, str] | None:
        """The document that carries this formatted number, if any."""
        return self.document_by_formatted[formatted]

    def peer_by_name(self, name: str) -> Peer | None:
        return next((p for p in self.peers.values() if p.name == name), None)

    # -- loading ----------------------------------------------------------------------------
    def remember_reservation(self, r: Reservation) -> None:
        self.reservations[r.id] = r
        if r.state != "released":
            self.active_by_key[(r.peer_id, r.doctype, r.doc_id)] = r.id
            self.active_by_number[(r.series, r.period, r.number)] = r.id

    def remember_document(self, d: Document) -> None:
        key = (d.peer_id, d.doctype, d.doc_id)
        self.documents[key] = d
        self.document_by_formatted[d.formatted] = key

    def clear_small_tables(self) -> None:
        """Before reloading them: another process changed them since."""
        self.settings = {name: SeriesSettings() for name in SERIES_NAMES}
        self.counters.clear()
        self.pool.clear()
        self.peers.clear()

    def forget_per_batch(self) -> None:
        """Drop what is loaded per batch; keep the small tables (settings, counters, pool, peers)."""
        self.reservations.clear()
        self.active_by_key.clear()
        self.active_by_number.clear()
        self.documents.clear()
        self.document_by_formatted.clear()
        self.external.clear()
        self.warnings.clear()
        self.open_warning_by_subject.clear()
        self.start_batch()

    def start_batch(self) -> None:
        """Count changes afresh: the batch before was handed to the database."""
        self.changes = Changes()

    # -- applying events --------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is None:
            raise ValueError(f"unknown event type {event.type!r} at position {event.position}")
        handler(event, event.data)

    def _on_SeriesConfigured(self, event: Event, data: dict[str, Any]) -> None:
        name = data["series"]
        self.settings[name] = SeriesSettings.model_validate(data["settings"])
        self.changes.series.add(name)
        if data.get("next") is not None:
            key = (name, data["next"]["period"])
            current = self.counter(*key)
            self.counters[key] = Counter(next=data["next"]["number"], highest=current.highest)
            self.changes.counters.add(key)

    def _on_NumberReserved(self, event: Event, data: dict[str, Any]) -> None:
        key = (data["series"], data["period"])
        number = data["number"]
        if data["from_pool"]:
            self.pool[key].remove(number)
            self._pool_change(key, number, added=False)
        counter = self.counter(*key)
        highest = number if counter.highest is None else max(counter.highest, number)
        self.counters[key] = Counter(next=data["next"], highest=highest)
        self.changes.counters.add(key)
        r = Reservation(
            id=data["reservation_id"],
            peer_id=data["peer_id"],
            doctype=data["doctype"],
            doc_id=data["doc_id"],
            series=data["series"],
            period=data["period"],
            number=number,
            formatted=data["formatted"],
            doc_date=date.fromisoformat(data["date"]),
            state="reserved",
            reserved_at=event.recorded_at,
            position=event.position,
            hash=event.hash,
        )
        self.remember_reservation(r)
        self.changes.new_reservations.add(r.id)

    def _on_NumberIssued(self, event: Event, data: dict[str, Any]) -> None:
        r = self._touch(data["reservation_id"], event, "issued")
        self.remember_document(
            Document(
                peer_id=r.peer_id,
                doctype=r.doctype,
                doc_id=r.doc_id,
                reservation_id=r.id,
                series=r.series,
                period=r.period,
                number=r.number,
                formatted=r.formatted,
                snapshot=data["document"],
                voided=False,
                imported=False,
                position=event.position,
            )
        )
        self.changes.documents.add((r.peer_id, r.doctype, r.doc_id))

    def _on_DocumentUpdated(self, event: Event, data: dict[str, Any]) -> None:
        key = (data["peer_id"], data["doctype"], data["doc_id"])
        document = self.documents[key]
        assert document is not None, f"DocumentUpdated for unknown document {key}"
        document.snapshot = data["document"]
        document.position = event.position
        self.changes.documents.add(key)

    def _on_DocumentImported(self, event: Event, data: dict[str, Any]) -> None:
        self.remember_document(
            Document(
                peer_id=data["peer_id"],
                doctype=data["doctype"],
                doc_id=data["doc_id"],
                reservation_id=None,
                series=None,
                period=None,
                number=None,
                formatted=data["formatted"],
                snapshot=data["document"],
                voided=False,
                imported=True,
                position=event.position,
            )
        )
        self.changes.documents.add((data["peer_id"], data["doctype"], data["doc_id"]))
        taken = data.get("number")  # absent: the text does not follow the series' format
        if taken is not None:
            key = (taken["series"], taken["period"])
            self.external.setdefault(key, {})[taken["number"]] = data["formatted"]
            self.changes.external_added.add((*key, taken["number"], data["formatted"]))

    def _on_ExternalNumberDetected(self, event: Event, data: dict[str, Any]) -> None:
        key = (data["series"], data["period"])
        if data["from_pool"]:
            self.pool[key].remove(data["first"])
            self._pool_change(key, data["first"], added=False)
            return
        self.counters[key] = Counter(next=data["next"], highest=self.counter(*key).highest)
        self.changes.counters.add(key)

    def _on_NumberReleased(self, event: Event, data: dict[str, Any]) -> None:
        r = self._touch(data["reservation_id"], event, "released")
        self.active_by_key[(r.peer_id, r.doctype, r.doc_id)] = None
        self.active_by_number[(r.series, r.period, r.number)] = None
        bisect.insort(self.pool.setdefault((r.series, r.period), []), r.number)
        self._pool_change((r.series, r.period), r.number, added=True)

    def _on_NumberVoided(self, event: Event, data: dict[str, Any]) -> None:
        r = self._touch(data["reservation_id"], event, "void")
        if data["was"] == "issued":
            # The document row is not loaded for a void: the flush marks it by reservation.
            self.changes.voided_documents.add(r.id)

    def _on_PeerRegistered(self, event: Event, data: dict[str, Any]) -> None:
        self.peers[data["peer_id"]] = Peer(
            id=data["peer_id"],
            name=data["name"],
            url=data["url"],
            token_sha256=data["token_sha256"],
            state="active",
        )
        self.changes.peers.add(data["peer_id"])

    def _on_PeerTokenRotated(self, event: Event, data: dict[str, Any]) -> None:
        self.peers[data["peer_id"]].token_sha256 = data["token_sha256"]
        self.changes.peers.add(data["peer_id"])

    def _on_PeerRetired(self, event: Event, data: dict[str, Any]) -> None:
        self.peers[data["peer_id"]].state = "retired"
        self.changes.peers.add(data["peer_id"])

    def _on_PeerConfigReported(self, event: Event, data: dict[str, Any]) -> None:
        peer = self.peers[data["peer_id"]]
        peer.agent_version = data["agent_version"]
        peer.reported = data["settings"]
        self.changes.peers.add(peer.id)

    def _on_WarningRaised(self, event: Event, data: dict[str, Any]) -> None:
        w = Warning_(
            id=data["warning_id"],
            code=data["code"],
            subject=data["subject"],
            message=data["message"],
            state="open",
            raised_at=event.recorded_at,
        )
        self.warnings[w.id] = w
        self.open_warning_by_subject[(w.code, w.subject)] = w.id
        self.changes.warnings.add(w.id)
        if data.get("reservation_id"):
            self.reservations[data["reservation_id"]].warning_id = w.id
            self.changes.reservations.add(data["reservation_id"])

    def _on_WarningResolved(self, event: Event, data: dict[str, Any]) -> None:
        w = self.warnings[data["warning_id"]]
        w.state = "resolved"
        w.resolved_at = event.recorded_at
        self.open_warning_by_subject[(w.code, w.subject)] = None
        self.changes.warnings.add(w.id)

    def _touch(self, reservation_id: str, event: Event, state: str) -> Reservation:
        r = self.reservations[reservation_id]
        r.state = state
        r.position = event.position
        r.hash = event.hash
        self.changes.reservations.add(r.id)
        return r

    def _pool_change(self, key: tuple[str, str], number: int, *, added: bool) -> None:
        item = (*key, number)
        mine, other = (
            (self.changes.pool_added, self.changes.pool_removed)
            if added
            else (self.changes.pool_removed, self.changes.pool_added)
        )
        if item in other:
            other.discard(item)  # released and reused within one batch: the table never sees it
        else:
            mine.add(item)
