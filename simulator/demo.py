"""The demo: three simulated stores issue documents through the real API.

Run from the checkout (``make demo``, or ``python -m simulator.demo --help``) against a
running ``concord serve``; it is not part of the installed coordinator.


The stores ``demo-blue``, ``demo-red`` and ``demo-orange`` are registered (or, when they
exist from an earlier run, given a fresh token) and issue generated invoices and credit
notes concurrently with the agent's own coordinator client: reserve, then confirm with the
document snapshot. Now and then a store releases its reservation instead, as the agent does
when writing the number into WHMCS fails, so the next reservation reuses the released
number and the sequence stays gapless. ``demo-red`` reports WHMCS's own sequential
numbering switched on in a heartbeat (a warning opens) and later off (it resolves).

One line is printed per number; at the end, the ledger head and the open warnings. A
newcomer sees numbers, warnings and the ledger move without a WHMCS at hand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from agent.client import CoordinatorClient, CoordinatorRefused, CoordinatorUnavailable
from concord_logs import configure_logging
from coordinator.settings import load_settings
from getfeed.snapshot import document
from simulator.generator import Row, StoreGenerator

STORE_NAMES = ("demo-blue", "demo-red", "demo-orange")
DRIFTING_STORE = "demo-red"  # reports WHMCS's sequential numbering on, then off
DEMO_AGENT_VERSION = "concord-demo"
RELEASE_SHARE = 0.12  # reservations released as if the WHMCS write had failed
CREDIT_NOTE_SHARE = 0.15
SEQUENTIAL_WARNING = "whmcs_sequential_numbering"


class DemoError(Exception):
    """Something the user must fix before the demo can run; the message says what."""


def find_operator_token(given: str | None, environ: Mapping[str, str], data_dir: Path) -> str:
    """--token, else $CONCORD_OPERATOR_TOKEN, else the token `concord serve` saved on first start."""
    if given:
        return given.strip()
    if environ.get("CONCORD_OPERATOR_TOKEN", "").strip():
        return environ["CONCORD_OPERATOR_TOKEN"].strip()
    saved = data_dir / "operator.token"
    try:
        token = saved.read_text().strip()
    except OSError:
        token = ""
    if not token:
        raise DemoError(
            f"no operator token: pass --token, set CONCORD_OPERATOR_TOKEN, or run "
            f"`concord serve` once so that it saves one to {saved}"
        )
    return token


class OperatorApi:
    """The coordinator API with the operator's token; errors become DemoError."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"}, timeout=aiohttp.ClientTimeout(total=30)
        )

    async def close(self) -> None:
        await self._session.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self._session.request(method, self.url + path, json=body) as resp:
                payload = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DemoError(
                f"cannot reach the coordinator at {self.url} "
                f"({exc or type(exc).__name__}); start it with `concord serve` "
                "or pass --url"
            ) from None
        if status in (401, 403):
            raise DemoError(
                f"the coordinator at {self.url} refused the operator token "
                f"(HTTP {status}); pass an operator token with --token"
            )
        if status >= 400:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise DemoError(f"{method} {path} failed with HTTP {status}: {error.get('message', payload)}")
        return payload

    async def open_warnings(self) -> list[dict[str, Any]]:
        return list((await self.call("GET", "/v1/warnings?state=open"))["warnings"])


@dataclass
class DemoStore:
    name: str
    peer_id: str
    token: str
    generator: StoreGenerator
    clients: dict[int, Row]
    issued: int = 0
    released: int = 0
    lines: list[str] = field(default_factory=list)


@dataclass
class DemoRun:
    api: OperatorApi
    out: TextIO
    first_doc_id: int
    released_numbers: set[tuple[str, str, int]] = field(default_factory=set)
    next_doc_id: int = 0

    def new_doc_id(self) -> int:
        doc_id = self.first_doc_id + self.next_doc_id
        self.next_doc_id += 1
        return doc_id

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


async def register_stores(api: OperatorApi, seed: int, today: date) -> list[DemoStore]:
    """Register the demo stores, or rotate the token of those an earlier run registered."""
    existing = {p["name"]: p for p in (await api.call("GET", "/v1/peers"))["peers"]}
    stores = []
    for name in STORE_NAMES:
        peer = existing.get(name)
        if peer is None:
            made = await api.call("POST", "/v1/peers", {"name": name, "url": f"http://{name}.invalid"})
        elif peer["state"] == "active":
            made = await api.call("POST", f"/v1/peers/{peer['peer_id']}/rotate-token")
        else:
            raise DemoError(
                f"store {name} is retired, so the demo cannot use it; run the "
                "demo against a fresh coordinator database"
            )
        generator = StoreGenerator(seed, name, clients=10, invoices=40, today=today, days=60)
        clients = {row["id"]: row for row in generator.base()["tblclients"]}
        stores.append(DemoStore(name, made["peer_id"], made["token"], generator, clients))
    return stores


def _snapshot(doctype: str, formatted: str, doc_id: int, store: DemoStore, rows: Any) -> dict[str, Any]:
    """The ClientData/DocData the agent would build from these WHMCS rows."""
    invoice = {**rows.invoice, "id": doc_id}
    items = [{**item, "id": doc_id * 100 + n} for n, item in enumerate(rows.items, start=1)]
    return document(
        doctype, formatted, invoice, items, store.clients.get(invoice["userid"], {}), rows.snapshot, []
    )


async def _report_sequential(run: DemoRun, store: DemoStore, client: CoordinatorClient, on: bool) -> None:
    await client.heartbeat(DEMO_AGENT_VERSION, {"SequentialInvoiceNumbering": "on" if on else ""})
    open_ = [
        w
        for w in await run.api.open_warnings()
        if w["code"] == SEQUENTIAL_WARNING and w["subject"] == store.peer_id
    ]
    if on:
        shown = open_[0]["message"] if open_ else "(no warning yet)"
        run.say(
            f"{store.name:<12} heartbeat: WHMCS sequential numbering ON  -> warning "
            f"{SEQUENTIAL_WARNING}: {shown}"
        )
    else:
        state = "still open" if open_ else "resolved"
        run.say(
            f"{store.name:<12} heartbeat: WHMCS sequential numbering OFF -> warning "
            f"{SEQUENTIAL_WARNING} {state}"
        )


async def _issue_one(
    run: DemoRun, store: DemoStore, client: CoordinatorClient, rng: random.Random, force_release: bool
) -> None:
    credit_note = rng.random() < CREDIT_NOTE_SHARE
    rows = store.generator.new_invoice(status="Paid", credit_note=credit_note, date=store.generator.today)
    doctype = "creditnote" if rows.credit_note else "invoice"
    doc_id = run.new_doc_id()
    release_first = force_release or rng.random() < RELEASE_SHARE
    while True:
        reservation = await client.reserve(doctype, str(doc_id), rows.invoice["date"])
        key = (reservation["series"], reservation["period"], reservation["number"])
        reused = key in run.released_numbers
        run.released_numbers.discard(key)
        if release_first:
            release_first = False
            run.released_numbers.add(key)  # before the release: another store may take it at once
            await client.release(reservation["reservation_id"], "demo: simulated failed write to WHMCS")
            store.released += 1
            run.say(
                f"{store.name:<12} {doctype:<10} #{doc_id:<10} {reservation['formatted']:<14}"
                " released: writing to WHMCS failed (simulated); the number returns to the "
                "pool"
            )
            continue
        issued = await client.confirm(
            reservation["reservation_id"], _snapshot(doctype, reservation["formatted"], doc_id, store, rows)
        )
        store.issued += 1
        note = "  (reused a released number)" if reused else ""
        run.say(
            f"{store.name:<12} {doctype:<10} #{doc_id:<10} {issued['formatted']:<14}"
            f" ledger position {issued['receipt']['position']}{note}"
        )
        return


async def _store_worker(run: DemoRun, store: DemoStore, share: int, seed: int) -> None:
    rng = random.Random(f"{seed}:{store.name}:choices")
    drifting = store.name == DRIFTING_STORE
    on_at = share // 3
    off_at = max(on_at + 1, (2 * share) // 3)
    async with CoordinatorClient(run.api.url, store.token, patience=15.0) as client:
        for index in range(share):
            if drifting and index == on_at:
                await _report_sequential(run, store, client, on=True)
            if drifting and index == off_at:
                await _report_sequential(run, store, client, on=False)
            # The third store's second document always fails once, so a reuse is visible.
            force_release = store.name == STORE_NAMES[2] and index == 1
            await _issue_one(run, store, client, rng, force_release)
            await asyncio.sleep(rng.uniform(0.0, 0.05))  # stores interleave
        if drifting and off_at >= share:
            if on_at >= share:
                await _report_sequential(run, store, client, on=True)
            await _report_sequential(run, store, client, on=False)


def shares(documents: int, stores: int) -> list[int]:
    """``documents`` split as evenly as possible over ``stores``."""
    return [documents // stores + (1 if i < documents % stores else 0) for i in range(stores)]


async def run_demo(url: str, token: str, documents: int, seed: int | None, out: TextIO = sys.stdout) -> int:
    if documents < 1:
        raise DemoError("--documents must be at least 1")
    seed = seed if seed is not None else random.randrange(1, 10**6)
    api = OperatorApi(url, token)
    try:
        await api.call("GET", "/v1/peers")  # reachable, and the token is an operator's
        stores = await register_stores(api, seed, date.today())
        # Document ids continue from the clock: every run issues new documents.
        run = DemoRun(api, out, first_doc_id=int(time.time() * 1000) % 10**9)
        series = (await api.call("GET", "/v1/series"))["series"]
        formats = ", ".join(f"{s['name']} {s['settings']['format']!r}" for s in series)
        run.say(
            f"demo: {documents} documents from {', '.join(STORE_NAMES)} "
            f"(seed {seed}) at {api.url}; formats: {formats}"
        )
        run.say(f"{'store':<12} {'doctype':<10} {'document':<11} {'number':<14} ledger")
        try:
            await asyncio.gather(
                *(
                    _store_worker(run, store, share, seed)
                    for store, share in zip(stores, shares(documents, len(stores)), strict=True)
                )
            )
        except CoordinatorRefused as exc:
            raise DemoError(f"the coordinator refused a demo request: {exc}") from None
        except CoordinatorUnavailable as exc:
            raise DemoError(f"the coordinator stopped answering: {exc}") from None
        head = (await api.call("GET", "/healthz"))["ledger"]
        warnings = await api.open_warnings()
    finally:
        await api.close()
    per_store = Counter({s.name: s.issued for s in stores})
    released = sum(s.released for s in stores)
    run.say("")
    run.say(
        f"issued {sum(per_store.values())} numbers ("
        + ", ".join(f"{name} {per_store[name]}" for name in STORE_NAMES)
        + f"); {released} reservation(s) released and their numbers handed out again"
    )
    run.say(f"ledger head: position {head['position']}, hash {head['hash']}")
    run.say(f"open warnings: {len(warnings)}")
    for warning in warnings:
        run.say(f"  {warning['code']}: {warning['message']}")
    run.say(
        f"note: {DRIFTING_STORE} sent heartbeats and now sends none, so the coordinator "
        "will report it silent (peer_silent) after three missed heartbeats."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="the coordinator's TOML settings file")
    parser.add_argument("--url", help="the coordinator (default: http://CONCORD_HOST:CONCORD_PORT)")
    parser.add_argument(
        "--token",
        help="operator token (default: $CONCORD_OPERATOR_TOKEN, else "
        "the operator.token that `concord serve` saved in CONCORD_DATA_DIR)",
    )
    parser.add_argument("--documents", type=int, default=60, help="how many documents to issue")
    parser.add_argument("--seed", type=int, help="seed of the generated documents")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # The coordinator's own settings: where it listens and where it saved the operator token.
        settings = load_settings(args.config)
    except (FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"demo: {exc}\n")
        return 2
    configure_logging(json=settings.log_json, level=settings.log_level)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = args.url or f"http://{host}:{settings.port}"
    try:
        token = find_operator_token(args.token, os.environ, settings.data_dir)
        return asyncio.run(run_demo(url, token, args.documents, args.seed))
    except DemoError as exc:
        sys.stderr.write(f"demo: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
