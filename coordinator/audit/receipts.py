"""Receipts exported by the stores (`concord-agent receipts export DIR`), checked against the
ledger. A receipt is the ``{position, hash}`` the coordinator answered when it handed out or
confirmed a number; the store keeps it in its own database. A ledger rewritten from some
position on — even by a database superuser who disabled the append-only trigger and
recomputed every hash — no longer has those hashes at those positions.

File format (JSON lines, any number of ``*.jsonl`` files in the directory), one number per
line: ``{"store", "reservation_id", "invoice_id", "doctype", "series", "period", "number",
"formatted", "reserved": {"position", "hash"}, "issued": {"position", "hash"} | null}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from coordinator.audit.findings import Findings
from coordinator.events import catalogue as ev

_EVENT_OF = {"reserved": ev.NUMBER_RESERVED, "issued": ev.NUMBER_ISSUED}


@dataclass(frozen=True)
class Receipt:
    source: str  # file:line
    store: str
    reservation_id: str
    series: str
    period: str
    number: int
    formatted: str
    kind: str  # reserved | issued
    position: int
    hash: str


class ReceiptsError(ValueError):
    """A receipts directory or file that cannot be read."""


def load_receipts(directory: Path) -> list[Receipt]:
    if not directory.is_dir():
        raise ReceiptsError(f"{directory} is not a directory")
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise ReceiptsError(f"no receipt files (*.jsonl) in {directory}")
    receipts = []
    for path in files:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    receipts.extend(_parse(line, f"{path.name}:{number}"))
    return receipts


def _parse(line: bytes, source: str) -> list[Receipt]:
    try:
        row = orjson.loads(line)
        out = []
        for kind in ("reserved", "issued"):
            got = row.get(kind)
            if got is None:
                continue
            hash_ = str(got["hash"]).lower()
            bytes.fromhex(hash_)
            out.append(
                Receipt(
                    source=source,
                    store=str(row.get("store") or ""),
                    reservation_id=str(row["reservation_id"]),
                    series=str(row["series"]),
                    period=str(row["period"]),
                    number=int(row["number"]),
                    formatted=str(row["formatted"]),
                    kind=kind,
                    position=int(got["position"]),
                    hash=hash_,
                )
            )
        return out
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReceiptsError(f"{source}: not a receipt line ({exc})") from None


class ReceiptCheck:
    """Fed every event in order; each receipt is checked when its position goes by."""

    def __init__(self, findings: Findings, receipts: list[Receipt]) -> None:
        self.findings = findings
        self.count = len(receipts)
        self.by_position: dict[int, list[Receipt]] = {}
        for r in receipts:
            self.by_position.setdefault(r.position, []).append(r)

    def feed(self, position: int, hash_: bytes, type_: str, data: Any) -> None:
        for r in self.by_position.pop(position, ()):
            self._check(r, hash_, type_, data)

    def _fail(self, r: Receipt, message: str) -> None:
        self.findings(
            "receipts",
            f"{r.formatted} of store {r.store or '?'} ({r.source}, {r.kind} receipt): {message}",
            position=r.position,
            series=r.series,
            period=r.period,
            number=r.number,
        )

    def _check(self, r: Receipt, hash_: bytes, type_: str, data: Any) -> None:
        if hash_.hex() != r.hash:
            self._fail(
                r,
                f"the store was given hash {r.hash}, the ledger now has {hash_.hex()} "
                "here: the ledger was rewritten from this position on",
            )
            return
        if type_ != _EVENT_OF[r.kind]:
            self._fail(r, f"the event here is {type_}, not {_EVENT_OF[r.kind]}")
            return
        told = (r.reservation_id, r.series, r.period, r.number, r.formatted)
        recorded = tuple(data.get(k) for k in ("reservation_id", "series", "period", "number", "formatted"))
        if told != recorded:
            self._fail(r, f"the event records {recorded}, the store was told {told}")

    def finish(self, head: int) -> None:
        """Receipts past the end of the ledger: events the stores were given are gone."""
        for position in sorted(self.by_position):
            for r in self.by_position[position]:
                self._fail(
                    r, f"the ledger ends at position {head}: the event this receipt proves was removed"
                )
        self.by_position.clear()
