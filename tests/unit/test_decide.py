"""The numbering deciders (docs/design.md §2) driven through an in-memory ledger. Pure: no database.

``Ledger`` plays the writer's part: it emits events the way ``writer._Batch.emitter`` does
(position + 1, chained hash, applied to the state at once) and, like ``store.load_for_batch``,
makes sure every document key and number a command looks up is present in the state (None
when unknown). The state is never forgotten between commands, so it holds every reservation.
"""

from __future__ import annotations

import itertools
from collections import Counter as Tally
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.events import catalogue as ev
from coordinator.events.canonical import GENESIS_HASH, chain_hash, event_body, format_recorded_at
from coordinator.ledger import commands as c
from coordinator.ledger.commands import DomainError, Refusal
from coordinator.ledger.decide import DECIDERS, Emit
from coordinator.ledger.numbering import counter_series, period_of
from coordinator.ledger.state import Event, LedgerState, Reservation

RECORDED_AT = datetime(2026, 1, 15, 9, 30, 0, 250000, tzinfo=UTC)
TODAY = date(2026, 1, 15)
DOC = {"ClientData": {"name": "Ada"}, "DocData": {"total": "12.50"}}


@dataclass
class Ledger:
    state: LedgerState = field(default_factory=LedgerState)
    events: list[Event] = field(default_factory=list)
    position: int = 0
    hash: bytes = GENESIS_HASH
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _emitter(self) -> Emit:
        ledger = self

        class Emitter:
            def __call__(self, type_: str, stream: str, data: dict[str, Any], /) -> Event:
                eid = self.new_id()
                position = ledger.position + 1
                stamp = format_recorded_at(RECORDED_AT)
                digest = chain_hash(ledger.hash, event_body(position, eid, type_, stream, data, stamp))
                event = Event(position, eid, type_, stream, data, RECORDED_AT, ledger.hash, digest)
                ledger.state.apply(event)
                ledger.events.append(event)
                ledger.position, ledger.hash = position, digest
                return event

            def new_id(self) -> str:
                return f"00000000-0000-4000-8000-{next(ledger._ids):012d}"

        return Emitter()

    def run(self, cmd: c.Command) -> dict[str, Any]:
        match cmd:
            case c.Reserve():
                self.state.active_by_key.setdefault((cmd.peer_id, cmd.doctype, cmd.doc_id), None)
            case c.Void():
                self.state.active_by_number.setdefault((cmd.series, cmd.period, cmd.number), None)
        before = len(self.events)
        try:
            return DECIDERS[type(cmd)](self.state, cmd, self._emitter())
        except DomainError:
            assert len(self.events) == before, "a refused command must write nothing"
            raise

    # -- shorthands -------------------------------------------------------------------------
    def peer(self, name: str) -> str:
        out = self.run(c.RegisterPeer(name=name, url=f"https://{name}.example", token_sha256="0" * 64))
        return str(out["peer_id"])

    def configure(
        self, series: str, next: int | None = None, period: str | None = None, **changes: Any
    ) -> dict[str, Any]:
        return self.run(
            c.ConfigureSeries(series=series, changes=changes, next=next, period=period, today=TODAY)
        )

    def reserve(self, peer: str, doc_id: str, day: date = TODAY, doctype: str = "invoice") -> dict[str, Any]:
        return self.run(c.Reserve(peer_id=peer, doctype=doctype, doc_id=doc_id, date=day))

    def confirm(self, rid: str, peer: str) -> dict[str, Any]:
        return self.run(c.Confirm(reservation_id=rid, peer_id=peer, document=DOC))

    def release(self, rid: str, peer: str | None) -> dict[str, Any]:
        return self.run(c.Release(reservation_id=rid, peer_id=peer, reason="cancelled draft"))

    def void(self, series: str, period: str, number: int) -> dict[str, Any]:
        return self.run(c.Void(series=series, period=period, number=number, reason="cancelled"))


@contextmanager
def refused(refusal: Refusal, code: str | None = None) -> Iterator[None]:
    """Expect a DomainError of this kind (and code)."""
    with pytest.raises(DomainError) as info:
        yield
    err = info.value
    assert err.refusal == refusal, f"{err.refusal} ({err.code}: {err.message})"
    if code is not None:
        assert err.code == code, err.message


def check_invariants(ledger: Ledger) -> None:
    """docs/design.md §2 invariants over the whole state."""
    state = ledger.state
    held: dict[tuple[str, str], list[int]] = {}
    per_key: Tally[tuple[str, str, str]] = Tally()
    for r in state.reservations.values():
        if r.state != "released":
            held.setdefault((r.series, r.period), []).append(r.number)
            per_key[(r.peer_id, r.doctype, r.doc_id)] += 1
            assert state.active_by_key[(r.peer_id, r.doctype, r.doc_id)] == r.id
            assert state.active_by_number[(r.series, r.period, r.number)] == r.id
    assert all(n == 1 for n in per_key.values()), "a document holds two numbers"
    for key in set(held) | set(state.pool):
        series, _ = key
        pool = state.pool.get(key, [])
        assert pool == sorted(pool)
        numbers = sorted(held.get(key, []) + pool)
        assert len(numbers) == len(set(numbers)), f"{key}: a number is out twice: {numbers}"
        start, step = state.settings[series].start, state.settings[series].increment
        assert numbers == [start + i * step for i in range(len(numbers))], f"{key}: hole in {numbers}"
        counter = state.counters[key]
        assert counter.next == start + len(numbers) * step
        assert counter.highest == (numbers[-1] if numbers else None)


def check_chain(ledger: Ledger) -> None:
    prev = GENESIS_HASH
    for position, e in enumerate(ledger.events, start=1):
        assert e.position == position
        assert e.prev_hash == prev
        body = event_body(e.position, e.event_id, e.type, e.stream, e.data, format_recorded_at(e.recorded_at))
        assert e.hash == chain_hash(prev, body)
        prev = e.hash


def check_replay(ledger: Ledger) -> None:
    """Replaying every event onto an empty state yields the same projection."""
    fresh = LedgerState()
    for e in ledger.events:
        fresh.apply(e)

    def view(s: LedgerState) -> Any:
        return (
            s.settings,
            {k: (v.next, v.highest) for k, v in s.counters.items()},
            {k: v for k, v in s.pool.items() if v},
            {
                r.id: (r.state, r.series, r.period, r.number, r.formatted, r.position)
                for r in s.reservations.values()
            },
            {k: v for k, v in s.active_by_key.items() if v},
        )

    assert view(fresh) == view(ledger.state)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


# -- reserve -------------------------------------------------------------------------------------


def test_numbers_start_at_start_and_step_by_increment(ledger: Ledger) -> None:
    ledger.configure("invoice", start=100, increment=10)
    p = ledger.peer("eu")
    assert [ledger.reserve(p, f"d{i}")["number"] for i in range(3)] == [100, 110, 120]
    check_invariants(ledger)


def test_reserve_is_idempotent_also_after_confirm(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    first = ledger.reserve(p, "42")
    assert first["created"] is True
    again = ledger.reserve(p, "42")
    assert again["created"] is False
    assert again["reservation_id"] == first["reservation_id"]
    assert again["number"] == first["number"]
    events = len(ledger.events)
    ledger.confirm(first["reservation_id"], p)
    after = ledger.reserve(p, "42")
    assert (after["created"], after["reservation_id"], after["state"]) == (
        False,
        first["reservation_id"],
        "issued",
    )
    assert len(ledger.events) == events + 1  # only the NumberIssued
    assert ledger.reserve(p, "43")["number"] == first["number"] + 1


def test_same_doc_id_is_a_different_document_for_another_peer_or_doctype(ledger: Ledger) -> None:
    a, b = ledger.peer("a"), ledger.peer("b")
    numbers = [
        ledger.reserve(a, "1")["number"],
        ledger.reserve(b, "1")["number"],
        ledger.reserve(a, "1", doctype="creditnote")["number"],
    ]
    assert numbers == [1, 2, 1]  # the credit note has its own (dedicated) counter
    check_invariants(ledger)


def test_the_lowest_released_number_is_reused_first(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    rids = [ledger.reserve(p, f"d{n}")["reservation_id"] for n in range(1, 6)]  # 1..5
    ledger.release(rids[3], p)  # 4
    ledger.release(rids[1], p)  # 2
    assert ledger.state.pool[("invoice", "all")] == [2, 4]
    check_invariants(ledger)
    assert ledger.reserve(p, "x")["number"] == 2
    assert ledger.reserve(p, "y")["number"] == 4
    assert ledger.reserve(p, "z")["number"] == 6
    check_invariants(ledger)


def test_a_released_document_gets_a_new_reservation(ledger: Ledger) -> None:
    p, q = ledger.peer("eu"), ledger.peer("us")
    first = ledger.reserve(p, "7")
    ledger.reserve(p, "8")
    ledger.release(first["reservation_id"], p)
    # The number goes to another peer only now that it was released.
    other = ledger.reserve(q, "1")
    assert other["number"] == first["number"]
    again = ledger.reserve(p, "7")
    assert again["created"] is True
    assert again["reservation_id"] != first["reservation_id"]
    assert again["number"] == 3
    check_invariants(ledger)


def test_retired_or_unknown_peer_cannot_reserve(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    ledger.run(c.RetirePeer(peer_id=p))
    with refused(Refusal.FORBIDDEN, "peer_retired"):
        ledger.reserve(p, "1")
    with refused(Refusal.FORBIDDEN):
        ledger.reserve("00000000-0000-4000-8000-999999999999", "1")


def test_store_token_is_the_peer_name(ledger: Ledger) -> None:
    ledger.configure("invoice", format="{STORE}-{YEAR}{MONTH}{DAY}-{NUMBER:5}")
    p = ledger.peer("shop-eu")
    assert ledger.reserve(p, "1", date(2026, 2, 3))["formatted"] == "shop-eu-20260203-00001"


# -- periods -------------------------------------------------------------------------------------


def test_yearly_reset_restarts_at_start_across_new_year(ledger: Ledger) -> None:
    ledger.configure("invoice", reset="yearly", format="{YEAR}-{NUMBER:4}", start=1)
    p = ledger.peer("eu")
    dec31 = ledger.reserve(p, "a", date(2025, 12, 31))
    jan1 = ledger.reserve(p, "b", date(2026, 1, 1))
    dec31b = ledger.reserve(p, "c", date(2025, 12, 31))
    assert (dec31["period"], dec31["number"], dec31["formatted"]) == ("2025", 1, "2025-0001")
    assert (jan1["period"], jan1["number"], jan1["formatted"]) == ("2026", 1, "2026-0001")
    assert (dec31b["period"], dec31b["number"]) == ("2025", 2)
    check_invariants(ledger)


def test_never_reset_keeps_counting_across_years(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    assert ledger.reserve(p, "a", date(2025, 12, 31))["period"] == "all"
    jan1 = ledger.reserve(p, "b", date(2026, 1, 1))
    assert (jan1["period"], jan1["number"]) == ("all", 2)


def test_released_number_returns_to_its_own_period(ledger: Ledger) -> None:
    ledger.configure("invoice", reset="yearly", format="{YY}/{NUMBER}")
    p = ledger.peer("eu")
    old = ledger.reserve(p, "a", date(2025, 12, 31))
    ledger.reserve(p, "b", date(2026, 1, 1))
    ledger.release(old["reservation_id"], p)
    assert ledger.reserve(p, "c", date(2026, 1, 2))["number"] == 2
    assert ledger.reserve(p, "d", date(2025, 12, 30))["number"] == 1


def test_credit_notes_draw_from_the_invoice_counter_when_not_dedicated(ledger: Ledger) -> None:
    ledger.configure("invoice", format="INV-{NUMBER}")
    ledger.configure("creditnote", format="CN-{NUMBER}", dedicated=False)
    p = ledger.peer("eu")
    inv = ledger.reserve(p, "1")
    cn = ledger.reserve(p, "1", doctype="creditnote")
    inv2 = ledger.reserve(p, "2")
    assert (inv["number"], cn["number"], inv2["number"]) == (1, 2, 3)
    assert cn["series"] == "invoice"
    assert cn["formatted"] == "CN-2"  # the credit note keeps its own format
    assert ("creditnote", "all") not in ledger.state.counters
    check_invariants(ledger)


def test_dedicated_credit_notes_have_their_own_counter(ledger: Ledger) -> None:
    ledger.configure("creditnote", start=500)
    p = ledger.peer("eu")
    ledger.reserve(p, "1")
    cn = ledger.reserve(p, "1", doctype="creditnote")
    assert (cn["series"], cn["number"]) == ("creditnote", 500)


# -- confirm / release / void --------------------------------------------------------------------


def test_confirm_stores_the_document_and_is_idempotent(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    r = ledger.reserve(p, "1")
    out = ledger.confirm(r["reservation_id"], p)
    assert out["state"] == "issued"
    doc = ledger.state.documents[(p, "invoice", "1")]
    assert (doc.number, doc.snapshot, doc.reservation_id) == (1, DOC, r["reservation_id"])
    events = len(ledger.events)
    assert ledger.confirm(r["reservation_id"], p)["state"] == "issued"
    assert len(ledger.events) == events
    issued = [e for e in ledger.events if e.type == ev.NUMBER_ISSUED]
    assert len(issued) == 1
    assert issued[0].data["document"] == DOC


def test_only_the_owner_confirms_or_releases(ledger: Ledger) -> None:
    p, q = ledger.peer("eu"), ledger.peer("us")
    rid = ledger.reserve(p, "1")["reservation_id"]
    with refused(Refusal.FORBIDDEN, "not_your_reservation"):
        ledger.confirm(rid, q)
    with refused(Refusal.FORBIDDEN, "not_your_reservation"):
        ledger.release(rid, q)
    assert ledger.state.reservations[rid].state == "reserved"


def test_operator_may_release(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    rid = ledger.reserve(p, "1")["reservation_id"]
    assert ledger.release(rid, None)["state"] == "released"
    assert ledger.events[-1].data["by"] == "operator"
    assert ledger.state.pool[("invoice", "all")] == [1]


def test_unknown_reservation(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    with refused(Refusal.NOT_FOUND, "reservation_not_found"):
        ledger.confirm("00000000-0000-4000-8000-999999999999", p)
    with refused(Refusal.NOT_FOUND, "reservation_not_found"):
        ledger.release("00000000-0000-4000-8000-999999999999", None)


def test_release_is_idempotent_and_a_released_number_cannot_be_confirmed(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    rid = ledger.reserve(p, "1")["reservation_id"]
    ledger.release(rid, p)
    events = len(ledger.events)
    assert ledger.release(rid, p)["state"] == "released"
    assert len(ledger.events) == events
    assert ledger.state.pool[("invoice", "all")] == [1]  # not twice in the pool
    with refused(Refusal.CONFLICT, "reservation_released"):
        ledger.confirm(rid, p)


def test_an_issued_number_cannot_be_released(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    rid = ledger.reserve(p, "1")["reservation_id"]
    ledger.confirm(rid, p)
    with refused(Refusal.CONFLICT, "reservation_issued"):
        ledger.release(rid, p)
    with refused(Refusal.CONFLICT, "reservation_issued"):
        ledger.release(rid, None)
    assert ledger.state.reservations[rid].state == "issued"
    assert ledger.state.released("invoice", "all") == []


def test_void_keeps_the_number_used(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    rid = ledger.reserve(p, "1")["reservation_id"]
    ledger.confirm(rid, p)
    out = ledger.void("invoice", "all", 1)
    assert out["state"] == "void"
    assert ledger.events[-1].data["was"] == "issued"
    assert rid in ledger.state.changes.voided_documents
    assert ledger.state.released("invoice", "all") == []
    assert ledger.reserve(p, "2")["number"] == 2
    # The cancelled document keeps its number.
    again = ledger.reserve(p, "1")
    assert (again["created"], again["number"], again["state"]) == (False, 1, "void")
    with refused(Refusal.CONFLICT, "reservation_void"):
        ledger.release(rid, p)
    check_invariants(ledger)


def test_void_is_idempotent(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    ledger.reserve(p, "1")
    ledger.void("invoice", "all", 1)
    events = len(ledger.events)
    assert ledger.void("invoice", "all", 1)["state"] == "void"
    assert len(ledger.events) == events


def test_void_of_a_pending_reservation(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    rid = ledger.reserve(p, "1")["reservation_id"]
    ledger.void("invoice", "all", 1)
    assert ledger.events[-1].data["was"] == "reserved"
    with refused(Refusal.CONFLICT, "reservation_void"):
        ledger.confirm(rid, p)
    with refused(Refusal.CONFLICT, "reservation_void"):
        ledger.release(rid, p)


def test_void_of_a_released_or_unknown_number(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    rid = ledger.reserve(p, "1")["reservation_id"]
    ledger.release(rid, p)
    with refused(Refusal.CONFLICT, "number_released"):
        ledger.void("invoice", "all", 1)
    with refused(Refusal.NOT_FOUND, "number_not_found"):
        ledger.void("invoice", "all", 2)
    with refused(Refusal.NOT_FOUND, "number_not_found"):
        ledger.void("creditnote", "all", 1)


def test_void_by_number_reaches_the_current_holder_after_reuse(ledger: Ledger) -> None:
    p, q = ledger.peer("eu"), ledger.peer("us")
    first = ledger.reserve(p, "1")["reservation_id"]
    ledger.release(first, p)
    second = ledger.reserve(q, "9")["reservation_id"]
    ledger.void("invoice", "all", 1)
    assert ledger.state.reservations[second].state == "void"
    assert ledger.state.reservations[first].state == "released"


# -- configure_series and `next` -----------------------------------------------------------------


def test_next_cannot_go_back_to_or_below_a_handed_out_number(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    rids = [ledger.reserve(p, str(n))["reservation_id"] for n in range(1, 6)]  # 1..5
    for bad in (0, 1, 3, 5):
        with refused(Refusal.CONFLICT, "next_below_issued"):
            ledger.configure("invoice", next=bad)
    ledger.release(rids[-1], p)  # 5 is back in the pool, but it was handed out
    with refused(Refusal.CONFLICT, "next_below_issued"):
        ledger.configure("invoice", next=5)
    assert ledger.state.counter("invoice", "all").next == 6


def test_next_may_move_forward(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    ledger.reserve(p, "1")
    out = ledger.configure("invoice", next=1000)
    assert out["next"] == {"period": "all", "number": 1000}
    assert ledger.reserve(p, "2")["number"] == 1000
    assert ledger.reserve(p, "3")["number"] == 1001
    with refused(Refusal.CONFLICT, "next_below_issued"):
        ledger.configure("invoice", next=1001)
    ledger.configure("invoice", next=1002)


def test_next_before_anything_was_handed_out(ledger: Ledger) -> None:
    p = ledger.peer("eu")
    ledger.configure("invoice", next=50)
    ledger.configure("invoice", next=10)  # nothing handed out yet: any value is fine
    assert ledger.reserve(p, "1")["number"] == 10


def test_next_is_per_period_for_a_yearly_series(ledger: Ledger) -> None:
    ledger.configure("invoice", reset="yearly", format="{YEAR}-{NUMBER}")
    p = ledger.peer("eu")
    ledger.reserve(p, "a", date(2026, 3, 1))
    ledger.reserve(p, "b", date(2026, 3, 1))
    with refused(Refusal.CONFLICT, "next_below_issued"):
        ledger.configure("invoice", next=2)  # today's period, 2026
    with refused(Refusal.CONFLICT, "next_below_issued"):
        ledger.configure("invoice", next=2, period="2026")
    ledger.configure("invoice", next=1, period="2027")
    ledger.configure("invoice", next=40, period="2025")
    assert ledger.reserve(p, "c", date(2025, 12, 31))["number"] == 40
    assert ledger.reserve(p, "d", date(2027, 1, 1))["number"] == 1
    assert ledger.reserve(p, "e", date(2026, 1, 1))["number"] == 3


def test_next_applies_to_the_shared_counter_only(ledger: Ledger) -> None:
    ledger.configure("creditnote", dedicated=False)
    with refused(Refusal.CONFLICT, "shared_counter"):
        ledger.configure("creditnote", next=10)
    p = ledger.peer("eu")
    ledger.reserve(p, "1", doctype="creditnote")
    with refused(Refusal.CONFLICT, "next_below_issued"):
        ledger.configure("invoice", next=1)  # the credit note took 1 from the invoice counter


@pytest.mark.parametrize(
    ("series", "kwargs", "refusal", "code"),
    [
        ("quote", {}, Refusal.NOT_FOUND, "series_not_found"),
        ("invoice", {"increment": 0}, Refusal.INVALID, "invalid_settings"),
        ("invoice", {"format": "{NUMBER}{FOO}"}, Refusal.INVALID, "invalid_settings"),
        ("invoice", {"reset": "yearly"}, Refusal.INVALID, "invalid_settings"),  # default format has no year
        ("invoice", {"colour": "red"}, Refusal.INVALID, "invalid_settings"),
        ("invoice", {"dedicated": False}, Refusal.INVALID, "invalid_settings"),
        ("invoice", {"next": -1}, Refusal.INVALID, "invalid_settings"),
        ("invoice", {"next": 5, "period": "2026"}, Refusal.INVALID, "invalid_period"),
        (
            "invoice",
            {"next": 5, "period": "26", "reset": "yearly", "format": "{YY}{NUMBER}"},
            Refusal.INVALID,
            "invalid_period",
        ),
    ],
)
def test_configure_series_refuses(
    ledger: Ledger, series: str, kwargs: dict[str, Any], refusal: Refusal, code: str
) -> None:
    with refused(refusal, code):
        ledger.configure(series, **kwargs)
    assert ledger.events == []


def test_configure_series_keeps_unchanged_settings(ledger: Ledger) -> None:
    ledger.configure("invoice", start=10, format="A{NUMBER}")
    ledger.configure("invoice", increment=2)
    s = ledger.state.settings["invoice"]
    assert (s.start, s.increment, s.format) == (10, 2, "A{NUMBER}")


# -- formatted numbers never repeat within a document type ---------------------------------------


@pytest.mark.parametrize("invoice_first", [True, False])
def test_shared_counter_with_yearly_reset_keeps_credit_note_numbers_unique(
    ledger: Ledger, invoice_first: bool
) -> None:
    """Credit notes on a yearly invoice counter restart every year, like the invoices.

    Their own format must then carry the year too, or the formatted numbers repeat: either
    the configuration is refused, or the numbers come out different.
    """
    steps = [
        lambda: ledger.configure("invoice", reset="yearly", format="INV-{YEAR}-{NUMBER}"),
        lambda: ledger.configure("creditnote", dedicated=False, format="CN-{NUMBER}"),
    ]
    try:
        for step in steps if invoice_first else reversed(steps):
            step()
    except DomainError as err:
        assert err.refusal in (Refusal.INVALID, Refusal.CONFLICT)
        return
    p = ledger.peer("eu")
    a = ledger.reserve(p, "1", date(2025, 12, 31), doctype="creditnote")["formatted"]
    b = ledger.reserve(p, "2", date(2026, 1, 1), doctype="creditnote")["formatted"]
    assert a != b, f"two credit notes both numbered {a}"


def test_toggling_dedicated_keeps_credit_note_numbers_unique(ledger: Ledger) -> None:
    """Credit notes drawn from the invoice counter, then from their own again, never repeat."""
    p = ledger.peer("eu")
    for n in range(3):
        ledger.reserve(p, f"i{n}")  # invoice counter at 4
    formatted: list[str] = []
    try:
        ledger.configure("creditnote", dedicated=False)
        formatted.append(ledger.reserve(p, "c0", doctype="creditnote")["formatted"])  # 4
        ledger.configure("creditnote", dedicated=True)
        for n in range(1, 5):
            formatted.append(ledger.reserve(p, f"c{n}", doctype="creditnote")["formatted"])
    except DomainError:
        return  # refusing the switch is a fine answer too
    assert len(formatted) == len(set(formatted)), f"credit note numbers repeat: {formatted}"


def test_switching_to_yearly_reset_keeps_numbers_unique(ledger: Ledger) -> None:
    """Numbers handed out before a switch to yearly reset are not handed out again."""
    ledger.configure("invoice", format="{YEAR}-{NUMBER}")
    p = ledger.peer("eu")
    formatted = [ledger.reserve(p, f"a{n}", date(2026, 2, 1))["formatted"] for n in range(3)]
    try:
        ledger.configure("invoice", reset="yearly")
    except DomainError:
        return  # refusing the switch while the period has numbers is a fine answer too
    formatted += [ledger.reserve(p, f"b{n}", date(2026, 2, 2))["formatted"] for n in range(3)]
    assert len(formatted) == len(set(formatted)), f"invoice numbers repeat: {formatted}"


# -- property: random traffic keeps the invariants -----------------------------------------------

DATES = [
    date(2024, 12, 31),
    date(2025, 1, 1),
    date(2025, 6, 15),
    date(2025, 12, 31),
    date(2026, 1, 1),
    date(2026, 2, 28),
]
PEERS = 3

_series_settings = st.fixed_dictionaries(
    {
        "start": st.integers(0, 5),
        "increment": st.integers(1, 4),
        "reset": st.sampled_from(["never", "yearly"]),
    }
)

_reserve = st.tuples(
    st.just("reserve"),
    st.integers(0, PEERS - 1),
    st.sampled_from(["invoice", "creditnote"]),
    st.integers(0, 5),
    st.sampled_from(DATES),
)
_confirm = st.tuples(st.just("confirm"), st.integers(0, 10**6), st.sampled_from(["owner", "other"]))
_release = st.tuples(
    st.just("release"), st.integers(0, 10**6), st.sampled_from(["owner", "owner", "other", "operator"])
)
_void = st.tuples(st.just("void"), st.integers(0, 10**6))
_void_number = st.tuples(
    st.just("void_number"),
    st.sampled_from(["invoice", "creditnote"]),
    st.sampled_from(["all", "2025", "2026"]),
    st.integers(0, 12),
)
# Weighted: mostly reserve, confirm and release, so that pools fill and numbers get reused.
_KINDS = {
    "reserve": _reserve,
    "confirm": _confirm,
    "release": _release,
    "void": _void,
    "void_number": _void_number,
}
_op = st.sampled_from(["reserve"] * 4 + ["confirm"] * 2 + ["release"] * 3 + ["void", "void_number"]).flatmap(
    _KINDS.__getitem__
)


@dataclass
class Model:
    """What each reservation should be, kept independently of LedgerState."""

    owner: dict[str, str] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    slot: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    active: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def holder(self, slot: tuple[str, str, int]) -> str | None:
        return next(
            (rid for rid, s in self.slot.items() if s == slot and self.status[rid] != "released"), None
        )


def _step(ledger: Ledger, model: Model, peers: list[str], op: tuple[Any, ...]) -> None:
    state = ledger.state
    rids = list(model.owner)
    events = len(ledger.events)
    if op[0] == "reserve":
        _, who, doctype, doc, day = op
        peer, doc_id = peers[who], f"doc-{doc}"
        key = (peer, doctype, doc_id)
        series = counter_series(doctype, state.settings)
        period = period_of(state.settings[series], day)
        pool = list(state.released(series, period))
        expected_number = pool[0] if pool else state.counter(series, period).next
        out = ledger.reserve(peer, doc_id, day, doctype)
        if key in model.active:
            assert out["created"] is False
            assert out["reservation_id"] == model.active[key]
            assert len(ledger.events) == events
            return
        assert out["created"] is True
        assert (out["series"], out["period"], out["number"]) == (series, period, expected_number)
        rid = out["reservation_id"]
        model.owner[rid], model.status[rid] = peer, "reserved"
        model.slot[rid] = (series, period, out["number"])
        model.active[key] = rid
        return
    if op[0] == "void_number":
        _, series, period, number = op
        _void(ledger, model, (series, period, number), events)
        return
    if not rids:
        return
    rid = rids[op[1] % len(rids)]
    owner = model.owner[rid]
    if op[0] == "void":
        _void(ledger, model, model.slot[rid], events)
        return
    actor = op[2]
    who: str | None = (
        None if actor == "operator" else owner if actor == "owner" else next(p for p in peers if p != owner)
    )
    status = model.status[rid]
    if op[0] == "confirm":
        assert who is not None
        if who != owner:
            with refused(Refusal.FORBIDDEN):
                ledger.confirm(rid, who)
        elif status in ("released", "void"):
            with refused(Refusal.CONFLICT):
                ledger.confirm(rid, who)
        else:
            assert ledger.confirm(rid, who)["state"] == "issued"
            assert len(ledger.events) == events + (status == "reserved")
            model.status[rid] = "issued"
    else:  # release
        if who is not None and who != owner:
            with refused(Refusal.FORBIDDEN):
                ledger.release(rid, who)
        elif status in ("issued", "void"):
            with refused(Refusal.CONFLICT):
                ledger.release(rid, who)
        else:
            assert ledger.release(rid, who)["state"] == "released"
            assert len(ledger.events) == events + (status == "reserved")
            if status == "reserved":
                model.status[rid] = "released"
                r = state.reservations[rid]
                del model.active[(r.peer_id, r.doctype, r.doc_id)]


def _void(ledger: Ledger, model: Model, slot: tuple[str, str, int], events: int) -> None:
    holder = model.holder(slot)
    if holder is None:
        in_pool = slot[2] in ledger.state.released(slot[0], slot[1])
        with refused(Refusal.CONFLICT if in_pool else Refusal.NOT_FOUND):
            ledger.void(*slot)
        return
    assert ledger.void(*slot)["reservation_id"] == holder
    assert len(ledger.events) == events + (model.status[holder] != "void")
    model.status[holder] = "void"


def _formats(reset: str) -> str:
    return "{STORE}-{YEAR}-{NUMBER:3}" if reset == "yearly" else "{NUMBER}"


@settings(max_examples=150, deadline=None)
@given(
    invoice=_series_settings,
    creditnote=_series_settings,
    dedicated=st.booleans(),
    ops=st.lists(_op, min_size=20, max_size=80),
)
def test_random_traffic_keeps_numbering_gapless(
    invoice: dict[str, Any], creditnote: dict[str, Any], dedicated: bool, ops: list[tuple[Any, ...]]
) -> None:
    ledger = Ledger()
    ledger.configure("invoice", format=_formats(invoice["reset"]), **invoice)
    # A credit note on the yearly invoice counter needs the year in its text too.
    shares_yearly = not dedicated and invoice["reset"] == "yearly"
    ledger.configure(
        "creditnote",
        format=_formats("yearly" if shares_yearly else creditnote["reset"]),
        dedicated=dedicated,
        **creditnote,
    )
    peers = [ledger.peer(f"store{i}") for i in range(PEERS)]
    model = Model()
    for op in ops:
        _step(ledger, model, peers, op)
        check_invariants(ledger)
    for rid, status in model.status.items():
        r: Reservation = ledger.state.reservations[rid]
        assert (r.state, r.peer_id, (r.series, r.period, r.number)) == (
            status,
            model.owner[rid],
            model.slot[rid],
        )
    check_chain(ledger)
    check_replay(ledger)


_next_op = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 8)),
    st.tuples(st.just("release"), st.integers(0, 10**6)),
    st.tuples(st.just("next"), st.integers(0, 40)),
)


@settings(max_examples=150, deadline=None)
@given(start=st.integers(0, 5), increment=st.integers(1, 3), ops=st.lists(_next_op, min_size=10, max_size=50))
def test_moving_next_never_hands_a_number_out_twice(
    start: int, increment: int, ops: list[tuple[str, int]]
) -> None:
    ledger = Ledger()
    ledger.configure("invoice", start=start, increment=increment)
    p = ledger.peer("eu")
    handed: set[int] = set()  # every number ever handed out, released ones included
    live: dict[str, int] = {}  # doc_id -> number of its pending reservation
    rids: list[str] = []
    for op in ops:
        if op[0] == "reserve":
            doc_id = f"d{op[1]}"
            pool = list(ledger.state.released("invoice", "all"))
            expected = pool[0] if pool else ledger.state.counter("invoice", "all").next
            out = ledger.reserve(p, doc_id)
            if doc_id in live:
                assert out["number"] == live[doc_id]
                continue
            assert out["number"] == expected
            if not pool:  # a fresh number, not a released one: never handed out before
                assert out["number"] not in handed
            handed.add(out["number"])
            live[doc_id] = out["number"]
            rids.append(out["reservation_id"])
        elif op[0] == "release" and rids:
            rid = rids[op[1] % len(rids)]
            r = ledger.state.reservations[rid]
            was = r.state
            ledger.release(rid, p)
            if was == "reserved":
                del live[r.doc_id]
        elif op[0] == "next":
            value = op[1]
            if handed and value <= max(handed):
                with refused(Refusal.CONFLICT, "next_below_issued"):
                    ledger.configure("invoice", next=value)
            else:
                ledger.configure("invoice", next=value)
                assert ledger.state.counter("invoice", "all").next == value
        numbers = list(live.values()) + ledger.state.released("invoice", "all")
        assert len(numbers) == len(set(numbers)), f"a number is out twice: {sorted(numbers)}"
    check_chain(ledger)
    check_replay(ledger)
