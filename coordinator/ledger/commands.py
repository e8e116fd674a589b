"""What callers ask the ledger to do, and the domain error they may get back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any


class Refusal(StrEnum):
    """Why a command was refused, in the domain's terms; the HTTP layer answers each with a
    status of its own (coordinator/http/errors.py)."""

    INVALID = "invalid"  # its values break a rule
    FORBIDDEN = "forbidden"  # not the caller's to do
    NOT_FOUND = "not_found"  # it names something the ledger does not hold
    CONFLICT = "conflict"  # the ledger's state does not allow it


class DomainError(Exception):
    """A refused command. Nothing was written. ``code`` names the rule for the client."""

    def __init__(self, refusal: Refusal, code: str, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Command:
    event_id: str | None = field(default=None, kw_only=True)  # client-chosen: retries are idempotent


@dataclass(frozen=True)
class Reserve(Command):
    peer_id: str
    doctype: str
    doc_id: str
    date: date


@dataclass(frozen=True)
class Confirm(Command):
    reservation_id: str
    peer_id: str
    document: dict[str, Any]


@dataclass(frozen=True)
class Release(Command):
    reservation_id: str
    peer_id: str | None  # None: an operator
    reason: str


@dataclass(frozen=True)
class Void(Command):
    series: str
    period: str
    number: int
    reason: str


@dataclass(frozen=True)
class ConfigureSeries(Command):
    series: str
    changes: dict[str, Any]
    next: int | None
    period: str | None
    today: date


@dataclass(frozen=True)
class RegisterPeer(Command):
    name: str
    url: str
    token_sha256: str


@dataclass(frozen=True)
class RotatePeerToken(Command):
    peer_id: str
    token_sha256: str


@dataclass(frozen=True)
class RetirePeer(Command):
    peer_id: str


@dataclass(frozen=True)
class ReportPeerConfig(Command):
    peer_id: str
    agent_version: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class FlagPendingReservation(Command):
    reservation_id: str
    minutes: int


@dataclass(frozen=True)
class ResolveWarning(Command):
    warning_id: str
    by: str


@dataclass(frozen=True)
class UpdateDocument(Command):
    peer_id: str
    doctype: str
    doc_id: str
    document: dict[str, Any]


@dataclass(frozen=True)
class ImportedDocument:
    doctype: str
    doc_id: str
    formatted: str
    document: dict[str, Any]


@dataclass(frozen=True)
class ImportDocuments(Command):
    peer_id: str
    documents: tuple[ImportedDocument, ...]


@dataclass(frozen=True)
class RaiseWarning(Command):
    code: str
    subject: str
    message: str
