"""The numbering invariants of docs/design.md §2, checked on event streams (pure)."""

from __future__ import annotations

from typing import Any

from coordinator.audit.findings import Findings
from coordinator.audit.invariants import Invariants

STORE = "5f0c9a3e-0000-4000-8000-000000000001"


class Stream:
    def __init__(self) -> None:
        self.findings = Findings()
        self.invariants = Invariants(self.findings)
        self.position = 0
        self.next = 1

    def feed(self, type_: str, data: dict[str, Any]) -> None:
        self.position += 1
        self.invariants.feed(self.position, type_, data)

    def reserve(
        self, doc_id: str, number: int | None = None, *, from_pool: bool = False, next_: int | None = None
    ) -> dict[str, Any]:
        number = self.next if number is None else number
        if not from_pool:
            self.next = number + 1
        data = {
            "reservation_id": f"r-{doc_id}-{number}",
            "peer_id": STORE,
            "doctype": "invoice",
            "doc_id": doc_id,
            "series": "invoice",
            "period": "all",
            "number": number,
            "formatted": str(number),
            "from_pool": from_pool,
            "next": self.next if next_ is None else next_,
            "date": "2026-01-01",
        }
        self.feed("NumberReserved", data)
        return data

    def issue(self, r: dict[str, Any]) -> None:
        self.feed(
            "NumberIssued", {k: r[k] for k in ("reservation_id", "series", "period", "number", "formatted")}
        )

    def release(self, r: dict[str, Any]) -> None:
        self.feed("NumberReleased", {k: r[k] for k in ("reservation_id", "series", "period", "number")})

    def messages(self) -> list[tuple[int | None, int | None, str]]:
        return [(f.position, f.number, f.message) for f in self.findings.kept]


def test_a_sound_stream_has_no_finding_and_reports_the_pool() -> None:
    s = Stream()
    for doc in "abc":
        s.issue(s.reserve(doc))
    dropped = s.reserve("d")
    s.release(dropped)
    again = s.reserve("e", dropped["number"], from_pool=True)
    s.issue(again)
    left = s.reserve("f")
    s.release(left)
    s.feed(
        "NumberVoided",
        {"reservation_id": "r-a-1", "series": "invoice", "period": "all", "number": 1, "was": "issued"},
    )
    assert s.findings.ok, s.messages()
    assert s.invariants.summary() == [
        {
            "series": "invoice",
            "period": "all",
            "handed_out": 6,
            "highest": 5,
            "next": 6,
            "released": [5],
            "pending": 0,
        }
    ]


def test_a_hole_is_named() -> None:
    s = Stream()
    s.issue(s.reserve("a"))
    s.reserve("b", 4)
    ((position, number, message),) = s.messages()
    assert (position, number) == (3, 4) and message.startswith("hole: 2…3 skipped")


def test_a_number_handed_out_twice_is_named() -> None:
    s = Stream()
    s.issue(s.reserve("a"))
    s.reserve("b", 1, next_=2)
    assert any(n == 1 and "handed out twice" in m for _, n, m in s.messages())
    s2 = Stream()
    s2.issue(s2.reserve("a"))
    s2.reserve("b", 1, from_pool=True)  # never released
    assert any("not released" in m for _, _, m in s2.messages())


def test_one_number_per_document_and_one_document_per_number() -> None:
    s = Stream()
    first = s.reserve("a")
    s.reserve("a")  # the same document gets a second live number
    s.issue(first)
    s.issue(first)  # a second document for the same number
    messages = s.messages()
    assert any(p == 2 and "already holds a number" in m for p, _, m in messages)
    assert any(p == 4 and "not pending" in m for p, _, m in messages)


def test_released_numbers_are_reused_lowest_first_before_the_counter() -> None:
    s = Stream()
    a, b = s.reserve("a"), s.reserve("b")
    s.release(b)
    s.release(a)
    s.reserve("c", 2, from_pool=True)
    s.reserve("d")  # 3 from the counter while 1 still waits in the pool
    messages = [m for _, _, m in s.messages()]
    assert any("before the lower released number 1" in m for m in messages)
    assert any("while released 1 waited in the pool" in m for m in messages)


def test_malformed_data_is_a_finding_not_a_crash() -> None:
    s = Stream()
    s.feed("NumberReserved", {"series": "invoice"})
    ((_, _, message),) = s.messages()
    assert "malformed" in message


def _imported(s: Stream, number: int) -> None:
    s.feed(
        "DocumentImported",
        {
            "peer_id": STORE,
            "doctype": "invoice",
            "doc_id": f"old-{number}",
            "formatted": f"INV-{number}",
            "document": {},
            "number": {"series": "invoice", "period": "all", "number": number},
        },
    )


def _skipped(s: Stream, first: int, last: int, *, from_pool: bool = False) -> None:
    s.feed(
        "ExternalNumberDetected",
        {
            "series": "invoice",
            "period": "all",
            "first": first,
            "last": last,
            "next": s.next if from_pool else last + 1,
            "from_pool": from_pool,
        },
    )
    if not from_pool:
        s.next = last + 1


def test_numbers_skipped_because_imported_are_taken_not_holes() -> None:
    s = Stream()
    s.issue(s.reserve("a"))
    for number in (2, 3, 9):
        _imported(s, number)
    _skipped(s, 2, 3)
    for doc in "bcdef":
        s.issue(s.reserve(doc))
    _skipped(s, 9, 9)
    s.issue(s.reserve("g"))
    assert s.findings.ok, s.messages()


def test_a_skip_over_numbers_no_import_carries_is_a_hole() -> None:
    s = Stream()
    s.issue(s.reserve("a"))
    _imported(s, 2)
    _skipped(s, 2, 3)
    assert s.messages() == [(4, 3, "skipped as imported, but it is never handed out: a hole")]


def test_an_import_of_a_number_handed_out_is_found() -> None:
    s = Stream()
    s.issue(s.reserve("a"))
    _imported(s, 1)
    assert [m for _, _, m in s.messages()] == [
        "imported, but the number is issued already: a number carried twice"
    ]


def test_an_import_claims_a_released_number_once() -> None:
    s = Stream()
    r = s.reserve("a")
    s.reserve("b")
    s.release(r)
    _skipped(s, 1, 1, from_pool=True)
    _imported(s, 1)
    assert s.findings.ok, s.messages()
    s.reserve("c", 1, from_pool=True)
    assert [m for _, _, m in s.messages()] == [
        "taken from the pool but it was not released (it is carried by an imported document):"
        " handed out twice"
    ]
