"""The numbering decisions: given the loaded state and a command, which events happen. Pure.

``emit`` appends an event to the batch and applies it to the state at once, so a later
command of the same batch sees its effect (a number released and reused in one batch). New
ids (reservations, stores, warnings) come from ``emit.new_id()`` too: random in the writer,
counted in tests, so a decision is a function of its inputs alone.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from coordinator.events import catalogue as ev
from coordinator.ledger import commands as c
from coordinator.ledger.commands import DomainError, Refusal
from coordinator.ledger.numbering import (
    ALL_TIME,
    SERIES_NAMES,
    SeriesSettings,
    allocate,
    counter_series,
    number_of,
    period_of,
    render,
)
from coordinator.ledger.state import Document, Event, LedgerState, Reservation


class Emit(Protocol):
    def __call__(self, type_: str, stream: str, data: dict[str, Any], /) -> Event: ...

    def new_id(self) -> str: ...


def receipt(position: int, hash_: bytes) -> dict[str, Any]:
    return {"position": position, "hash": hash_.hex()}


def reservation_view(r: Reservation) -> dict[str, Any]:
    return {
        "reservation_id": r.id,
        "peer_id": r.peer_id,
        "doctype": r.doctype,
        "doc_id": r.doc_id,
        "series": r.series,
        "period": r.period,
        "number": r.number,
        "formatted": r.formatted,
        "date": r.doc_date.isoformat(),
        "state": r.state,
        "receipt": receipt(r.position, r.hash),
    }


def _owned(state: LedgerState, reservation_id: str, peer_id: str | None) -> Reservation:
    r = state.reservations.get(reservation_id)
    if r is None:
        raise DomainError(Refusal.NOT_FOUND, "reservation_not_found", f"no reservation {reservation_id}")
    if peer_id is not None and r.peer_id != peer_id:
        raise DomainError(
            Refusal.FORBIDDEN,
            "not_your_reservation",
            f"reservation {reservation_id} belongs to another store",
        )
    return r


def reserve(state: LedgerState, cmd: c.Reserve, emit: Emit) -> dict[str, Any]:
    peer = state.peers.get(cmd.peer_id)
    if peer is None or peer.state != "active":
        raise DomainError(
            Refusal.FORBIDDEN, "peer_retired", "this store is retired and cannot reserve numbers"
        )
    existing = state.active_reservation(cmd.peer_id, cmd.doctype, cmd.doc_id)
    if existing is not None:
        return {**reservation_view(existing), "created": False}
    series = counter_series(cmd.doctype, state.settings)
    settings = state.settings[series]
    period = period_of(settings, cmd.date)
    counter = state.counter(series, period)
    number, next_number, from_pool = allocate(
        counter.next, settings.increment, state.released(series, period)
    )
    reservation_id = emit.new_id()
    if not from_pool and state.imported_number(series, period, number) is not None:
        number = _skip_imported(state, cmd, reservation_id, series, period, number, settings.increment, emit)
        next_number = number + settings.increment
    formatted = render(state.settings[cmd.doctype].format, number, cmd.date, peer.name)
    emit(
        ev.NUMBER_RESERVED,
        f"reservation-{reservation_id}",
        {
            "reservation_id": reservation_id,
            "peer_id": cmd.peer_id,
            "doctype": cmd.doctype,
            "doc_id": cmd.doc_id,
            "date": cmd.date.isoformat(),
            "series": series,
            "period": period,
            "number": number,
            "formatted": formatted,
            "from_pool": from_pool,
            "next": next_number,
        },
    )
    return {**reservation_view(state.reservations[reservation_id]), "created": True}


def _skip_imported(
    state: LedgerState,
    cmd: c.Reserve,
    reservation_id: str,
    series: str,
    period: str,
    first: int,
    increment: int,
    emit: Emit,
) -> int:
    """Move the counter past the run of numbers from ``first`` that imported documents
    carry, recording the run (so an audit counts them as taken, not as a hole); the number
    after the run."""
    last = first
    while state.imported_number(series, period, last + increment) is not None:
        last += increment
    emit(
        ev.EXTERNAL_NUMBER_DETECTED,
        f"counter-{series}-{period}",
        {
            "series": series,
            "period": period,
            "first": first,
            "last": last,
            "next": last + increment,
            "from_pool": False,
            "peer_id": cmd.peer_id,
            "doctype": cmd.doctype,
            "doc_id": cmd.doc_id,
            "reservation_id": reservation_id,
        },
    )
    return last + increment


def confirm(state: LedgerState, cmd: c.Confirm, emit: Emit) -> dict[str, Any]:
    r = _owned(state, cmd.reservation_id, cmd.peer_id)
    if r.state == "issued":
        # A store that crashed before it saw the acknowledgement confirms again, perhaps
        # with the document changed meanwhile: the ledger keeps the newer snapshot.
        doc = state.document(r.peer_id, r.doctype, r.doc_id)
        if doc is not None and doc.snapshot != cmd.document:
            _record_update(doc, cmd.document, emit)
        return reservation_view(r)
    if r.state != "reserved":
        raise DomainError(
            Refusal.CONFLICT,
            f"reservation_{r.state}",
            f"reservation {r.id} is {r.state} and can no longer be confirmed",
        )
    emit(
        ev.NUMBER_ISSUED,
        f"reservation-{r.id}",
        {
            "reservation_id": r.id,
            "peer_id": r.peer_id,
            "doctype": r.doctype,
            "doc_id": r.doc_id,
            "series": r.series,
            "period": r.period,
            "number": r.number,
            "formatted": r.formatted,
            "document": cmd.document,
        },
    )
    _clear_pending_warning(state, r, emit, "reservation confirmed")
    return reservation_view(r)


def release(state: LedgerState, cmd: c.Release, emit: Emit) -> dict[str, Any]:
    r = _owned(state, cmd.reservation_id, cmd.peer_id)
    if r.state == "released":
        return reservation_view(r)
    if r.state != "reserved":
        hint = "; void the number instead" if r.state == "issued" else ""
        raise DomainError(
            Refusal.CONFLICT,
            f"reservation_{r.state}",
            f"reservation {r.id} is {r.state}: only a pending reservation can be released{hint}",
        )
    emit(
        ev.NUMBER_RELEASED,
        f"reservation-{r.id}",
        {
            "reservation_id": r.id,
            "series": r.series,
            "period": r.period,
            "number": r.number,
            "reason": cmd.reason,
            "by": cmd.peer_id or "operator",
        },
    )
    _clear_pending_warning(state, r, emit, "reservation released")
    return reservation_view(r)


def void(state: LedgerState, cmd: c.Void, emit: Emit) -> dict[str, Any]:
    r = state.reservation_holding(cmd.series, cmd.period, cmd.number)
    if r is None:
        if cmd.number in state.released(cmd.series, cmd.period):
            raise DomainError(
                Refusal.CONFLICT,
                "number_released",
                f"{cmd.series} {cmd.period} number {cmd.number} was released and "
                "will be handed out again; there is nothing to void",
            )
        raise DomainError(
            Refusal.NOT_FOUND,
            "number_not_found",
            f"{cmd.series} {cmd.period} number {cmd.number} was never handed out",
        )
    if r.state == "void":
        return reservation_view(r)
    was = r.state
    emit(
        ev.NUMBER_VOIDED,
        f"reservation-{r.id}",
        {
            "reservation_id": r.id,
            "series": r.series,
            "period": r.period,
            "number": r.number,
            "reason": cmd.reason,
            "was": was,
        },
    )
    _clear_pending_warning(state, r, emit, "number voided")
    return reservation_view(r)


def configure_series(state: LedgerState, cmd: c.ConfigureSeries, emit: Emit) -> dict[str, Any]:
    if cmd.series not in SERIES_NAMES:
        raise DomainError(
            Refusal.NOT_FOUND,
            "series_not_found",
            f"no series {cmd.series!r}; the series are {', '.join(SERIES_NAMES)}",
        )
    current = state.settings[cmd.series]
    try:
        settings = SeriesSettings.model_validate({**current.model_dump(), **cmd.changes})
    except ValidationError as exc:
        raise DomainError(Refusal.INVALID, "invalid_settings", _first_error(exc)) from None
    if cmd.series == "invoice" and "dedicated" in cmd.changes:
        raise DomainError(
            Refusal.INVALID, "invalid_settings", "'dedicated' is a setting of the creditnote series only"
        )
    _refuse_changes_that_repeat_numbers(state, cmd.series, current, settings)
    next_change = None
    if cmd.next is not None:
        next_change = _next_change(state, cmd, settings, cmd.next)
    emit(
        ev.SERIES_CONFIGURED,
        f"series-{cmd.series}",
        {
            "series": cmd.series,
            "settings": settings.model_dump(),
            "next": next_change,
        },
    )
    return {"series": cmd.series, "settings": settings.model_dump(), "next": next_change}


def _handed_out(state: LedgerState, series: str) -> bool:
    return any(c.highest is not None for (s, _), c in state.counters.items() if s == series)


def _refuse_changes_that_repeat_numbers(
    state: LedgerState, name: str, current: SeriesSettings, settings: SeriesSettings
) -> None:
    """Settings under which a number already issued would be issued again are refused."""
    if settings.reset != current.reset and _handed_out(state, name):
        raise DomainError(
            Refusal.CONFLICT,
            "series_in_use",
            f"series {name} has handed out numbers: changing 'reset' would start "
            "new periods at numbers already issued",
        )
    if settings.dedicated != current.dedicated and (
        _handed_out(state, "invoice") or _handed_out(state, "creditnote")
    ):
        raise DomainError(
            Refusal.CONFLICT,
            "series_in_use",
            "numbers have been handed out: changing 'dedicated' would make credit "
            "notes repeat numbers of the counter they leave or join",
        )
    after = {**state.settings, name: settings}
    invoice, creditnote = after["invoice"], after["creditnote"]
    if (
        not creditnote.dedicated
        and invoice.reset == "yearly"
        and "{YEAR}" not in creditnote.format
        and "{YY}" not in creditnote.format
    ):
        raise DomainError(
            Refusal.INVALID,
            "invalid_settings",
            "credit notes draw from the yearly invoice counter: their format needs "
            "{YEAR} or {YY}, otherwise their numbers would repeat across years",
        )


def _next_change(
    state: LedgerState, cmd: c.ConfigureSeries, settings: SeriesSettings, number: int
) -> dict[str, Any]:
    """The counter change for ``number``, the command's 'next' (given)."""
    if cmd.series == "creditnote" and not settings.dedicated:
        raise DomainError(
            Refusal.CONFLICT,
            "shared_counter",
            "credit notes draw from the invoice counter; set 'next' on the invoice series",
        )
    period = cmd.period or period_of(settings, cmd.today)
    if settings.reset == "never" and period != "all":
        raise DomainError(
            Refusal.INVALID, "invalid_period", f"series {cmd.series} never resets: its only period is 'all'"
        )
    if settings.reset == "yearly" and not (period.isdigit() and len(period) == 4):
        raise DomainError(Refusal.INVALID, "invalid_period", f"period {period!r} is not a year like 2026")
    if number < 0:
        raise DomainError(Refusal.INVALID, "invalid_settings", "'next' must be 0 or more")
    highest = state.counter(cmd.series, period).highest
    if highest is not None and number <= highest:
        raise DomainError(
            Refusal.CONFLICT,
            "next_below_issued",
            f"'next' {number} is not above {highest}, the highest number "
            f"already handed out in {cmd.series} {period}",
        )
    return {"period": period, "number": number}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def register_peer(state: LedgerState, cmd: c.RegisterPeer, emit: Emit) -> dict[str, Any]:
    if state.peer_by_name(cmd.name) is not None:
        raise DomainError(
            Refusal.CONFLICT,
            "peer_exists",
            f"a store named {cmd.name!r} exists already; names are never reused "
            "(if an earlier registration of it got no answer, it was written: "
            "rotate the store's token to get one)",
        )
    peer_id = emit.new_id()
    emit(
        ev.PEER_REGISTERED,
        f"peer-{peer_id}",
        {
            "peer_id": peer_id,
            "name": cmd.name,
            "url": cmd.url,
            "token_sha256": cmd.token_sha256,
        },
    )
    return {"peer_id": peer_id, "name": cmd.name, "url": cmd.url}


def _active_peer(state: LedgerState, peer_id: str) -> None:
    peer = state.peers.get(peer_id)
    if peer is None:
        raise DomainError(Refusal.NOT_FOUND, "peer_not_found", f"no store {peer_id}")
    if peer.state != "active":
        raise DomainError(Refusal.CONFLICT, "peer_retired", f"store {peer.name} is retired")


def rotate_peer_token(state: LedgerState, cmd: c.RotatePeerToken, emit: Emit) -> dict[str, Any]:
    _active_peer(state, cmd.peer_id)
    emit(
        ev.PEER_TOKEN_ROTATED,
        f"peer-{cmd.peer_id}",
        {"peer_id": cmd.peer_id, "token_sha256": cmd.token_sha256},
    )
    return {"peer_id": cmd.peer_id}


def retire_peer(state: LedgerState, cmd: c.RetirePeer, emit: Emit) -> dict[str, Any]:
    peer = state.peers.get(cmd.peer_id)
    if peer is None:
        raise DomainError(Refusal.NOT_FOUND, "peer_not_found", f"no store {cmd.peer_id}")
    if peer.state == "active":
        emit(ev.PEER_RETIRED, f"peer-{cmd.peer_id}", {"peer_id": cmd.peer_id})
    return {"peer_id": cmd.peer_id, "state": "retired"}


SEQUENTIAL_ON = ("on", "1", "true", "yes")


def report_peer_config(state: LedgerState, cmd: c.ReportPeerConfig, emit: Emit) -> dict[str, Any]:
    peer = state.peers[cmd.peer_id]
    if (peer.agent_version, peer.reported) != (cmd.agent_version, cmd.settings):
        emit(
            ev.PEER_CONFIG_REPORTED,
            f"peer-{cmd.peer_id}",
            {
                "peer_id": cmd.peer_id,
                "agent_version": cmd.agent_version,
                "settings": cmd.settings,
            },
        )
    own = [
        name
        for name in ("SequentialInvoiceNumbering", "TaxCustomInvoiceNumbering")
        if str(cmd.settings.get(name, "")).strip().lower() in SEQUENTIAL_ON
    ]
    _keep_warning(
        state,
        emit,
        "whmcs_sequential_numbering",
        cmd.peer_id,
        bool(own),
        f"store {peer.name}: WHMCS numbers invoices itself ({', '.join(own)} on); it has no "
        "lock and races with Concord. Switch it off in Setup > General Settings > Invoices.",
    )
    _keep_warning(state, emit, "peer_silent", cmd.peer_id, False, "")
    _warn_credit_note_rule_drift(state, cmd, emit)
    return {"settings": {name: s.model_dump() for name, s in state.settings.items()}}


CREDIT_NOTE_RULE = "credit_note_rule"  # as the agent reports it (CONCORD_AGENT_CREDIT_NOTE_RULE)
DEFAULT_CREDIT_NOTE_RULE = "negative_total"


def _warn_credit_note_rule_drift(state: LedgerState, cmd: c.ReportPeerConfig, emit: Emit) -> None:
    """Which documents are credit notes must be decided alike by every store: warn a store
    whose rule is not the one most stores report (on a tie, the default wins)."""
    rule = cmd.settings.get(CREDIT_NOTE_RULE)
    others = [
        p.reported[CREDIT_NOTE_RULE]
        for p in state.peers.values()
        if p.id != cmd.peer_id
        and p.state == "active"
        and p.reported
        and p.reported.get(CREDIT_NOTE_RULE) is not None
    ]
    usual = rule
    if rule is not None and others:
        counts = collections.Counter([*others, rule])
        top = max(counts.values())
        usual = (
            DEFAULT_CREDIT_NOTE_RULE
            if counts[DEFAULT_CREDIT_NOTE_RULE] == top
            else min(r for r, n in counts.items() if n == top)
        )
    _keep_warning(
        state,
        emit,
        "settings_drift",
        cmd.peer_id,
        rule != usual,
        f"store {state.peers[cmd.peer_id].name} decides which documents are credit notes by "
        f"rule {rule!r} while the other stores use {usual!r}: one WHMCS document would be "
        "numbered in another series depending on its store. Set the same "
        "CONCORD_AGENT_CREDIT_NOTE_RULE on every agent.",
    )


def raise_warning(state: LedgerState, cmd: c.RaiseWarning, emit: Emit) -> dict[str, Any]:
    _keep_warning(state, emit, cmd.code, cmd.subject, True, cmd.message)
    return {}


def _keep_warning(
    state: LedgerState, emit: Emit, code: str, subject: str, active: bool, message: str
) -> None:
    """Open the warning (code, subject) while ``active`` holds; resolve it once it does not."""
    open_ = state.open_warning(code, subject)
    if active and open_ is None:
        emit(
            ev.WARNING_RAISED,
            f"warning-{subject}",
            {"warning_id": emit.new_id(), "code": code, "subject": subject, "message": message},
        )
    elif not active and open_ is not None:
        emit(ev.WARNING_RESOLVED, f"warning-{subject}", {"warning_id": open_.id, "by": "fixed"})


def update_document(state: LedgerState, cmd: c.UpdateDocument, emit: Emit) -> dict[str, Any]:
    doc = state.document(cmd.peer_id, cmd.doctype, cmd.doc_id)
    if doc is None:
        raise DomainError(
            Refusal.NOT_FOUND,
            "document_not_found",
            f"{cmd.doctype} {cmd.doc_id} of this store was neither issued through Concord nor imported",
        )
    changed = doc.snapshot != cmd.document
    if changed:
        _record_update(doc, cmd.document, emit)
    return {
        "doctype": doc.doctype,
        "doc_id": doc.doc_id,
        "formatted": doc.formatted,
        "changed": changed,
        "position": doc.position,
    }


def _record_update(doc: Document, document: dict[str, Any], emit: Emit) -> None:
    emit(
        ev.DOCUMENT_UPDATED,
        f"document-{doc.peer_id}-{doc.doctype}-{doc.doc_id}",
        {
            "peer_id": doc.peer_id,
            "doctype": doc.doctype,
            "doc_id": doc.doc_id,
            "document": document,
        },
    )


def import_documents(state: LedgerState, cmd: c.ImportDocuments, emit: Emit) -> dict[str, Any]:
    """Documents numbered before Concord. A number the ledger knows already is never imported
    twice: it raises a warning for a human instead.

    A text that follows its series' format names a counter number: one Concord handed out
    (even if only reserved) is a collision; one released is taken out of the pool; one the
    counter has yet to reach is recorded, and a reserve skips it (``_skip_imported``).
    """
    imported, already, collisions = 0, 0, []
    peer_name = state.peers[cmd.peer_id].name
    for d in cmd.documents:
        key = (cmd.peer_id, d.doctype, d.doc_id)
        own = state.document(*key)
        holder = state.document_numbered(d.formatted)
        if own is not None and own.formatted == d.formatted:
            already += 1
            continue
        taken = number_of(d.doctype, d.formatted, state.settings, peer_name)
        if own is not None:
            clash = f"it already carries {own.formatted}"
        elif holder is not None:
            clash = f"{d.formatted} belongs to {holder[1]} {holder[2]} of store {state.peers[holder[0]].name}"
        elif taken is not None:
            clash = _number_clash(state, d.formatted, *taken)
        else:
            clash = ""
        if clash:
            subject = f"{cmd.peer_id}/{d.doctype}/{d.doc_id}"
            _keep_warning(
                state,
                emit,
                "import_collision",
                subject,
                True,
                f"{d.doctype} {d.doc_id} of store {state.peers[cmd.peer_id].name} "
                f"was not imported with number {d.formatted}: {clash}",
            )
            collisions.append(
                {"doctype": d.doctype, "doc_id": d.doc_id, "formatted": d.formatted, "reason": clash}
            )
            continue
        data: dict[str, Any] = {
            "peer_id": cmd.peer_id,
            "doctype": d.doctype,
            "doc_id": d.doc_id,
            "formatted": d.formatted,
            "document": d.document,
        }
        if taken is not None:
            series, period, number = taken
            if number in state.released(series, period):
                emit(
                    ev.EXTERNAL_NUMBER_DETECTED,
                    f"counter-{series}-{period}",
                    {
                        "series": series,
                        "period": period,
                        "first": number,
                        "last": number,
                        "next": state.counter(series, period).next,
                        "from_pool": True,
                        "peer_id": cmd.peer_id,
                        "doctype": d.doctype,
                        "doc_id": d.doc_id,
                    },
                )
            data["number"] = {"series": series, "period": period, "number": number}
        emit(ev.DOCUMENT_IMPORTED, f"document-{cmd.peer_id}-{d.doctype}-{d.doc_id}", data)
        imported += 1
    return {"imported": imported, "already_imported": already, "collisions": collisions}


def _number_clash(state: LedgerState, formatted: str, series: str, period: str, number: int) -> str:
    """Why an imported text naming this counter number cannot be imported; "" if it can."""
    where = f"number {number} of the {series} counter" + (f" ({period})" if period != ALL_TIME else "")
    r = state.reservation_holding(series, period, number)
    if r is not None:
        return (
            f"{formatted} is {where}, which Concord handed out as {r.formatted} "
            f"({r.state}) to {r.doctype} {r.doc_id} of store {state.peers[r.peer_id].name}"
        )
    other = state.imported_number(series, period, number)
    if other is not None:
        return f"{formatted} is {where}, which the imported {other} carries already"
    return ""


def flag_pending(state: LedgerState, cmd: c.FlagPendingReservation, emit: Emit) -> dict[str, Any]:
    r = state.reservations.get(cmd.reservation_id)
    if r is None or r.state != "reserved" or r.warning_id is not None:
        return {}
    emit(
        ev.WARNING_RAISED,
        f"warning-{r.id}",
        {
            "warning_id": emit.new_id(),
            "code": "reservation_pending",
            "subject": r.id,
            "reservation_id": r.id,
            "message": f"{r.formatted} ({r.series} {r.period} #{r.number}) has been reserved for "
            f"{r.doctype} {r.doc_id} for over {cmd.minutes} minutes without being "
            "confirmed or released",
        },
    )
    return {}


def resolve_warning(state: LedgerState, cmd: c.ResolveWarning, emit: Emit) -> dict[str, Any]:
    w = state.warnings.get(cmd.warning_id)
    if w is None:
        raise DomainError(Refusal.NOT_FOUND, "warning_not_found", f"no warning {cmd.warning_id}")
    if w.state == "open":
        emit(ev.WARNING_RESOLVED, f"warning-{w.subject}", {"warning_id": w.id, "by": cmd.by})
    return {"warning_id": w.id, "state": w.state}


def _clear_pending_warning(state: LedgerState, r: Reservation, emit: Emit, why: str) -> None:
    if r.warning_id is not None and state.warnings[r.warning_id].state == "open":
        emit(ev.WARNING_RESOLVED, f"warning-{r.id}", {"warning_id": r.warning_id, "by": why})


def answer_again(state: LedgerState, cmd: c.Command, event: Event) -> dict[str, Any] | None:
    """The answer to ``cmd`` whose event id is already in the ledger, as ``event``.

    An event id names one request: only the same request from the same principal (a retry)
    gets the first answer again. The same id on another store's request, on another kind of
    command or for another document is refused, so nobody reads or blocks another's answer.
    ``None``: an import, which is idempotent by itself and runs again (without the id).
    """
    d = event.data
    match cmd:
        # A reserve's first event is its reservation, or the run of imported numbers it skipped.
        case c.Reserve() if (
            event.type in (ev.NUMBER_RESERVED, ev.EXTERNAL_NUMBER_DETECTED)
            and ("reservation_id" in d)
            and (d["peer_id"], d["doctype"], d["doc_id"]) == (cmd.peer_id, cmd.doctype, cmd.doc_id)
        ):
            return _view_at(state.reservations[d["reservation_id"]], event)
        case c.Confirm() if _confirmed_by(state, cmd, event):
            return _view_at(state.reservations[cmd.reservation_id], event)
        case c.Release() if event.type == ev.NUMBER_RELEASED and (d["reservation_id"], d["by"]) == (
            cmd.reservation_id,
            cmd.peer_id or "operator",
        ):
            return _view_at(state.reservations[cmd.reservation_id], event)
        case c.Void() if event.type == ev.NUMBER_VOIDED and (d["series"], d["period"], d["number"]) == (
            cmd.series,
            cmd.period,
            cmd.number,
        ):
            return _view_at(state.reservations[d["reservation_id"]], event)
        case c.UpdateDocument() if event.type == ev.DOCUMENT_UPDATED and (
            d["peer_id"],
            d["doctype"],
            d["doc_id"],
        ) == (cmd.peer_id, cmd.doctype, cmd.doc_id):
            doc = state.document(cmd.peer_id, cmd.doctype, cmd.doc_id)
            assert doc is not None, "an updated document is in the projection"
            return {
                "doctype": doc.doctype,
                "doc_id": doc.doc_id,
                "formatted": doc.formatted,
                "changed": True,
                "position": event.position,
            }
        case c.ImportDocuments() if _imported_by(cmd, event):
            return None
    raise DomainError(
        Refusal.CONFLICT,
        "event_id_reused",
        f"event id {event.event_id} names another request ({event.type} at "
        f"position {event.position}); a new request needs a new event id",
    )


def _view_at(r: Reservation, event: Event) -> dict[str, Any]:
    """The reservation as it is, with the receipt its first answer carried: that of the
    reservation's own event (a repeated confirm's DocumentUpdated left the receipt alone)."""
    view = reservation_view(r)
    if event.type in ev.RESERVATION_EVENTS:
        view["receipt"] = receipt(event.position, event.hash)
    return view


def _confirmed_by(state: LedgerState, cmd: c.Confirm, event: Event) -> bool:
    """``event`` is this store's confirm of this reservation: its NumberIssued, or the
    DocumentUpdated of a repeated confirm that brought a changed document."""
    r = state.reservations.get(cmd.reservation_id)
    if r is None or r.peer_id != cmd.peer_id:
        return False
    d = event.data
    if event.type == ev.NUMBER_ISSUED:
        issued_for: str = d["reservation_id"]
        return issued_for == r.id
    return event.type == ev.DOCUMENT_UPDATED and (d["peer_id"], d["doctype"], d["doc_id"]) == (
        r.peer_id,
        r.doctype,
        r.doc_id,
    )


def _imported_by(cmd: c.ImportDocuments, event: Event) -> bool:
    """``event`` is the first event of an import by this store: a DocumentImported, a
    released number it claimed, or the warning of a collision (its subject starts with the
    store's id)."""
    if event.type == ev.DOCUMENT_IMPORTED or (
        event.type == ev.EXTERNAL_NUMBER_DETECTED and "reservation_id" not in event.data
    ):
        importer: str = event.data["peer_id"]
        return importer == cmd.peer_id
    return (
        event.type == ev.WARNING_RAISED
        and event.data["code"] == "import_collision"
        and event.data["subject"].startswith(f"{cmd.peer_id}/")
    )


DECIDERS: dict[type[c.Command], Callable[[LedgerState, Any, Emit], dict[str, Any]]] = {
    c.Reserve: reserve,
    c.Confirm: confirm,
    c.Release: release,
    c.Void: void,
    c.ConfigureSeries: configure_series,
    c.RegisterPeer: register_peer,
    c.RotatePeerToken: rotate_peer_token,
    c.RetirePeer: retire_peer,
    c.ReportPeerConfig: report_peer_config,
    c.FlagPendingReservation: flag_pending,
    c.ResolveWarning: resolve_warning,
    c.RaiseWarning: raise_warning,
    c.UpdateDocument: update_document,
    c.ImportDocuments: import_documents,
}
