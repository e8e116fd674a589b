"""The data of the events the numbering checks read, as typed records. Pure.

msgspec decodes an event straight into these records: every field a check relies on is
validated in C (a missing or mistyped one is a clear error naming it), and everything else —
above all the document snapshot — is skipped without being built. Records are immutable and
not tracked by the garbage collector: an audit creates a million of them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from coordinator.events import catalogue as ev


# Each record repeats frozen=True: msgspec would inherit it, but type checkers read only the
# class's own arguments (gc=False is inherited and means nothing to them).
class _Record(msgspec.Struct, frozen=True, gc=False):
    pass


class Settings(_Record, frozen=True):
    start: int
    increment: int


class NextNumber(_Record, frozen=True):
    period: str
    number: int


class SeriesConfigured(_Record, frozen=True):
    series: str
    settings: Settings
    next: NextNumber | None = None


class NumberReserved(_Record, frozen=True):
    reservation_id: str
    peer_id: str
    doctype: str
    doc_id: str
    series: str
    period: str
    number: int
    from_pool: bool
    next: int


class ReservationEnded(_Record, frozen=True):
    """``NumberIssued`` and ``NumberReleased``: which reservation, and the number it held."""

    reservation_id: str
    series: str
    period: str
    number: int


class NumberVoided(ReservationEnded, frozen=True):
    was: str  # "reserved" or "issued"


class ImportedNumber(_Record, frozen=True):
    series: str
    period: str
    number: int


class DocumentImported(_Record, frozen=True):
    peer_id: str
    doctype: str
    doc_id: str
    number: ImportedNumber | None = None  # None: the text does not follow the series' format


class ExternalNumberDetected(_Record, frozen=True):
    series: str
    period: str
    first: int
    last: int
    next: int
    from_pool: bool


DATA_OF: dict[str, type[_Record]] = {
    ev.SERIES_CONFIGURED: SeriesConfigured,
    ev.NUMBER_RESERVED: NumberReserved,
    ev.NUMBER_ISSUED: ReservationEnded,
    ev.NUMBER_RELEASED: ReservationEnded,
    ev.NUMBER_VOIDED: NumberVoided,
    ev.DOCUMENT_IMPORTED: DocumentImported,
    ev.EXTERNAL_NUMBER_DETECTED: ExternalNumberDetected,
}

RecordError = msgspec.ValidationError


def record(type_: str, data: Any) -> Any:
    """The record of already parsed data (a dict from the database); RecordError names what
    is missing or mistyped."""
    return msgspec.convert(data, DATA_OF[type_])


# -- events as exported: ``{"data":…,"event_id":…,"position":…,…,"type":…}`` ----------------


class Event(msgspec.Struct, gc=False):
    """What every event has that the checks read: its position (and a type, checked by each
    decoder)."""

    position: int


def _event_decoder(type_: str) -> msgspec.json.Decoder[Any]:
    """The decoder of an event of ``type_``, its data as a record. A tagged struct: an event of
    another type fails to decode instead of passing for one."""
    event = msgspec.defstruct(
        type_, [("data", DATA_OF[type_])], bases=(Event,), gc=False, tag_field="type", tag=type_
    )
    return msgspec.json.Decoder(event)


EVENT_DECODERS = {type_: _event_decoder(type_) for type_ in DATA_OF}
ANY_EVENT = msgspec.json.Decoder(Event)  # any event's position
DecodeError = msgspec.DecodeError  # ValidationError is one too
