"""One KashFlow sync run: read the ledger, then post due paid invoices, at most ``limit``.

For each invoice, in the order it was paid in the ledger: the customer (known digest → no
call; else look up by code, then update or insert), the invoice (unless already recorded),
then each of its WHMCS transactions not yet posted, in order: a payment for money in, a
negative payment for a refund. Before an insert an intent is committed; after it, the id.
An intent without an id means the insert may have happened: the invoice is looked up by its
customer reference, a payment among the invoice's payments by its note, before anything is
inserted again. Customers need no intent: their code is looked up before every insert.

Failures of one document are logged with KashFlow's StatusDetail, raised as a warning and
retried next run; the run goes on. A document KashFlow cannot take as it is (currency not
mapped or not in KashFlow, gateway not mapped) is held without a call and does not count
against the limit. An invoice no longer paid (nor refunded) before it reached KashFlow is
dropped with a warning, also without a call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import structlog

from coordinator.accounting import posting
from coordinator.accounting import queue as q
from coordinator.accounting.kashflow import (
    Currency,
    KashFlowClient,
    KashFlowError,
    KashFlowUnavailable,
)
from coordinator.accounting.options import CurrencyMap, SyncMapping, currency_codes
from coordinator.advisory_locks import KASHFLOW_SYNC as SYNC_LOCK  # one sync run at a time
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter

log = structlog.get_logger(__name__)

# After this many documents in a row got no answer, KashFlow is taken as down for this run.
MAX_UNANSWERED = 3


class Progress(Protocol):
    """What a run reports its progress to (a tqdm bar fits)."""

    def reset(self, total: float | None = None) -> None: ...

    def update(self, n: float | None = 1) -> bool | None: ...


class SyncBusy(Exception):
    """Another process holds the sync lock."""


@dataclass
class RunReport:
    posted: int = 0  # invoices now in KashFlow with all their transactions
    failed: int = 0  # retried next run
    held: int = 0  # waiting for a currency or gateway mapping
    dropped: int = 0  # not paid any more before they reached KashFlow, with a warning
    payments: int = 0  # incoming transactions now in KashFlow (inserted, or found again)
    refunds: int = 0  # refunds now in KashFlow as negative payments
    remaining: int = 0  # still due after this run

    def as_dict(self) -> dict[str, int]:
        return {
            "posted": self.posted,
            "failed": self.failed,
            "held": self.held,
            "dropped": self.dropped,
            "payments": self.payments,
            "refunds": self.refunds,
            "remaining": self.remaining,
        }


@contextlib.asynccontextmanager
async def sync_lock(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Held on one connection for the run; a crashed process loses it with its connection."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SYNC_LOCK):
            raise SyncBusy("a KashFlow sync is already running (another replica or CLI run)")
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", SYNC_LOCK)


async def run_sync(
    pool: asyncpg.Pool,
    writer: LedgerWriter,
    kashflow: KashFlowClient,
    mapping: SyncMapping,
    limit: int,
    progress: Progress | None = None,
) -> RunReport:
    """``progress`` is reset to the most documents the run will try, then updated after each
    one tried."""
    async with sync_lock(pool):
        return await _Run(pool, writer, kashflow, mapping, limit, progress).go()


@dataclass
class _Work:
    """What one due invoice needs in KashFlow; built without a call."""

    code: str  # customer code
    currency: Currency
    pending: list[posting.Movement]  # transactions to post now, in order
    recorded: dict[q.MovementKey, int | None]
    held: bool  # transactions after these wait for a gateway mapping


class _Run:
    def __init__(
        self,
        pool: asyncpg.Pool,
        writer: LedgerWriter,
        kashflow: KashFlowClient,
        mapping: SyncMapping,
        limit: int,
        progress: Progress | None,
    ) -> None:
        self.pool, self.writer, self.kashflow = pool, writer, kashflow
        self.mapping, self.limit, self.progress = mapping, limit, progress
        self.report = RunReport()
        # (warning code, subject) -> (message, documents held): raised once per run.
        self.holds: dict[tuple[str, str], tuple[str, int]] = {}
        self.prefixes: dict[str, str] = {}  # store -> customer-code prefix
        self.currency_codes: CurrencyMap = {}

    async def go(self) -> RunReport:
        await q.catch_up(self.pool)
        await self._report_changes_after_posting()
        self.currency_codes = currency_codes(await q.reported_currencies(self.pool), self.mapping.currencies)
        if self.progress is not None:
            self.progress.reset(total=min(self.limit, await q.count_due(self.pool)))
        try:
            currencies = await self.kashflow.currencies()
        except KashFlowError as exc:
            await self._warn("kashflow_unavailable", "sync", f"KashFlow sync could not start: {exc.detail}")
            raise
        tried = unanswered = 0
        async for doc in q.due(self.pool):
            if tried >= self.limit or unanswered >= MAX_UNANSWERED:
                break
            work = await self._prepare(doc, currencies)
            if work is None:
                continue
            tried += 1
            try:
                await self._post(doc, work)
                unanswered = 0
            except KashFlowError as exc:
                unanswered = unanswered + 1 if isinstance(exc, KashFlowUnavailable) else 0
                await self._failed(doc, exc)
            if self.progress is not None:
                self.progress.update(1)
        await self._raise_holds()
        await self._resolve_fixed_mappings(currencies)
        if unanswered >= MAX_UNANSWERED:
            await self._warn(
                "kashflow_unavailable",
                "sync",
                f"KashFlow did not answer {MAX_UNANSWERED} documents in a row; the "
                "run stopped early and goes on at the next run",
            )
        else:
            await self._resolve("kashflow_unavailable", "sync", "a later run got through")
        self.report.remaining = await q.count_due(self.pool)
        log.info("kashflow_sync_run", **self.report.as_dict())
        return self.report

    async def _prepare(self, doc: q.Due, currencies: dict[str, Currency]) -> _Work | None:
        """The work the document needs in KashFlow; None when it needs no call (settled,
        dropped, or held for a mapping)."""
        client, data = doc.snapshot.get("ClientData") or {}, doc.snapshot.get("DocData") or {}
        if doc.invoice_number is None and (doc.voided or data.get("Status") not in q.TAKEN_UP):
            await self._drop(
                doc,
                "voided in the ledger"
                if doc.voided
                else f"{data.get('Status') or 'without a status'} in WHMCS",
            )
            return None
        recorded = await q.recorded_movements(self.pool, doc)
        unposted = self._unposted(doc, recorded)
        pending = self._pending(doc, unposted)
        if doc.invoice_number is not None and not pending:
            if not unposted:
                await q.settle(self.pool, doc)
            return None
        whmcs_currency = str(client.get("Currency", ""))
        iso = self.currency_codes.get(doc.store, {}).get(whmcs_currency)
        if iso is None:
            self._hold(
                doc,
                "kashflow_currency_unmapped",
                f"{doc.store}/{whmcs_currency}",
                f"store {doc.store}: WHMCS currency id {whmcs_currency} is neither among the "
                "currencies its agent reports in the heartbeat nor in "
                f"kashflow_currencies.{doc.store}; its invoices are not posted to KashFlow",
            )
            return None
        currency = currencies.get(iso)
        if currency is None:
            self._hold(
                doc,
                "kashflow_currency_missing",
                iso,
                f"KashFlow has no currency {iso}: invoices in {iso} are not posted "
                "until it is added in KashFlow",
            )
            return None
        if doc.peer_id not in self.prefixes:
            self.prefixes[doc.peer_id] = await q.prefix_of(self.pool, doc.peer_id, doc.store)
        code = posting.customer_code(self.prefixes[doc.peer_id], int(client.get("UserID") or 0))
        return _Work(code, currency, pending, recorded, held=len(unposted) > len(pending))

    @staticmethod
    def _unposted(doc: q.Due, recorded: dict[q.MovementKey, int | None]) -> list[posting.Movement]:
        """The document's transactions without a KashFlow payment yet, in order.

        A whole payment of the total (transaction 0, begun for a snapshot without
        transactions, or by the sync before they were mirrored) stands for every incoming
        transaction; refunds are still posted. Begun but not known to be posted, it is
        finished (or found) first.
        """
        whole_begun = (0, "in") in recorded
        found = posting.movements(doc.snapshot)
        if whole_begun and recorded[(0, "in")] is None and all(m.transaction_id for m in found):
            whole = posting.whole_payment(doc.snapshot)
            found = [whole, *found] if whole else found
        return [
            m
            for m in found
            if recorded.get((m.transaction_id, m.direction)) is None
            and not (whole_begun and m.direction == "in" and m.transaction_id)
        ]

    def _pending(self, doc: q.Due, unposted: list[posting.Movement]) -> list[posting.Movement]:
        """What to post now: up to the first transaction whose gateway is not mapped (later
        ones wait for it: a refund never goes before its payment)."""
        for at, movement in enumerate(unposted):
            if movement.gateway not in self.mapping.gateways:
                self._hold_payment(doc, movement)
                return unposted[:at]
        return unposted

    async def _post(self, doc: q.Due, work: _Work) -> None:
        client, data = doc.snapshot["ClientData"], doc.snapshot["DocData"]
        customer_id = await self._customer(
            work.code, posting.customer_details(client, work.code, work.currency.id)
        )
        number = doc.invoice_number
        if number is None:
            number = await self._invoice(doc, customer_id, data, client, work.currency)
            await self._resolve("kashflow_document_dropped", doc.subject, "paid again and posted")
        for movement in work.pending:
            await self._movement(
                doc, number, movement, (movement.transaction_id, movement.direction) in work.recorded
            )
        if work.held:
            return  # the invoice is in KashFlow; a payment waits for its gateway's mapping
        await q.settle(self.pool, doc)
        if doc.failed_before:
            await self._resolve("kashflow_document_failed", doc.subject, "posted by a later run")
        self.report.posted += 1

    async def _customer(self, code: str, details: dict[str, Any]) -> int:
        digest = q.details_digest(details)
        known = await q.known_customer(self.pool, code)
        if known is not None and known["details_sha256"] == digest:
            return known["customer_id"]
        now = datetime.now(UTC)
        customer_id = known["customer_id"] if known else await self.kashflow.customer_id(code)
        if customer_id is None:
            customer_id = await self.kashflow.insert_customer(posting.customer_record(details, 0, now))
        else:
            await self.kashflow.update_customer(posting.customer_record(details, customer_id, now))
        await q.remember_customer(self.pool, code, customer_id, digest)
        return customer_id

    async def _invoice(
        self, doc: q.Due, customer_id: int, data: dict[str, Any], client: dict[str, Any], currency: Currency
    ) -> int:
        number = None
        if doc.invoice_intent:
            number = (await self.kashflow.invoice_numbers_for_customer(customer_id)).get(doc.formatted)
        if number is None:
            await q.intend_invoice(self.pool, doc)
            number = await self.kashflow.insert_invoice(
                posting.invoice_header(
                    data, doc.formatted, customer_id, currency.code, currency.exchange_rate
                ),
                posting.invoice_lines(data, client),
            )
        await q.record_invoice(self.pool, doc, number)
        doc.invoice_number = number
        return number

    async def _movement(self, doc: q.Due, number: int, movement: posting.Movement, intended: bool) -> None:
        """One payment or refund, once: after an intent without an id, KashFlow's payments
        of the invoice are searched for its note before anything is inserted."""
        key = posting.movement_key(doc.formatted, movement)
        payment_id = None
        if intended:
            payment_id = next(
                (
                    int(p["PayID"])
                    for p in await self.kashflow.payments(number)
                    if posting.is_note_of(str(p.get("PayNote") or ""), key)
                ),
                None,
            )
        if payment_id is None:
            await q.intend_movement(self.pool, doc, movement)
            gateway = self.mapping.gateways[movement.gateway]
            payment_id = await self.kashflow.insert_payment(
                posting.movement_payment(movement, doc.formatted, number, gateway.method, gateway.account)
            )
        await q.record_movement(self.pool, doc, movement, payment_id)
        if movement.direction == "in":
            self.report.payments += 1
        else:
            self.report.refunds += 1

    def _hold_payment(self, doc: q.Due, movement: posting.Movement) -> None:
        gateway = movement.gateway
        self._hold(
            doc,
            "kashflow_gateway_unmapped",
            gateway,
            f"WHMCS gateway {gateway!r} has no KashFlow payment method and bank account "
            f"in kashflow_gateways; payments made through it (first: {doc.formatted}) "
            "are not posted",
        )

    async def _drop(self, doc: q.Due, why: str) -> None:
        """An invoice that is not paid any more before it reached KashFlow: settled without
        a call, with a warning; it comes back if it is paid again."""
        self.report.dropped += 1
        log.warning("kashflow_document_dropped", document=doc.formatted, store=doc.store, why=why)
        await q.settle(self.pool, doc)
        await self._warn(
            "kashflow_document_dropped",
            doc.subject,
            f"invoice {doc.formatted} of store {doc.store} was paid, then {why} "
            "before the KashFlow sync ran: it is not posted to KashFlow. Should "
            "it be paid again, it is posted then.",
        )

    def _hold(self, doc: q.Due, code: str, subject: str, message: str) -> None:
        self.report.held += 1
        first, count = self.holds.get((code, subject), (message, 0))
        self.holds[(code, subject)] = (first, count + 1)

    async def _raise_holds(self) -> None:
        for (code, subject), (message, count) in self.holds.items():
            log.warning("kashflow_documents_held", reason=code, subject=subject, documents=count)
            await self._warn(code, subject, message)

    async def _resolve_fixed_mappings(self, currencies: dict[str, Currency]) -> None:
        """Mapping warnings whose cause is gone resolve themselves."""
        fixed = {
            "kashflow_gateway_unmapped": list(self.mapping.gateways),
            "kashflow_currency_unmapped": [
                f"{store}/{whmcs}" for store, ids in self.currency_codes.items() for whmcs in ids
            ],
            "kashflow_currency_missing": list(currencies),
        }
        for code, subjects in fixed.items():
            for subject in subjects:
                await self._resolve(code, subject, "mapping added")

    async def _failed(self, doc: q.Due, exc: KashFlowError) -> None:
        self.report.failed += 1
        log.warning(
            "kashflow_document_failed",
            document=doc.formatted,
            store=doc.store,
            operation=exc.operation,
            status_detail=exc.detail,
        )
        await q.record_failure(self.pool, doc, str(exc))
        await self._warn(
            "kashflow_document_failed",
            doc.subject,
            f"invoice {doc.formatted} of store {doc.store} was not posted to "
            f"KashFlow: {exc}. It is retried at the next run.",
        )

    async def _report_changes_after_posting(self) -> None:
        """KashFlow keeps the invoice as posted: its refunds follow as negative payments, but
        reversing the sale itself (a credit note) is for the accountant, and is warned about."""
        for row in await q.changed_after_posting(self.pool):
            await self._warn(
                "kashflow_changed_after_posting",
                f"{row['peer_id']}/invoice/{row['doc_id']}",
                f"invoice {row['formatted']} is {row['changed_status']} in WHMCS but was posted "
                f"to KashFlow (invoice {row['invoice_number']}); the sync posts its refunds as "
                "negative payments but does not change posted invoices: if the sale is "
                "reversed, raise a credit note in KashFlow",
            )
            await q.reported(self.pool, row["peer_id"], row["doc_id"], row["changed_status"])

    async def _warn(self, code: str, subject: str, message: str) -> None:
        await self.writer.execute(c.RaiseWarning(code=code, subject=subject, message=message))

    async def _resolve(self, code: str, subject: str, by: str) -> None:
        warning_id = await self.pool.fetchval(
            "SELECT id::text FROM warnings WHERE code = $1 AND subject = $2 AND state = 'open'", code, subject
        )
        if warning_id is not None:
            await self.writer.execute(c.ResolveWarning(warning_id=warning_id, by=f"kashflow sync: {by}"))
