"""PostgreSQL advisory-lock keys, each defined here once: "Concord" in ASCII, then one byte
naming the lock. SQL that takes a lock gets its key as a parameter."""

from __future__ import annotations

_CONCORD = 0x436F6E636F7264 << 8

LEDGER = _CONCORD | 0x00  # appends to the ledger: concord_open_batch, the audit's rebuild
MIGRATIONS = _CONCORD | 0x01  # applying migrations: replicas starting together
KASHFLOW_SYNC = _CONCORD | 0x6B  # one KashFlow sync run at a time ("k")
