"""The VIES lookups of one feed answer (or one run of the billing monitor): which numbers
are asked, how many at a time, and what stands in when VIES gives no verdict.

No I/O of its own (the asker and the cache are handed in); asyncio only to ask a few
numbers at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from getfeed.vies import Ask, VatKey, Verdict, VerdictCache


class ViesLookup:
    """The VIES lookups of one feed answer.

    Cached verdicts younger than ``max_age`` are used as they are; other numbers are asked
    (``concurrency`` at a time, at most ``budget`` per answer). When VIES gives no verdict,
    an older cached verdict stands in; without one the number counts as unconfirmed. After
    the first failure the answer asks VIES no more, so an outage costs one timeout.
    ``ask`` None: VIES is switched off and only cached verdicts count.
    """

    def __init__(
        self,
        ask: Ask | None,
        cache: VerdictCache,
        *,
        max_age: timedelta,
        budget: int,
        now: Callable[[], datetime],
        concurrency: int = 4,
    ) -> None:
        self._ask = ask
        self._cache = cache
        self._max_age = max_age
        self._budget = budget
        self._now = now
        self._slots = asyncio.Semaphore(concurrency)
        self._known: dict[VatKey, bool] = {}
        self.failed = False

    async def confirmed(self, keys: Collection[VatKey]) -> set[VatKey]:
        wanted = {k for k in keys if k not in self._known}
        if wanted:
            cached = await self._cache.load(wanted)
            now = self._now()
            stale = sorted(k for k in wanted if k not in cached or now - cached[k].checked_at > self._max_age)
            answers = await self._ask_all(stale)
            fresh = {k: Verdict(v, now) for k, v in answers.items() if v is not None}
            if fresh:
                await self._cache.save(fresh)
            for key in wanted:
                verdict = fresh.get(key) or cached.get(key)
                self._known[key] = verdict.valid if verdict else False
        return {k for k in keys if self._known[k]}

    async def _ask_all(self, keys: Sequence[VatKey]) -> dict[VatKey, bool | None]:
        if self._ask is None or self.failed or not keys:
            return {}
        keys = keys[: self._budget]
        self._budget -= len(keys)
        ask = self._ask

        async def one(key: VatKey) -> bool | None:
            if self.failed:
                return None
            async with self._slots:
                if self.failed:
                    return None
                verdict = await ask(key)
            if verdict is None:
                self.failed = True
            return verdict

        return dict(zip(keys, await asyncio.gather(*(one(k) for k in keys)), strict=True))
