"""The export file format: the whole ledger as a file anyone can verify offline. Pure.

Format (JSON lines, UTF-8):

- line 1, the header: ``{"format":"concord-ledger-export/1","hash":"<head hash>","position":N}``
  in canonical JSON;
- then one line per event, in position order: ``{"event":<canonical event>,"hash":"<hex>"}``
  where ``<canonical event>`` is byte for byte what was hashed
  (``hash = sha256(previous hash ‖ canonical event)``, the first previous hash being 32 zero
  bytes).

So a verifier recomputes each hash from the bytes of the line without re-serialising
anything, and every byte of the file is either hashed or checked literally: a one-byte
change anywhere is detected.
"""

from __future__ import annotations

from coordinator.events.canonical import canonical_json

FORMAT = "concord-ledger-export/1"
LINE_PREFIX = b'{"event":'
HASH_KEY = b',"hash":"'
LINE_END = b'"}\n'
SUFFIX_LENGTH = len(HASH_KEY) + 64 + len(LINE_END)
HEX_AT = SUFFIX_LENGTH - len(HASH_KEY)  # a line's hash: line[-HEX_AT:-len(LINE_END)]


def stored_hash(line: bytes) -> bytes:
    """The hash an event line (or the suffix of one) carries; ValueError if it is not hex."""
    return bytes.fromhex(line[-HEX_AT : -len(LINE_END)].decode())


def header_line(position: int, hash_: bytes) -> bytes:
    return canonical_json({"format": FORMAT, "hash": hash_.hex(), "position": position}) + b"\n"


def event_line(body: bytes, hash_: bytes) -> bytes:
    return b"".join((LINE_PREFIX, body, HASH_KEY, hash_.hex().encode(), LINE_END))
