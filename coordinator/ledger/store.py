"""The PostgreSQL side of the ledger (the recorder): open a batch, write a batch.

Locking: every batch holds the ledger's advisory lock (``advisory_locks.LEDGER``) from before
it reads the head (inside ``concord_open_batch``, migrations/functions/) until after its
``concord_write_batch`` statement committed. Appends are therefore serialised across all
coordinator processes, a position is assigned only while its predecessor is committed, and
a reader selecting ``position > cursor`` never sees a later position commit before an
earlier one. The lock is session-level so that a batch needs no BEGIN and no COMMIT round
trip: the writer releases it (``release_ledger``) when it has had nothing more to write for
``writer.LOCK_LINGER`` (2 ms), or hands it over to a waiting replica at its next
``open_batch``.

``read_batch`` reads what a batch names without the lock, on another connection: the writer
calls it only while it holds the lock (the batch before being written), and keeps its own
state of the rows that batch changed over what the read returns (``load_read_ahead``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from coordinator.advisory_locks import LEDGER
from coordinator.events.canonical import GENESIS_HASH, canonical_json, format_recorded_at
from coordinator.ledger import commands as c
from coordinator.ledger.numbering import ALL_TIME, SeriesSettings, number_of
from coordinator.ledger.state import (
    Counter,
    Document,
    Event,
    LedgerState,
    Peer,
    Reservation,
    Warning_,
)


async def head(conn: asyncpg.Connection) -> tuple[int, bytes]:
    row = await conn.fetchrow("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
    return (0, GENESIS_HASH) if row is None else (row["position"], bytes(row["hash"]))


@dataclass
class OpenedBatch:
    """What ``concord_open_batch`` returned, parsed."""

    position: int
    hash: bytes
    known: dict[str, Event]  # events already in the ledger with the batch's event ids
    small: dict[str, Any] | None  # series, counters, pool, peers: when another process wrote


def _bytea(text: str | None) -> bytes:
    return bytes.fromhex(text[2:]) if text else b""  # jsonb renders bytea as "\\x…"


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def batch_request(commands: Sequence[c.Command], cached: int | None, state: LedgerState) -> dict[str, Any]:
    """Which rows the batch's commands will look at (pure).

    An import's text is read with the series formats and store names of ``state``: they
    may have changed by the time the batch is opened (``import_lookups`` tells).
    """
    req: dict[str, Any] = {
        "cached": cached,
        "event_ids": [],
        "reservation_ids": [],
        "reservation_keys": [],
        "numbers": [],
        "warning_ids": [],
        "warning_keys": [],
        "document_keys": [],
        "formatted": [],
        "external_keys": [],
        "external_numbers": [],
    }
    external_keys: set[tuple[str, str]] = set()
    for cmd in commands:
        if cmd.event_id:
            req["event_ids"].append(cmd.event_id)
        match cmd:
            case c.Reserve():
                req["reservation_keys"].append([cmd.peer_id, cmd.doctype, cmd.doc_id])
                # Every counter and period the reserve may draw from, whatever the settings.
                for series in {cmd.doctype, "invoice"}:
                    external_keys.update(((series, str(cmd.date.year)), (series, ALL_TIME)))
            case c.Confirm() | c.Release() | c.FlagPendingReservation():
                req["reservation_ids"].append(cmd.reservation_id)
            case c.Void():
                req["numbers"].append([cmd.series, cmd.period, cmd.number])
            case c.ResolveWarning():
                req["warning_ids"].append(cmd.warning_id)
            case c.RaiseWarning():
                req["warning_keys"].append([cmd.code, cmd.subject])
            case c.ReportPeerConfig():
                req["warning_keys"].append(["whmcs_sequential_numbering", cmd.peer_id])
                req["warning_keys"].append(["peer_silent", cmd.peer_id])
                req["warning_keys"].append(["settings_drift", cmd.peer_id])
            case c.UpdateDocument():
                req["document_keys"].append([cmd.peer_id, cmd.doctype, cmd.doc_id])
            case c.ImportDocuments():
                for d in cmd.documents:
                    req["document_keys"].append([cmd.peer_id, d.doctype, d.doc_id])
                    req["formatted"].append(d.formatted)
                    req["warning_keys"].append(["import_collision", f"{cmd.peer_id}/{d.doctype}/{d.doc_id}"])
    req["external_keys"] = sorted(external_keys)
    numbers = import_lookups(commands, state)
    req["numbers"] += numbers
    req["external_numbers"] = numbers
    return req


def import_lookups(commands: Sequence[c.Command], state: LedgerState) -> list[list[Any]]:
    """The counter numbers the batch's imports name, read with ``state``'s settings."""
    found = []
    for cmd in commands:
        if isinstance(cmd, c.ImportDocuments) and cmd.peer_id in state.peers:
            store = state.peers[cmd.peer_id].name
            for d in cmd.documents:
                taken = number_of(d.doctype, d.formatted, state.settings, store)
                if taken is not None:
                    found.append(list(taken))
    return found


async def open_batch(
    conn: asyncpg.Connection, state: LedgerState, req: dict[str, Any], *, holding: bool
) -> OpenedBatch:
    """Lock the ledger, read its head and load into ``state`` what ``req`` names: one round trip.

    ``holding``: this connection holds the lock from its previous batch, and first lets a
    waiting replica have it. The small tables come back, and replace the cached ones, only
    when the head moved since ``req["cached"]`` (another process wrote, or nothing is cached
    yet).
    """
    got = await conn.fetchval("SELECT concord_open_batch($1::jsonb, $2, $3)", req, holding, LEDGER)
    return load_opened(state, req, got)


def load_opened(state: LedgerState, req: dict[str, Any], got: dict[str, Any]) -> OpenedBatch:
    """Load into ``state`` what ``concord_open_batch`` returned for ``req``."""
    small = got.get("small")
    if small is not None:
        _load_small_tables(state, small)
    state.forget_per_batch()
    known = _load_rows(state, req, got, keep=False)
    head_hash = bytes.fromhex(got["hash"]) if got["hash"] else GENESIS_HASH
    return OpenedBatch(got["position"], head_hash, known, small)


async def read_batch(conn: asyncpg.Connection, req: dict[str, Any]) -> dict[str, Any]:
    """What ``req`` names, read without the ledger lock (``concord_read_batch``)."""
    got: dict[str, Any] = await conn.fetchval("SELECT concord_read_batch($1::jsonb)", req)
    return got


def load_read_ahead(state: LedgerState, req: dict[str, Any], got: dict[str, Any]) -> dict[str, Event]:
    """Load into ``state`` what ``read_batch`` returned, read while this process held the
    ledger lock and the batch before was still being written: that batch's rows may not
    have been committed yet, so every row ``state`` holds already (``state`` is the ledger
    as that batch leaves it) is kept over the one read. Returns the events found by the
    batch's event ids."""
    state.start_batch()
    return load_rows_read_ahead(state, req, got)


def load_rows_read_ahead(state: LedgerState, req: dict[str, Any], got: dict[str, Any]) -> dict[str, Event]:
    """``load_read_ahead`` for more commands of the same batch (its changes so far stay counted)."""
    return _load_rows(state, req, got, keep=True)


def _load_rows(
    state: LedgerState, req: dict[str, Any], got: dict[str, Any], *, keep: bool
) -> dict[str, Event]:
    """Load the rows of ``concord_read_batch``'s answer, then mark the keys ``req`` names that
    have none. ``keep``: a row ``state`` holds already stays as it is."""
    for row in got["reservations"]:
        if keep and row["id"] in state.reservations:
            continue
        state.remember_reservation(
            Reservation(
                id=row["id"],
                peer_id=row["peer_id"],
                doctype=row["doctype"],
                doc_id=row["doc_id"],
                series=row["series"],
                period=row["period"],
                number=row["number"],
                formatted=row["formatted"],
                doc_date=date.fromisoformat(row["doc_date"]),
                state=row["state"],
                reserved_at=_moment(row["reserved_at"]),  # type: ignore[arg-type]
                position=row["position"],
                hash=_bytea(row["hash"]),
                warning_id=row["warning_id"],
            )
        )
    for row in got["warnings"]:
        if keep and row["id"] in state.warnings:
            continue
        w = Warning_(
            id=row["id"],
            code=row["code"],
            subject=row["subject"],
            message=row["message"],
            state=row["state"],
            raised_at=_moment(row["raised_at"]),  # type: ignore[arg-type]
            resolved_at=_moment(row["resolved_at"]),
        )
        state.warnings[w.id] = w
        if w.state == "open":
            state.open_warning_by_subject.setdefault((w.code, w.subject), w.id)
    for row in got["documents"]:
        if keep and (row["peer_id"], row["doctype"], row["doc_id"]) in state.documents:
            continue
        state.remember_document(Document(**row))
    for series, period, number, formatted in got["external"]:
        # Imported numbers are never taken back: one read earlier holds the same ones.
        state.external.setdefault((series, period), {}).setdefault(number, formatted)
    # The keys without a row: none found (setdefault: the rows above, or kept ones, stay).
    for peer, doctype, doc_id in req["reservation_keys"]:
        state.active_by_key.setdefault((peer, doctype, doc_id), None)
    for series, period, number in req["numbers"]:
        state.active_by_number.setdefault((series, period, number), None)
    for code, subject in req["warning_keys"]:
        state.open_warning_by_subject.setdefault((code, subject), None)
    for peer, doctype, doc_id in req["document_keys"]:
        state.documents.setdefault((peer, doctype, doc_id), None)
    for text in req["formatted"]:
        state.document_by_formatted.setdefault(text, None)
    return {
        row["event_id"]: Event(
            position=row["position"],
            event_id=row["event_id"],
            type=row["type"],
            stream=row["stream"],
            data=row["data"],
            recorded_at=_moment(row["recorded_at"]),  # type: ignore[arg-type]
            prev_hash=_bytea(row["prev_hash"]),
            hash=_bytea(row["hash"]),
        )
        for row in got["events"]
    }


def _load_small_tables(state: LedgerState, small: dict[str, Any]) -> None:
    state.clear_small_tables()
    for name, settings in small["series"]:
        state.settings[name] = SeriesSettings.model_validate(settings)
    for series, period, next_number, highest in small["counters"]:
        state.counters[(series, period)] = Counter(next_number, highest)
    for series, period, number in small["pool"]:
        state.pool.setdefault((series, period), []).append(number)
    for peer_id, name, url, token, peer_state, version, reported in small["peers"]:
        state.peers[peer_id] = Peer(
            id=peer_id,
            name=name,
            url=url,
            token_sha256=token,
            state=peer_state,
            agent_version=version,
            reported=reported,
        )


def batch_writes(state: LedgerState, events: Sequence[Event]) -> bytes:
    """The events and changed projection rows of a batch, as concord_write_batch takes them.

    Projection timestamps go as orjson writes datetimes (RFC 3339, with their offset), much
    cheaper than strftime; an event's own timestamp goes in its one hashed form. Bytes go
    as hex.
    """
    ch = state.changes
    reservations = state.reservations
    return orjson.dumps(
        {
            "events": [
                {
                    "position": e.position,
                    "event_id": e.event_id,
                    "type": e.type,
                    "stream": e.stream,
                    "data": orjson.Fragment(e.data_json or canonical_json(e.data)),
                    "recorded_at": format_recorded_at(e.recorded_at),
                    "prev_hash": e.prev_hash.hex(),
                    "hash": e.hash.hex(),
                }
                for e in events
            ],
            "series": [{"name": n, "settings": state.settings[n].model_dump()} for n in ch.series],
            "counters": [
                {
                    "series": s,
                    "period": p,
                    "next": state.counters[(s, p)].next,
                    "highest": state.counters[(s, p)].highest,
                }
                for s, p in ch.counters
            ],
            "pool_removed": [list(k) for k in ch.pool_removed],
            "pool_added": [list(k) for k in ch.pool_added],
            "reservations_updated": [
                {
                    "id": r.id,
                    "state": r.state,
                    "position": r.position,
                    "hash": r.hash.hex(),
                    "warning_id": r.warning_id,
                }
                for r in (reservations[i] for i in ch.reservations - ch.new_reservations)
            ],
            # Every field of a new reservation is a column: orjson writes the dataclass itself.
            "reservations_created": [reservations[i] for i in ch.new_reservations],
            "documents": [
                {
                    "peer_id": d.peer_id,
                    "doctype": d.doctype,
                    "doc_id": d.doc_id,
                    "reservation_id": d.reservation_id,
                    "series": d.series,
                    "period": d.period,
                    "number": d.number,
                    "formatted": d.formatted,
                    "voided": d.voided,
                    "imported": d.imported,
                    "position": d.position,
                }  # snapshot: from the ledger
                for d in (state.documents[k] for k in ch.documents)
                if d is not None
            ],
            "voided": list(ch.voided_documents),
            "external_added": [list(k) for k in ch.external_added],
            "peers": [
                {
                    "id": p.id,
                    "name": p.name,
                    "url": p.url,
                    "token_sha256": p.token_sha256,
                    "state": p.state,
                    "agent_version": p.agent_version,
                    "reported": p.reported,
                }
                for p in (state.peers[i] for i in ch.peers)
            ],
            "warnings": [
                {
                    "id": w.id,
                    "code": w.code,
                    "subject": w.subject,
                    "message": w.message,
                    "state": w.state,
                    "raised_at": w.raised_at,
                    "resolved_at": w.resolved_at,
                }
                for w in (state.warnings[i] for i in ch.warnings)
            ],
        },
        default=_hex,
    )


def _hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not a batch value")


async def write_batch(conn: asyncpg.Connection, writes: bytes) -> None:
    """Append the events and flush the changed projection rows (``batch_writes``): one round
    trip, one statement outside any transaction block, so it commits (durably) before it
    returns."""
    await conn.execute("SELECT concord_write_batch($1::text::jsonb)", writes.decode())


async def release_ledger(conn: asyncpg.Connection) -> None:
    """Give up the ledger lock. ``unlock_all``, because a failed statement leaves unknown
    whether (and how often) it took the session-level lock; the writer's connection holds no
    other advisory lock."""
    await conn.execute("SELECT pg_advisory_unlock_all()")
