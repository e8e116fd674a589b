"""The shapes of the API's success answers, for the OpenAPI document.

The handlers build their answers as plain dicts (coordinator.ledger.decide and queries);
these models only describe them, and the fuzzing test (tests/e2e/test_fuzz_openapi.py) checks
every real answer against them.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel

from coordinator.ledger.numbering import SeriesSettings

Doctype = Literal["invoice", "creditnote"]
ReservationState = Literal["reserved", "issued", "released", "void"]


class Receipt(BaseModel):
    """Where the answer's event stands in the hash chain."""

    position: int
    hash: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    reason: str | None = None  # why the ledger cannot be written (503)
    ledger: Receipt | None = None
    chain: dict[str, Any] | None = None


class Reservation(BaseModel):
    reservation_id: str
    peer_id: str
    doctype: Doctype
    doc_id: str
    series: str
    period: str
    number: int
    formatted: str
    date: date
    state: ReservationState
    receipt: Receipt


class ListedReservation(Reservation):
    store: str | None
    reserved_at: str


class ReservationItem(Reservation):
    """One item of a batch, written: its status as the single request would have had."""

    status: Literal[200, 201]


class Refusal(BaseModel):
    code: str
    message: str


class RefusedItem(BaseModel):
    """One item of a batch, not written (the rest of the batch is not affected)."""

    status: int
    error: Refusal


class ReservationResults(BaseModel):
    """One result per item, in the order of the request."""

    results: list[ReservationItem | RefusedItem]


class Reservations(BaseModel):
    reservations: list[ListedReservation]


class Period(BaseModel):
    period: str
    next: int
    highest: int | None
    released: list[int]


class SeriesOverview(BaseModel):
    name: str
    settings: SeriesSettings
    counter: str
    periods: list[Period]


class SeriesList(BaseModel):
    series: list[SeriesOverview]


class NextNumber(BaseModel):
    period: str
    number: int


class SeriesChanged(BaseModel):
    series: str
    settings: SeriesSettings
    next: NextNumber | None


class DocumentUpdated(BaseModel):
    doctype: Doctype
    doc_id: str
    formatted: str
    changed: bool
    position: int


class Collision(BaseModel):
    doctype: Doctype
    doc_id: str
    formatted: str
    reason: str


class Imported(BaseModel):
    imported: int
    already_imported: int
    collisions: list[Collision]


class PeerRegistered(BaseModel):
    peer_id: str
    name: str
    url: str
    token: str


class TokenRotated(BaseModel):
    peer_id: str
    token: str


class PeerRetired(BaseModel):
    peer_id: str
    state: Literal["retired"]


class Peer(BaseModel):
    peer_id: str
    name: str
    url: str
    state: str
    agent_version: str | None
    reported_settings: dict[str, Any] | None
    last_heartbeat_at: str | None


class Peers(BaseModel):
    peers: list[Peer]


class HeartbeatAnswer(BaseModel):
    settings: dict[str, SeriesSettings]


class RaisedWarning(BaseModel):
    warning_id: str
    code: str
    subject: str
    message: str
    state: Literal["open", "resolved"]
    raised_at: str
    resolved_at: str | None


class Warnings(BaseModel):
    warnings: list[RaisedWarning]


class WarningResolved(BaseModel):
    warning_id: str
    state: Literal["open", "resolved"]


class Event(BaseModel):
    position: int
    event_id: str
    type: str
    stream: str
    data: Any
    recorded_at: str
    prev_hash: str
    hash: str


class Events(BaseModel):
    events: list[Event]
