"""The coordinator's VIES verdict cache, in PostgreSQL (the HTTP call: getfeed/http.py)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import asyncpg

from getfeed.vies import VatKey, Verdict


class PgVerdictCache:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self, keys: Collection[VatKey]) -> dict[VatKey, Verdict]:
        rows = await self._pool.fetch(
            "SELECT c.country, c.number, c.valid, c.checked_at FROM vies_cache c"
            " JOIN unnest($1::text[], $2::text[]) AS k(country, number)"
            " ON k.country = c.country AND k.number = c.number",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {(r["country"], r["number"]): Verdict(r["valid"], r["checked_at"]) for r in rows}

    async def save(self, verdicts: Mapping[VatKey, Verdict]) -> None:
        await self._pool.executemany(
            "INSERT INTO vies_cache (country, number, valid, checked_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (country, number) DO UPDATE SET valid = excluded.valid,"
            " checked_at = excluded.checked_at",
            [(k[0], k[1], v.valid, v.checked_at) for k, v in verdicts.items()],
        )
