"""Canonical JSON and the ledger's hash chain.

Canonical JSON = sorted keys, no insignificant whitespace, UTF-8, and only values that
survive a round trip through PostgreSQL ``jsonb`` unchanged (strings, integers, booleans,
null, lists, objects). Floats are refused: ``jsonb`` may print them differently from
Python, which would break the chain on replay.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS_HASH = bytes(32)


class NotCanonical(ValueError):
    """A value that cannot be stored in the ledger byte-for-byte."""


# Deeper values are refused before anything walks or serialises them (orjson stops at 255).
MAX_DEPTH = 32
BIGINT = 2**63  # PostgreSQL's bigint holds -BIGINT … BIGINT - 1


def check_text(text: str, path: str, what: str = "text") -> None:
    """Raise NotCanonical for text PostgreSQL cannot store: NUL or a lone surrogate."""
    if "\x00" in text:
        raise NotCanonical(f"{path}: {what} may not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotCanonical(f"{path}: {what} is not valid Unicode (lone surrogate)") from None


def _check(value: Any, path: str, depth: int) -> None:
    if isinstance(value, str):
        check_text(value, path)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -BIGINT <= value < BIGINT:
            raise NotCanonical(f"{path}: integer out of range (at most 19 digits, {-BIGINT} … {BIGINT - 1})")
    elif isinstance(value, float):
        raise NotCanonical(
            f"{path}: numbers must be whole and at most 19 digits; decimal "
            'numbers must be sent as strings (e.g. "12.50")'
        )
    elif depth >= MAX_DEPTH:
        raise NotCanonical(f"{path}: nested deeper than {MAX_DEPTH} levels")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotCanonical(f"{path}: object keys must be strings")
            check_text(key, path, "an object key")
            _check(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1)
    else:
        raise NotCanonical(f"{path}: unsupported value of type {type(value).__name__}")


def _text_ok(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _canonical(value: Any, depth: int) -> bool:
    """``_check`` without building a path for every value: the walk every request body
    takes (a batch of 500 documents is tens of thousands of values); ``_check`` then names
    what is wrong. Exact types first: what JSON parsing yields."""
    kind = type(value)
    if kind is str:
        return _text_ok(value)
    if kind is dict:
        if depth >= MAX_DEPTH:
            return False
        for key, item in value.items():
            if type(key) is not str or not _text_ok(key) or not _canonical(item, depth + 1):
                return False
        return True
    if kind is list:
        if depth >= MAX_DEPTH:
            return False
        return all(_canonical(item, depth + 1) for item in value)
    if kind is int:
        number: int = value
        return -BIGINT <= number < BIGINT
    # Anything else (a float, a tuple, a Mapping) is for _check to decide and explain.
    return kind is bool or value is None


def ensure_canonical(value: Any, path: str = "data") -> None:
    """Raise NotCanonical, naming the offending path, if ``value`` cannot be hashed stably:
    text with NUL or a lone surrogate, an integer outside bigint, a float, or objects and
    lists nested more than MAX_DEPTH levels (``value`` itself is the first level)."""
    if not _canonical(value, 0):
        _check(value, path, 0)


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@functools.lru_cache(maxsize=256)  # every event and row of a batch shares one moment
def format_recorded_at(moment: datetime) -> str:
    """The one text form of an event's timestamp, as hashed and as shown."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(
    position: int, event_id: str, type_: str, stream: str, data: Any, recorded_at: str
) -> dict[str, Any]:
    """The part of an event the chain hash covers."""
    return {
        "position": position,
        "event_id": event_id,
        "type": type_,
        "stream": stream,
        "data": data,
        "recorded_at": recorded_at,
    }


def chain_hash(prev_hash: bytes, body: Mapping[str, Any]) -> bytes:
    """hash = sha256(prev_hash ‖ canonical JSON of the event)."""
    return hashlib.sha256(prev_hash + canonical_json(body)).digest()


def canonical_event(
    position: int, event_id: str, type_: str, stream: str, data_json: bytes, recorded_at: str
) -> bytes:
    """``canonical_json(event_body(...))`` built around data already in canonical JSON, so
    the writer serialises a large document once. Keys in sorted order."""
    return b"".join(
        (
            b'{"data":',
            data_json,
            b',"event_id":',
            orjson.dumps(event_id),
            b',"position":',
            str(position).encode(),
            b',"recorded_at":',
            orjson.dumps(recorded_at),
            b',"stream":',
            orjson.dumps(stream),
            b',"type":',
            orjson.dumps(type_),
            b"}",
        )
    )
