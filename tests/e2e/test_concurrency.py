"""Two coordinator processes on one database under concurrent load, and SIGKILL in the middle.

Twenty clients (four stores) reserve, confirm and release numbers through both replicas
at once, retry requests with the same body and ``event_id``, and repeat reservations of
documents that already hold one. Afterwards the ledger itself is checked, not only the
projections: positions 1..N with an intact hash chain, every receipt a client was given is
in it, and replaying its events shows per series and period the numbers
``start, start+increment, …`` with no hole and no duplicate, lowest released number reused
first, and at most one number per document at any time. The second test SIGKILLs each
replica once mid-load and restarts it; nothing acknowledged may be lost or handed out twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from coordinator.events.canonical import event_body, format_recorded_at
from tests.conftest import Tokens, bearer
from tests.support.coordinator_process import CoordinatorProcess

CLIENTS = 20
STORES = ("north", "south", "east", "west")
DATES = ("2025-02-14", "2025-12-31", "2026-01-01", "2026-07-15")
CREDITNOTE_SHARE = 0.2  # documents that are credit notes
RELEASE_SHARE = 0.15  # documents whose first reservation is released and reserved again later
RETRY_SHARE = 0.06  # answers the client asks for again with the very same request
REPEAT_SHARE = 0.04  # reservations asked for again with a new request
RACE_SHARE = 0.03  # reservations sent to both replicas at the same moment
WITHOUT_EVENT_ID = 0.25  # requests relying on (store, doctype, doc_id) / state idempotency
MAX_ATTEMPTS = 300  # per request; a broken connection or a 503 means: send it again
LOAD_SECONDS = 120  # hard bound on the load phase

INVOICE = {"reset": "yearly", "start": 1000, "increment": 2, "format": "INV-{YEAR}-{NUMBER:6}"}
CREDIT_DEDICATED = {
    "reset": "never",
    "start": 7,
    "increment": 3,
    "format": "CN-{STORE}-{NUMBER}",
    "dedicated": True,
}
CREDIT_SHARED = {"dedicated": False, "format": "CN-{YEAR}-{NUMBER:6}"}


# -- the scenario ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Series settings and what they imply for a document's counter and formatted number."""

    creditnote: dict[str, Any]

    @property
    def shared(self) -> bool:
        return self.creditnote.get("dedicated") is False

    def counter(self, doctype: str, day: str) -> tuple[str, str]:
        if doctype == "invoice" or self.shared:
            return "invoice", day[:4]  # invoice resets yearly
        return "creditnote", "all"

    def formatted(self, doctype: str, number: int, day: str, store: str) -> str:
        if doctype == "invoice":
            return f"INV-{day[:4]}-{number:06d}"
        if self.shared:
            return f"CN-{day[:4]}-{number:06d}"
        return f"CN-{store}-{number}"


@dataclass
class Store:
    name: str
    peer_id: str
    token: str


@dataclass
class Doc:
    store: Store
    doctype: str
    doc_id: str
    date: str
    releases_left: int  # times the document's reservation is released before it is confirmed

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.store.peer_id, self.doctype, self.doc_id)

    def body(self) -> dict[str, Any]:
        return {"doctype": self.doctype, "doc_id": self.doc_id, "date": self.date}

    def document(self) -> dict[str, Any]:
        return {
            "ClientData": {"Name": f"Client of {self.doc_id}", "Country": "NL"},
            "DocData": {"Id": self.doc_id, "Date": self.date, "Total": "121.00"},
        }


@dataclass
class Stats:
    requests: int = 0
    resent: int = 0  # sends after a broken connection, a timeout or a 503
    broken: int = 0  # connections cut while the request was in flight
    retries_checked: int = 0
    repeats_checked: int = 0
    races_checked: int = 0
    released: int = 0
    confirmed: int = 0
    unavailable: int = 0  # 503 answers (each must carry Retry-After)
    slowest: float = 0.0  # seconds of the longest request: none may hang


@dataclass
class Load:
    """Twenty clients driving the replicas, and everything they were told."""

    urls: list[str]
    scenario: Scenario
    seed: int
    stats: Stats = field(default_factory=Stats)
    problems: list[str] = field(default_factory=list)
    reserved: dict[str, dict[str, Any]] = field(default_factory=dict)  # acknowledged answers
    confirmed: dict[str, dict[str, Any]] = field(default_factory=dict)
    released: dict[str, dict[str, Any]] = field(default_factory=dict)
    receipts: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    final: dict[tuple[str, str, str], str] = field(default_factory=dict)  # doc -> reservation
    docs: list[Doc] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)  # the replicas' logs, to explain a failure
    _milestones: list[tuple[int, asyncio.Event]] = field(default_factory=list)
    _answered: dict[str, asyncio.Event] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    async def confirmed_at_least(self, count: int) -> None:
        """Wait until the clients have had ``count`` confirms acknowledged."""
        reached = asyncio.Event()
        self._milestones.append((count, reached))
        self._progress()
        await reached.wait()

    async def answered_by(self, url: str) -> None:
        """Wait for the next answer a client accepts from the replica at ``url``."""
        answered = self._answered[url] = asyncio.Event()
        await answered.wait()

    def _progress(self) -> None:
        for count, reached in self._milestones:
            if self.stats.confirmed >= count:
                reached.set()

    # -- talking to the coordinators -----------------------------------------------------

    async def send(
        self,
        session: aiohttp.ClientSession,
        rng: random.Random,
        path: str,
        body: dict[str, Any],
        token: str,
        expect: tuple[int, ...],
        first_url: str | None = None,
    ) -> tuple[int, dict[str, Any], bool]:
        """POST until a replica answers; returns (status, body, whether it was sent again).

        A 503 or a connection error means "not acknowledged": the same request goes again,
        to any replica. Any status outside ``expect`` fails the test at once.
        """
        resent = False
        for attempt in range(MAX_ATTEMPTS):
            url = first_url if attempt == 0 and first_url else rng.choice(self.urls)
            self.stats.requests += 1
            request_id = uuid.uuid4().hex
            headers = {**bearer(token), "X-Request-Id": request_id}
            sent_at = time.monotonic()
            try:
                async with session.post(url + path, json=body, headers=headers) as resp:
                    status, raw = resp.status, await resp.read()
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
                    self.stats.broken += 1
                self.stats.resent += 1
                resent = True
                await asyncio.sleep(0.02 + 0.05 * rng.random())
                continue
            try:
                payload = json.loads(raw)
            except ValueError:
                raise AssertionError(f"POST {path} {body} -> {status}: not JSON: {raw[:300]!r}") from None
            self.stats.slowest = max(self.stats.slowest, time.monotonic() - sent_at)
            if status == 503:
                self.stats.unavailable += 1
                if retry_after is None:
                    self.problem(f"POST {path}: 503 without Retry-After: {payload}")
                self.stats.resent += 1
                resent = True
                await asyncio.sleep(0.02 + 0.05 * rng.random())
                continue
            if status not in expect:
                raise AssertionError(
                    f"POST {url}{path} {body} -> {status} {payload} "
                    f"(expected {expect}){self.logged(request_id)}"
                )
            if (answered := self._answered.pop(url, None)) is not None:
                answered.set()
            return status, payload, resent
        raise AssertionError(f"POST {path} {body}: no answer after {MAX_ATTEMPTS} attempts")

    def logged(self, request_id: str) -> str:
        """What the replicas logged about one request (its error, if any)."""
        found = []
        for path in self.logs:
            for line in path.read_text(errors="replace").splitlines():
                if request_id not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    found.append(line[-800:])
                    continue
                tail = str(entry.get("exception", "")).strip().splitlines()[-3:]
                found.append(f"{entry.get('event')}: {' | '.join(tail)}")
        return "".join(f"\n  {path_line}" for path_line in found)

    # -- one client ----------------------------------------------------------------------

    async def client(self, index: int, docs: list[Doc]) -> None:
        rng = random.Random(self.seed * 1000 + index)
        queue = deque(docs)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while queue:
                doc = queue.popleft()
                answer = await self.reserve(session, rng, doc)
                if doc.releases_left > 0:
                    doc.releases_left -= 1
                    await self.release(session, rng, doc, answer)
                    queue.append(doc)  # reserved again later: its number waits in the pool
                    continue
                await self.confirm(session, rng, doc, answer)

    @staticmethod
    def _event_id(rng: random.Random) -> dict[str, str]:
        return {} if rng.random() < WITHOUT_EVENT_ID else {"event_id": str(uuid.uuid4())}

    def _check_reservation(self, doc: Doc, answer: dict[str, Any], state: str, what: str) -> None:
        series, period = self.scenario.counter(doc.doctype, doc.date)
        expected = {
            "peer_id": doc.store.peer_id,
            "doctype": doc.doctype,
            "doc_id": doc.doc_id,
            "date": doc.date,
            "series": series,
            "period": period,
            "state": state,
        }
        wrong = {k: (answer.get(k), v) for k, v in expected.items() if answer.get(k) != v}
        if not isinstance(answer.get("number"), int):
            wrong["number"] = (answer.get("number"), "an integer")
        elif answer.get("formatted") != (
            text := self.scenario.formatted(doc.doctype, answer["number"], doc.date, doc.store.name)
        ):
            wrong["formatted"] = (answer.get("formatted"), text)
        if wrong:
            self.problem(f"{what} {doc.doc_id}: answer {answer} has (got, expected) {wrong}")

    def _same(self, what: str, doc: Doc, first: dict[str, Any], again: dict[str, Any]) -> None:
        if first != again:
            self.problem(f"{what} of {doc.doc_id} answered differently:\n  first {first}\n  again {again}")

    @staticmethod
    def _not_lost(status: int, reservation: dict[str, Any], answer: dict[str, Any]) -> None:
        if status == 404:
            raise AssertionError(
                f"an acknowledged reservation was lost: {reservation['formatted']} "
                f"({reservation['reservation_id']}, receipt {reservation['receipt']}) is unknown "
                f"to the coordinator now: {answer}"
            )

    async def reserve(self, session: aiohttp.ClientSession, rng: random.Random, doc: Doc) -> dict[str, Any]:
        token = doc.store.token
        body = {**doc.body(), **self._event_id(rng)}
        if rng.random() < RACE_SHARE:
            # The same document asked for through both replicas at once (two requests).
            other = {**doc.body(), **self._event_id(rng)}
            (s1, answer, r1), (s2, twin, r2) = await asyncio.gather(
                self.send(session, rng, "/v1/reservations", body, token, (200, 201), self.urls[0]),
                self.send(session, rng, "/v1/reservations", other, token, (200, 201), self.urls[-1]),
            )
            self.stats.races_checked += 1
            if answer["reservation_id"] != twin["reservation_id"] or answer["number"] != twin["number"]:
                self.problem(
                    f"simultaneous reservations of {doc.doc_id} got two numbers: {answer} and {twin}"
                )
            elif not (r1 or r2) and sorted((s1, s2)) != [200, 201]:
                self.problem(
                    f"simultaneous reservations of {doc.doc_id}: statuses {s1}, {s2}; "
                    "expected one 201 and one 200"
                )
            status, resent = (201 if 201 in (s1, s2) else 200), r1 or r2
        else:
            status, answer, resent = await self.send(
                session, rng, "/v1/reservations", body, token, (200, 201)
            )
        if not resent and status != 201:
            self.problem(
                f"first reservation of {doc.doc_id} (no active one) answered {status}, not 201: {answer}"
            )
        self._check_reservation(doc, answer, "reserved", "reserve")
        rid = answer["reservation_id"]
        if rid in self.reserved:
            self.problem(
                f"reserving {doc.doc_id} again after its release returned the released reservation {rid}"
            )
        self.reserved[rid] = answer
        self.receipts.append(("reserved", rid, answer["receipt"]))
        if rng.random() < RETRY_SHARE:  # the answer got lost: the very same request again
            self.stats.retries_checked += 1
            _, again, _ = await self.send(session, rng, "/v1/reservations", body, token, (200, 201))
            self._same("a retried reservation", doc, answer, again)
        if rng.random() < REPEAT_SHARE:  # another request for a document holding a number
            self.stats.repeats_checked += 1
            again = await self.repeat(session, rng, doc, answer)
            self._same("a repeated reservation", doc, answer, again)
        return answer

    async def repeat(
        self, session: aiohttp.ClientSession, rng: random.Random, doc: Doc, held: dict[str, Any]
    ) -> dict[str, Any]:
        """A new request to reserve a document that holds ``held``: must answer with it."""
        status, again, _ = await self.send(
            session,
            rng,
            "/v1/reservations",
            {**doc.body(), **self._event_id(rng)},
            doc.store.token,
            (200, 201),
        )
        if status == 201:
            raise AssertionError(
                f"an acknowledged reservation was lost: {doc.doc_id} holds {held['formatted']} "
                f"({held['reservation_id']}, receipt {held['receipt']}), yet reserving it again "
                f"created {again['formatted']} ({again['reservation_id']})"
            )
        return again

    async def confirm(
        self, session: aiohttp.ClientSession, rng: random.Random, doc: Doc, reservation: dict[str, Any]
    ) -> None:
        rid = reservation["reservation_id"]
        path = f"/v1/reservations/{rid}/confirm"
        body = {"document": doc.document(), **self._event_id(rng)}
        status, answer, _ = await self.send(session, rng, path, body, doc.store.token, (200, 404))
        self._not_lost(status, reservation, answer)
        self._check_reservation(doc, answer, "issued", "confirm")
        if (answer.get("reservation_id"), answer.get("number")) != (rid, reservation["number"]):
            self.problem(f"confirming {rid} ({doc.doc_id}) answered {answer}")
        self.confirmed[rid] = answer
        self.final[doc.key] = rid
        self.receipts.append(("issued", rid, answer["receipt"]))
        self.stats.confirmed += 1
        self._progress()
        if rng.random() < RETRY_SHARE:
            self.stats.retries_checked += 1
            _, again, _ = await self.send(session, rng, path, body, doc.store.token, (200,))
            self._same("a retried confirm", doc, answer, again)
        if rng.random() < REPEAT_SHARE:  # idempotent on the document, also after confirm
            self.stats.repeats_checked += 1
            again = await self.repeat(session, rng, doc, answer)
            self._same("a reservation repeated after confirm", doc, answer, again)

    async def release(
        self, session: aiohttp.ClientSession, rng: random.Random, doc: Doc, reservation: dict[str, Any]
    ) -> None:
        rid = reservation["reservation_id"]
        path = f"/v1/reservations/{rid}/release"
        body = {"reason": "WHMCS write failed", **self._event_id(rng)}
        status, answer, _ = await self.send(session, rng, path, body, doc.store.token, (200, 404))
        self._not_lost(status, reservation, answer)
        self._check_reservation(doc, answer, "released", "release")
        if (answer.get("reservation_id"), answer.get("number")) != (rid, reservation["number"]):
            self.problem(f"releasing {rid} ({doc.doc_id}) answered {answer}")
        self.released[rid] = answer
        self.receipts.append(("released", rid, answer["receipt"]))
        self.stats.released += 1
        if rng.random() < RETRY_SHARE:
            self.stats.retries_checked += 1
            _, again, _ = await self.send(session, rng, path, body, doc.store.token, (200,))
            self._same("a retried release", doc, answer, again)


# -- set-up ------------------------------------------------------------------------------


async def _operator(url: str, method: str, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, json=body, headers=bearer(token)) as resp,
    ):
        payload = await resp.json()
        assert resp.status in (200, 201), f"{method} {path} {body} -> {resp.status} {payload}"
        return payload


async def _prepare(
    replicas: list[CoordinatorProcess], tokens: Tokens, scenario: Scenario, docs_per_client: int, seed: int
) -> Load:
    """Series settings through one replica, stores through the other, then the documents."""
    a, b = replicas[0].url, replicas[1].url
    await _operator(a, "PUT", "/v1/series/invoice", tokens.operator, INVOICE)
    await _operator(a, "PUT", "/v1/series/creditnote", tokens.operator, scenario.creditnote)
    stores = []
    for name in STORES:
        peer = await _operator(
            b, "POST", "/v1/peers", tokens.operator, {"name": name, "url": f"http://{name}.example:8701"}
        )
        stores.append(Store(name, peer["peer_id"], peer["token"]))
    load = Load(urls=[a, b], scenario=scenario, seed=seed, logs=[p.log_path for p in replicas])
    rng = random.Random(seed)
    for client in range(CLIENTS):
        for k in range(docs_per_client):
            releases = 0
            if rng.random() < RELEASE_SHARE:
                releases = 2 if rng.random() < 0.15 else 1
            load.docs.append(
                Doc(
                    store=stores[client % len(stores)],
                    doctype="creditnote" if rng.random() < CREDITNOTE_SHARE else "invoice",
                    doc_id=f"c{client:02d}-{k:04d}",
                    date=rng.choice(DATES),
                    releases_left=releases,
                )
            )
    return load


def _client_docs(load: Load) -> list[list[Doc]]:
    per_client: list[list[Doc]] = [[] for _ in range(CLIENTS)]
    for doc in load.docs:
        per_client[int(doc.doc_id[1:3])].append(doc)
    return per_client


# -- checking the ledger -----------------------------------------------------------------


def _chain_hash(prev: bytes, body: dict[str, Any]) -> bytes:
    """docs/design.md §3: sha256(prev_hash ‖ canonical JSON: sorted keys, no whitespace, UTF-8)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(prev + canonical.encode()).digest()


def _ranges(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:15])
    return f"[{shown}{', …' if len(numbers) > 15 else ''}] ({len(numbers)})"


@dataclass
class Replayed:
    """What the event stream says, independent of the projections."""

    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)
    pool: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    fresh: Counter[tuple[str, str]] = field(default_factory=Counter)
    settings: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "invoice": {"start": 1, "increment": 1},
            "creditnote": {"start": 1, "increment": 1},
        }
    )

    def expected(self, series: str, period: str) -> list[int]:
        s = self.settings[series]
        return [s["start"] + k * s["increment"] for k in range(self.fresh[(series, period)])]


def _check_chain(events: list[asyncpg.Record], problems: list[str]) -> None:
    prev = bytes(32)
    for expected_position, e in enumerate(events, start=1):
        if e["position"] != expected_position:
            problems.append(f"ledger positions jump from {expected_position - 1} to {e['position']}")
            return
        if bytes(e["prev_hash"]) != prev:
            problems.append(f"event {e['position']}: prev_hash does not match the hash before it")
        body = event_body(
            e["position"],
            e["event_id"],
            e["type"],
            e["stream"],
            json.loads(e["data"]),
            format_recorded_at(e["recorded_at"]),
        )
        if _chain_hash(prev, body) != bytes(e["hash"]):
            problems.append(f"event {e['position']} ({e['type']}): hash does not verify")
        prev = bytes(e["hash"])


def _replay(events: list[asyncpg.Record], problems: list[str]) -> Replayed:
    out = Replayed()
    holder: dict[tuple[str, str, int], str] = {}
    active: dict[tuple[str, str, str], str] = {}
    for e in events:
        data, pos = json.loads(e["data"]), e["position"]
        if e["type"] == "SeriesConfigured":
            out.settings[data["series"]] = data["settings"]
        elif e["type"] == "NumberReserved":
            counter = (data["series"], data["period"])
            number, rid = data["number"], data["reservation_id"]
            doc = (data["peer_id"], data["doctype"], data["doc_id"])
            if (*counter, number) in holder:
                problems.append(
                    f"event {pos}: {counter} number {number} handed out twice "
                    f"(held by {holder[(*counter, number)]}, again to {rid})"
                )
            if doc in active:
                problems.append(
                    f"event {pos}: document {doc} got a second number while holding {active[doc]}"
                )
            pool = out.pool[counter]
            if data["from_pool"]:
                if number not in pool:
                    problems.append(
                        f"event {pos}: {counter} {number} 'from the pool' was not "
                        f"released; pool {_ranges(sorted(pool))}"
                    )
                elif number != min(pool):
                    problems.append(
                        f"event {pos}: {counter} took {number} from the pool, not the lowest {min(pool)}"
                    )
                pool.discard(number)
            else:
                if pool:
                    problems.append(
                        f"event {pos}: {counter} handed out new number {number} "
                        f"while {_ranges(sorted(pool))} waited in the pool"
                    )
                want = out.expected(*counter)
                s = out.settings[counter[0]]
                want_next = s["start"] + len(want) * s["increment"]
                if number != want_next:
                    problems.append(
                        f"event {pos}: {counter} handed out {number}, the next number was {want_next}"
                    )
                out.fresh[counter] += 1
            holder[(*counter, number)] = rid
            active[doc] = rid
            out.reservations[rid] = {
                "state": "reserved",
                "series": counter[0],
                "period": counter[1],
                "number": number,
                "doc": doc,
                "formatted": data["formatted"],
                "date": data["date"],
            }
        elif e["type"] in ("NumberIssued", "NumberReleased", "NumberVoided"):
            rid = data["reservation_id"]
            r = out.reservations.get(rid)
            if r is None:
                problems.append(f"event {pos}: {e['type']} of unknown reservation {rid}")
                continue
            allowed = {
                "NumberIssued": ("reserved",),
                "NumberReleased": ("reserved",),
                "NumberVoided": ("reserved", "issued"),
            }[e["type"]]
            if r["state"] not in allowed:
                problems.append(f"event {pos}: {e['type']} of {rid}, which was {r['state']}")
            if data.get("number", r["number"]) != r["number"]:
                problems.append(
                    f"event {pos}: {e['type']} of {rid} names number "
                    f"{data['number']}, reserved was {r['number']}"
                )
            r["state"] = {"NumberIssued": "issued", "NumberReleased": "released", "NumberVoided": "void"}[
                e["type"]
            ]
            if e["type"] == "NumberReleased":
                holder.pop((r["series"], r["period"], r["number"]), None)
                active.pop(r["doc"], None)
                out.pool[(r["series"], r["period"])].add(r["number"])
    for counter in sorted(set(out.fresh) | {k for k, v in out.pool.items() if v}):
        held = sorted(n for (s, p, n) in holder if (s, p) == counter)
        handed = sorted(held + sorted(out.pool[counter]))
        want = out.expected(*counter)
        if handed != want:
            missing = sorted(set(want) - set(handed))
            extra = sorted(set(handed) - set(want))
            doubled = sorted(n for n, c in Counter(handed).items() if c > 1)
            problems.append(
                f"{counter}: holes {_ranges(missing)}, outside the sequence "
                f"{_ranges(extra)}, duplicates {_ranges(doubled)}"
            )
    return out


async def verify(database_url: str, load: Load) -> tuple[list[str], dict[str, int]]:
    """Every invariant of docs/design.md §2/§3 and everything the clients were told, against the DB."""
    problems = list(load.problems)
    conn = await asyncpg.connect(database_url)
    try:
        events = await conn.fetch(
            "SELECT position, event_id::text, type, stream, data::text AS data, recorded_at,"
            " prev_hash, hash FROM events ORDER BY position"
        )
        reservations = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id::text, peer_id::text, doctype, doc_id, series, period, number, formatted,"
                " doc_date, state FROM reservations"
            )
        }
        pool_rows = await conn.fetch("SELECT series, period, number FROM released_numbers")
        counters = {
            (r["series"], r["period"]): r["next"]
            for r in await conn.fetch("SELECT series, period, next FROM counters")
        }
        documents = {
            (r["peer_id"], r["doctype"], r["doc_id"]): r
            for r in await conn.fetch(
                "SELECT peer_id::text, doctype, doc_id, reservation_id::text, number, formatted,"
                " snapshot::text AS snapshot, voided FROM documents"
            )
        }
        names = {r["id"]: r["name"] for r in await conn.fetch("SELECT id::text, name FROM peers")}
    finally:
        await conn.close()

    _check_chain(events, problems)
    replayed = _replay(events, problems)

    # Receipts: every acknowledged answer points at an event that is in the ledger unchanged.
    event_type = {"reserved": "NumberReserved", "issued": "NumberIssued", "released": "NumberReleased"}
    for state, rid, receipt in load.receipts:
        pos = receipt["position"]
        e = events[pos - 1] if 0 < pos <= len(events) else None
        if e is None or bytes(e["hash"]).hex() != receipt["hash"]:
            problems.append(f"receipt {receipt} of {state} {rid} is not in the ledger")
        elif e["type"] != event_type[state] or json.loads(e["data"])["reservation_id"] != rid:
            problems.append(f"receipt {receipt} of {state} {rid} points at {e['type']} {e['data']}")

    # The projections agree with the replay.
    projected = {rid: r["state"] for rid, r in reservations.items()}
    if projected != {rid: r["state"] for rid, r in replayed.reservations.items()}:
        differ = [
            rid
            for rid in set(projected) | set(replayed.reservations)
            if projected.get(rid) != replayed.reservations.get(rid, {}).get("state")
        ]
        problems.append(
            f"reservations table differs from the events for {len(differ)} reservations, e.g. {differ[:5]}"
        )
    pool_projected = {(r["series"], r["period"], r["number"]) for r in pool_rows}
    pool_replayed = {(*k, n) for k, v in replayed.pool.items() for n in v}
    if pool_projected != pool_replayed:
        problems.append(
            f"released_numbers {sorted(pool_projected)[:10]} differ from the events' "
            f"pool {sorted(pool_replayed)[:10]}"
        )
    for (series, period), want in replayed.fresh.items():
        s = replayed.settings[series]
        if counters.get((series, period)) != s["start"] + want * s["increment"]:
            problems.append(
                f"counter {series} {period}: next {counters.get((series, period))},"
                f" expected {s['start'] + want * s['increment']}"
            )

    # Per series and period, every number start, start+increment, … is used exactly once.
    used: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in reservations.values():
        if r["state"] != "released":
            used[(r["series"], r["period"])].append(r["number"])
    for counter in sorted(set(used) | set(replayed.fresh)):
        want = replayed.expected(*counter)
        got = sorted(used[counter])
        if got != want:
            problems.append(
                f"{counter}: numbers in use are not exactly start, start+increment, …: holes "
                f"{_ranges(sorted(set(want) - set(got)))}, duplicates "
                f"{_ranges(sorted(n for n, c in Counter(got).items() if c > 1))}, outside "
                f"{_ranges(sorted(set(got) - set(want)))}"
            )
    per_doc = Counter(
        (r["peer_id"], r["doctype"], r["doc_id"]) for r in reservations.values() if r["state"] != "released"
    )
    if doubled := [k for k, c in per_doc.items() if c > 1]:
        problems.append(f"documents holding more than one number: {doubled[:5]}")
    for rid, r in reservations.items():
        day = r["doc_date"].isoformat()
        text = load.scenario.formatted(r["doctype"], r["number"], day, names[r["peer_id"]])
        if r["formatted"] != text:
            problems.append(f"reservation {rid}: formatted {r['formatted']!r}, expected {text!r}")

    # Everything acknowledged is there, as acknowledged.
    for what, acked, states in (
        ("reservation", load.reserved, ("reserved", "issued", "released")),
        ("confirm", load.confirmed, ("issued",)),
        ("release", load.released, ("released",)),
    ):
        for rid, answer in acked.items():
            r = reservations.get(rid)
            if r is None:
                problems.append(f"acknowledged {what} {rid} ({answer['formatted']}) is lost")
            elif (r["series"], r["period"], r["number"], r["formatted"]) != (
                answer["series"],
                answer["period"],
                answer["number"],
                answer["formatted"],
            ):
                problems.append(f"acknowledged {what} {rid} was {answer}, the ledger has {dict(r)}")
            elif r["state"] not in states:
                problems.append(f"acknowledged {what} {rid} is {r['state']} in the ledger")
    for doc in load.docs:
        rid = load.final.get(doc.key)
        d = documents.get(doc.key)
        if rid is None:
            problems.append(f"document {doc.doc_id} was never confirmed by its client")
        elif (
            d is None
            or d["reservation_id"] != rid
            or d["number"] != load.confirmed[rid]["number"]
            or json.loads(d["snapshot"]) != doc.document()
        ):
            problems.append(
                f"document {doc.doc_id}: confirmed as {load.confirmed[rid]}, the "
                f"documents table has {dict(d) if d else None}"
            )

    # Every released number was reserved again later, so nothing may wait in the pool, and
    # every document is issued: nothing is left reserved.
    if pool_rows:
        problems.append(
            f"{len(pool_rows)} numbers left in the pool although every release "
            "was followed by a new reservation in the same series and period"
        )
    issued = sum(1 for r in reservations.values() if r["state"] == "issued")
    left = [rid for rid, r in reservations.items() if r["state"] == "reserved"]
    if left:
        problems.append(f"{len(left)} reservations left pending: {left[:5]}")
    if issued != len(load.docs):
        problems.append(f"{issued} numbers issued for {len(load.docs)} documents")
    summary = {
        "events": len(events),
        "issued": issued,
        "reservations": len(reservations),
        "counters": len(counters),
    }
    return problems, summary


def _report(problems: list[str], load: Load, summary: dict[str, int], seconds: float) -> str:
    shown = "\n".join(f"- {p}" for p in problems[:40])
    more = f"\n… and {len(problems) - 40} more" if len(problems) > 40 else ""
    return (
        f"{len(problems)} problems (seed {load.seed}, {seconds:.1f}s, {load.stats}, "
        f"{summary}):\n{shown}{more}"
    )


async def _run(load: Load, extra: Callable[[], Any] | None = None) -> float:
    started = time.monotonic()
    async with asyncio.timeout(LOAD_SECONDS), asyncio.TaskGroup() as group:
        for index, docs in enumerate(_client_docs(load)):
            group.create_task(load.client(index, docs))
        if extra is not None:
            group.create_task(extra())
    return time.monotonic() - started


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_two_replicas_twenty_clients_gapless(
    replicas: list[CoordinatorProcess],
    tokens: Tokens,
    database_url: str,
) -> None:
    seed = random.randrange(1 << 30)
    scenario = Scenario(creditnote=CREDIT_DEDICATED)
    load = await _prepare(replicas, tokens, scenario, docs_per_client=250, seed=seed)
    seconds = await _run(load)

    problems, summary = await verify(database_url, load)
    assert not problems, _report(problems, load, summary, seconds)
    assert summary["issued"] >= 5000
    # Each series and period the scenario spans really was used (not vacuous).
    counters = {scenario.counter(d.doctype, d.date) for d in load.docs}
    assert counters == {("invoice", "2025"), ("invoice", "2026"), ("creditnote", "all")}
    assert load.stats.released > 500 and load.stats.retries_checked > 300
    assert load.stats.races_checked > 50 and load.stats.repeats_checked > 200
    assert load.stats.resent == 0, f"nothing crashed, yet requests were resent: {load.stats}"
    print(f"\n{seconds:.1f}s seed {seed} {load.stats} {summary}")


@pytest.mark.slow
async def test_sigkill_replicas_mid_load_loses_nothing(
    replicas: list[CoordinatorProcess],
    tokens: Tokens,
    database_url: str,
) -> None:
    seed = random.randrange(1 << 30)
    scenario = Scenario(creditnote=CREDIT_SHARED)  # credit notes draw from the invoice counter
    load = await _prepare(replicas, tokens, scenario, docs_per_client=250, seed=seed)
    total = len(load.docs)
    rng = random.Random(seed)
    kills: list[tuple[str, int, int]] = []  # (replica, documents confirmed, pid)

    async def crash_each_replica_once() -> None:
        for proc, share in ((replicas[0], rng.uniform(0.3, 0.45)), (replicas[1], rng.uniform(0.55, 0.7))):
            await load.confirmed_at_least(int(share * total))
            # Right after it acknowledged something: an answer sent before its transaction
            # was durable would be lost now.
            await load.answered_by(proc.url)
            kills.append((proc.name, load.stats.confirmed, proc.pid or 0))
            proc.kill()
            await asyncio.sleep(0.3)  # clients meet a dead port and go to the other replica
            await proc.start()
            assert proc.starts == 2

    seconds = await _run(load, crash_each_replica_once)

    problems, summary = await verify(database_url, load)
    assert not problems, _report(problems, load, summary, seconds)
    assert [name for name, _, _ in kills] == ["coordinator-a", "coordinator-b"]
    assert all(0 < done < total for _, done, _ in kills), kills
    # The kills cut requests in flight: the test saw unacknowledged work, and recovered.
    assert load.stats.broken > 0 and load.stats.resent > 0, load.stats
    assert summary["issued"] == total >= 5000
    print(f"\n{seconds:.1f}s seed {seed} kills {kills} {load.stats} {summary}")


async def test_retry_with_event_id_later_on_other_replica_gets_the_original_answer(
    replicas: list[CoordinatorProcess],
    tokens: Tokens,
) -> None:
    """An agent that never saw an answer (or a proxy that resends) retries with the same
    ``event_id`` after the reservation moved on, through the other replica: it must get the
    answer of that request: same reservation, number, text, and the receipt of its event."""
    a, b = replicas[0].url, replicas[1].url
    await _operator(a, "PUT", "/v1/series/invoice", tokens.operator, INVOICE)
    store = await _operator(
        b, "POST", "/v1/peers", tokens.operator, {"name": "late", "url": "http://late.example:8701"}
    )
    token = store["token"]
    fields = ("reservation_id", "number", "formatted", "series", "period", "receipt")
    mismatches: list[str] = []

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post(url: str, path: str, body: dict[str, Any], expect: int) -> dict[str, Any]:
            async with session.post(url + path, json=body, headers=bearer(token)) as resp:
                payload = await resp.json()
                assert resp.status == expect, f"POST {path} {body} -> {resp.status} {payload}"
                return payload

        for k in range(20):
            reserve = {
                "doctype": "invoice",
                "doc_id": f"late-{k}",
                "date": "2026-05-05",
                "event_id": str(uuid.uuid4()),
            }
            first = await post(a, "/v1/reservations", reserve, 201)
            rid = first["reservation_id"]
            if k % 2:
                confirm = {
                    "document": {"ClientData": {}, "DocData": {"Id": k}},
                    "event_id": str(uuid.uuid4()),
                }
                done = await post(b, f"/v1/reservations/{rid}/confirm", confirm, 200)
                again = await post(a, f"/v1/reservations/{rid}/confirm", confirm, 200)
                what = "confirmed"
            else:
                release = {"reason": "WHMCS write failed", "event_id": str(uuid.uuid4())}
                done = await post(b, f"/v1/reservations/{rid}/release", release, 200)
                reused = await post(
                    b,
                    "/v1/reservations",
                    {**reserve, "doc_id": f"late-{k}-next", "event_id": str(uuid.uuid4())},
                    201,
                )
                assert reused["number"] == first["number"], "released number not reused first"
                again = await post(a, f"/v1/reservations/{rid}/release", release, 200)
                what = "released and its number reused"
            if again != done:
                mismatches.append(f"retried {what} request answered {again}, first {done}")
            late = await post(b, "/v1/reservations", reserve, 200)
            if {f: late[f] for f in fields} != {f: first[f] for f in fields}:
                mismatches.append(
                    f"reservation retried with its event_id after it was {what}:\n"
                    f"  first { ({f: first[f] for f in fields}) }\n"
                    f"  retry { ({f: late[f] for f in fields}) }"
                )
    assert not mismatches, f"{len(mismatches)} retries got another answer:\n" + "\n".join(mismatches[:6])
