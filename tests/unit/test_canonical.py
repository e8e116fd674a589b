"""Canonical JSON and the hash chain (docs/design.md §3). Pure."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.events.canonical import (
    GENESIS_HASH,
    NotCanonical,
    canonical_event,
    canonical_json,
    chain_hash,
    ensure_canonical,
    event_body,
    format_recorded_at,
)

# Values the ledger stores: strings (no NUL, no lone surrogate), 64-bit ints, bools, null,
# lists and string-keyed objects.
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_SCALAR = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT
JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


def _reference(value: Any) -> bytes:
    """The canonical form spelled with the standard library: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- canonical_json ------------------------------------------------------------------------------


def test_sorted_keys_and_no_whitespace() -> None:
    value = {"b": 1, "a": [1, {"d": None, "c": True}], "A": "x y", "": False}
    assert canonical_json(value) == b'{"":false,"A":"x y","a":[1,{"c":true,"d":null}],"b":1}'


def test_non_ascii_is_utf8_not_escaped() -> None:
    assert canonical_json({"name": "Müller — 東京 😀"}) == '{"name":"Müller — 東京 😀"}'.encode()
    assert b"\\u" not in canonical_json({"é": "ß"})


def test_keys_sort_by_code_point() -> None:
    # Code-point order equals UTF-8 byte order; uppercase before lowercase, ASCII before the rest.
    value = {"é": 1, "z": 2, "Z": 3, "10": 4, "9": 5, "😀": 6, "ÿ": 7}
    assert canonical_json(value) == '{"10":4,"9":5,"Z":3,"z":2,"é":1,"ÿ":7,"😀":6}'.encode()


@given(value=JSON)
def test_canonical_json_matches_the_reference_encoding(value: Any) -> None:
    ensure_canonical(value)
    encoded = canonical_json(value)
    assert encoded == _reference(value)
    assert json.loads(encoded) == value
    # Stable: decoding and encoding again yields the same bytes (what a replay from jsonb does).
    assert canonical_json(json.loads(encoded)) == encoded


@given(items=st.dictionaries(_TEXT, _SCALAR, max_size=8), seed=st.randoms())
def test_insertion_order_does_not_matter(items: dict[str, Any], seed: Any) -> None:
    keys = list(items)
    seed.shuffle(keys)
    assert canonical_json({k: items[k] for k in keys}) == canonical_json(items)


# -- ensure_canonical ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**63 - 1,
        "",
        "text",
        [],
        {},
        (1, "a"),
        {"ClientData": {"name": "Ada"}, "DocData": {"total": "12.50", "lines": [{"qty": 2}]}},
    ],
)
def test_ensure_canonical_accepts(value: Any) -> None:
    ensure_canonical(value)
    canonical_json(value)  # and it can indeed be encoded


@pytest.mark.parametrize(
    ("value", "path", "complaint"),
    [
        (1.5, "data", "decimal numbers must be sent as strings"),
        ({"a": [1, {"b": 0.1}]}, "data.a[1].b", "decimal numbers"),
        ({"a": float("nan")}, "data.a", "decimal numbers"),
        ({"a": "x\x00y"}, "data.a", "NUL"),
        ([["ok", "\x00"]], "data[0][1]", "NUL"),
        ({1: "x"}, "data", "keys must be strings"),
        ({"a": {(1, 2): "x"}}, "data.a", "keys must be strings"),
        ({"n": 2**63}, "data.n", "integer out of range"),
        ({"n": -(2**63) - 1}, "data.n", "integer out of range"),
        ({"n": [10**30]}, "data.n[0]", "integer out of range"),
        ({"d": Decimal("1.5")}, "data.d", "Decimal"),
        ({"b": b"bytes"}, "data.b", "bytes"),
        ({"s": {1, 2}}, "data.s", "set"),
        ({"t": datetime(2026, 1, 1, tzinfo=UTC)}, "data.t", "datetime"),
    ],
)
def test_ensure_canonical_refuses_naming_the_path(value: Any, path: str, complaint: str) -> None:
    with pytest.raises(NotCanonical) as info:
        ensure_canonical(value)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert complaint in message


def test_ensure_canonical_uses_the_given_root_name() -> None:
    with pytest.raises(NotCanonical, match=r"^document\.DocData\.total: "):
        ensure_canonical({"DocData": {"total": 12.5}}, "document")


def test_ensure_canonical_refuses_nul_in_object_keys() -> None:
    # jsonb cannot hold U+0000 in a key any more than in a value; a document with such a key
    # would pass the check and then fail the whole batch's INSERT.
    with pytest.raises(NotCanonical, match="NUL"):
        ensure_canonical({"ClientData": {"na\x00me": "Ada"}}, "document")


def test_ensure_canonical_refuses_lone_surrogates() -> None:
    # Whatever ensure_canonical accepts must be encodable; a lone surrogate is not UTF-8.
    with pytest.raises(NotCanonical):
        ensure_canonical({"a": "\ud800"})
    with pytest.raises(NotCanonical):
        ensure_canonical({"\udc00": 1})


@given(value=JSON)
def test_whatever_is_accepted_can_be_encoded(value: Any) -> None:
    ensure_canonical(value)
    assert json.loads(canonical_json(value)) == value


# -- chain hash ----------------------------------------------------------------------------------

STAMP = "2026-01-02T03:04:05.000006Z"


def _body(data: Any, position: int = 1) -> dict[str, Any]:
    return event_body(
        position, "0b7e0a52-7a59-4c2e-a8d4-2b8c7c7f6a10", "NumberReserved", "reservation-1", data, STAMP
    )


def test_genesis_hash_is_32_zero_bytes() -> None:
    assert GENESIS_HASH == b"\x00" * 32


def test_event_body_has_exactly_the_hashed_fields() -> None:
    body = _body({"number": 1})
    assert body == {
        "position": 1,
        "event_id": "0b7e0a52-7a59-4c2e-a8d4-2b8c7c7f6a10",
        "type": "NumberReserved",
        "stream": "reservation-1",
        "data": {"number": 1},
        "recorded_at": STAMP,
    }


@given(prev=st.binary(min_size=32, max_size=32), data=JSON)
def test_chain_hash_is_sha256_of_prev_then_canonical_body(prev: bytes, data: Any) -> None:
    body = _body(data)
    expected = hashlib.sha256(prev + _reference(body)).digest()
    assert chain_hash(prev, body) == expected
    assert len(expected) == 32


def test_chain_hash_known_value() -> None:
    body = {"b": "é", "a": 1}
    expected = hashlib.sha256(GENESIS_HASH + '{"a":1,"b":"é"}'.encode()).hexdigest()
    assert chain_hash(GENESIS_HASH, body).hex() == expected


@given(data=st.dictionaries(_TEXT, _SCALAR, min_size=1, max_size=6), which=st.integers(0, 10**6))
def test_chain_hash_changes_when_any_byte_of_the_body_changes(data: dict[str, Any], which: int) -> None:
    body = _body(data)
    original = chain_hash(GENESIS_HASH, body)
    encoded = canonical_json(body)
    index = which % len(encoded)
    tampered = bytearray(encoded)
    tampered[index] ^= 0x01
    assert hashlib.sha256(GENESIS_HASH + bytes(tampered)).digest() != original


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b | {"position": b["position"] + 1},
        lambda b: b | {"event_id": b["event_id"].replace("0", "1", 1)},
        lambda b: b | {"type": "NumberIssued"},
        lambda b: b | {"stream": "reservation-2"},
        lambda b: b | {"recorded_at": STAMP.replace("6Z", "7Z")},
        lambda b: b | {"data": {**b["data"], "number": 8}},
        lambda b: b | {"data": {**b["data"], "formatted": "INV-0007 "}},
        lambda b: b | {"data": {**b["data"], "extra": None}},
    ],
)
def test_chain_hash_changes_when_a_field_changes(change: Any) -> None:
    body = _body({"number": 7, "formatted": "INV-0007"})
    assert chain_hash(GENESIS_HASH, change(body)) != chain_hash(GENESIS_HASH, body)


def test_chain_hash_depends_on_the_previous_hash() -> None:
    body = _body({"number": 1})
    assert chain_hash(GENESIS_HASH, body) != chain_hash(b"\x00" * 31 + b"\x01", body)


def test_tampering_with_one_event_breaks_every_later_link() -> None:
    bodies = [_body({"number": n}, position=n) for n in range(1, 5)]
    hashes: list[bytes] = []
    prev = GENESIS_HASH
    for body in bodies:
        prev = chain_hash(prev, body)
        hashes.append(prev)
    bodies[1] = _body({"number": 99}, position=2)
    prev = GENESIS_HASH
    recomputed = []
    for body in bodies:
        prev = chain_hash(prev, body)
        recomputed.append(prev)
    assert recomputed[0] == hashes[0]
    assert all(a != b for a, b in zip(recomputed[1:], hashes[1:], strict=True))


# -- recorded_at ---------------------------------------------------------------------------------


def test_format_recorded_at_gives_microseconds_and_z() -> None:
    assert format_recorded_at(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == STAMP
    assert format_recorded_at(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"


def test_format_recorded_at_converts_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2026, 1, 1, 0, 30, 0, 123456, tzinfo=plus_two)
    assert format_recorded_at(moment) == "2025-12-31T22:30:00.123456Z"


@given(
    moment=st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]
        ),
    )
)
def test_format_recorded_at_round_trips(moment: datetime) -> None:
    text = format_recorded_at(moment)
    assert len(text) == 27
    assert text.endswith("Z")
    assert datetime.fromisoformat(text[:-1] + "+00:00") == moment


@given(data=st.dictionaries(_TEXT, JSON, max_size=6), position=st.integers(1, 2**62), stream=_TEXT)
def test_canonical_event_equals_canonical_json_of_the_event_body(
    data: dict[str, Any], position: int, stream: str
) -> None:
    args = (position, "0b7e0a52-7a59-4c2e-a8d4-2b8c7c7f6a10", "NumberIssued", stream)
    stamp = "2026-11-22T04:00:00.000001Z"
    assert canonical_event(*args, canonical_json(data), stamp) == canonical_json(
        event_body(*args, data, stamp)
    )
