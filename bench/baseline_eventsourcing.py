"""Baseline (b): the ``eventsourcing`` library (PostgreSQL, psycopg 3) appending one event per number.

Each number is a new aggregate whose creation event carries the document snapshot; its
number is the event's position in the application sequence (the notification id), which the
library keeps in commit order by locking the events table for each append. A new aggregate
per number never hits an optimistic-concurrency conflict, so this is the library's best
case; a single counter aggregate would retry on conflicts and be slower.
The library is synchronous, so concurrency comes from threads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from bench.cpu import CpuMeter
from bench.load import DOCUMENT
from bench.postgres import MAX_CONNECTIONS, url_parts


class IssuedNumber(Aggregate):
    def __init__(self, doc_id: str, document: dict[str, Any]) -> None:
        self.doc_id = doc_id
        self.document = document


class Numbers(Application[Any]):
    def issue(self, doc_id: str) -> int:
        recordings = self.save(IssuedNumber(doc_id, DOCUMENT))
        return recordings[0].notification.id


def _env(url: str, connections: int) -> dict[str, str]:
    parts = url_parts(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.dbname,
        "POSTGRES_HOST": parts.host,
        "POSTGRES_PORT": parts.port,
        "POSTGRES_USER": parts.user,
        "POSTGRES_PASSWORD": parts.password,
        "POSTGRES_POOL_SIZE": str(connections),
        "POSTGRES_MAX_OVERFLOW": "0",
        "CREATE_TABLE": "y",
    }


def run(url: str, *, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    app = Numbers(env=_env(url, min(concurrency, MAX_CONNECTIONS)))
    count = errors = 0
    lock = threading.Lock()
    meter = CpuMeter(database=url_parts(url).dbname)
    try:
        app.issue("warm-up")  # creates the tables before the clock starts
        meter.start()
        begin = time.monotonic()
        window = (begin + warmup, begin + warmup + duration)

        def worker(index: int) -> None:
            nonlocal count, errors
            seq = 0
            while time.monotonic() < window[1]:
                seq += 1
                try:
                    app.issue(f"w{index}-{seq}")
                except Exception:  # any library error counts as a failed number
                    with lock:
                        errors += 1
                    continue
                if window[0] <= time.monotonic() <= window[1]:
                    with lock:
                        count += 1

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=warmup + duration + 60)
        cores = meter.stop()
    finally:
        app.close()
    return {"numbers": count, "window": duration, "errors": errors, "cores": cores}
