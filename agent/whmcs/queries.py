"""What the agent reads from and writes to WHMCS's database."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple, TypeVar

from asyncmy.errors import OperationalError

from agent.whmcs.database import in_transaction
from coordinator.events.canonical import canonical_json
from getfeed.snapshot import amount, document, moment, text

# What a change of an issued document means to us: status, payment, credit, totals and its
# transactions (a partial payment or refund leaves the invoice's row as it was). Used in
# queries that name the invoices table ``tblinvoices``, without an alias.
STATE_FINGERPRINT = (
    "MD5(CONCAT_WS('|', status, datepaid, duedate, credit, subtotal, tax, tax2, total,"
    " taxrate, taxrate2, paymentmethod, (SELECT CONCAT_WS(':', COUNT(*), MAX(a.id),"
    " SUM(a.amountin), SUM(a.amountout), SUM(a.fees)) FROM tblaccounts a"
    " WHERE a.invoiceid = tblinvoices.id)))"
)
_TRANSACTION_COLUMNS = "id, invoiceid, date, gateway, amountin, fees, amountout, transid, refundid"
_INVOICE_COLUMNS = (
    "id, userid, invoicenum, status, date, duedate,"
    " IF(datepaid < '1000-01-01', NULL, datepaid) AS datepaid, subtotal, credit, tax, tax2,"
    f" taxrate, taxrate2, total, paymentmethod, {STATE_FINGERPRINT} AS fingerprint"
)
_CLIENT_COLUMNS = (
    "id, firstname, lastname, companyname, email, address1, address2, city,"
    " state, postcode, country, phonenumber, tax_id, currency, taxexempt"
)
NUMBERING_SETTINGS = (
    "SequentialInvoiceNumbering",
    "SequentialInvoiceNumberFormat",
    "SequentialInvoiceNumberValue",
    "InvoiceIncrement",
    "TaxAutoResetPaidNumbering",
    "TaxCustomInvoiceNumbering",
    "TaxCustomInvoiceNumberFormat",
    "TaxNextCustomInvoiceNumber",
    "TaxAutoResetNumbering",
)


@dataclass(frozen=True)
class DueRules:
    """Which rows need a number now, from the series' ``assign_on`` and the credit-note rule."""

    invoice_on: str  # creation | payment
    creditnote_on: str
    credit_note_rule: str  # negative_total | none

    def doctype(self, total: Any) -> str:
        negative = self.credit_note_rule == "negative_total" and float(total or 0) < 0
        return "creditnote" if negative else "invoice"

    def is_due(self, doctype: str, status: str) -> bool:
        on = self.invoice_on if doctype == "invoice" else self.creditnote_on
        if on == "payment":
            return status in ("Paid", "Refunded")  # Refunded: it was paid first
        return status != "Draft"

    def due_sql(self) -> str:
        """``is_due`` of ``doctype(total)`` as an SQL condition on a tblinvoices row, so that
        a long tail of unpaid documents never hides the paid ones behind a LIMIT."""

        def status_due(on: str) -> str:
            return "status IN ('Paid', 'Refunded')" if on == "payment" else "status <> 'Draft'"

        if self.credit_note_rule != "negative_total":
            return status_due(self.invoice_on)
        return f"IF(total < 0, {status_due(self.creditnote_on)}, {status_due(self.invoice_on)})"


@dataclass(frozen=True)
class DueDocument:
    invoice_id: int
    doctype: str
    date: date


@dataclass(frozen=True)
class Snapshot:
    invoice_id: int
    doctype: str
    formatted: str
    fingerprint: str
    document: dict[str, Any]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.document)).hexdigest()


async def fetch(conn: Any, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


def _in(values: Iterable[Any]) -> tuple[str, list[Any]]:
    items = list(values)
    return ",".join(["%s"] * len(items)) or "NULL", items


async def due_documents(conn: Any, rules: DueRules, limit: int) -> list[DueDocument]:
    rows = await fetch(
        conn,
        "SELECT id, total, status, date FROM tblinvoices"
        f" WHERE invoicenum = '' AND status <> 'Draft' AND {rules.due_sql()}"
        " ORDER BY date, id LIMIT %s",
        (limit,),
    )
    due = []
    for row in rows:
        doctype = rules.doctype(row["total"])
        if rules.is_due(doctype, row["status"]) and isinstance(row["date"], date):
            due.append(DueDocument(row["id"], doctype, row["date"]))
    return due


# The snapshot's extension beside ClientData and DocData (not a field of the Get contract):
# the document's WHMCS transactions, which the KashFlow sync mirrors.
TRANSACTIONS = "Transactions"


def transaction(row: Mapping[str, Any]) -> dict[str, Any]:
    """One ``tblaccounts`` row as the snapshot reports it, in the contract's formats."""
    return {
        "ID": int(row["id"]),
        "Date": moment(row.get("date")),
        "Gateway": text(row.get("gateway")),
        "AmountIn": amount(row.get("amountin")),
        "Fees": amount(row.get("fees")),
        "AmountOut": amount(row.get("amountout")),
        "TransID": text(row.get("transid")),
        "RefundID": int(row.get("refundid") or 0),
    }


async def snapshots(
    conn: Any, invoice_ids: Sequence[int], rules: DueRules, has_invoicedata: bool
) -> dict[int, Snapshot]:
    """Build the ClientData/DocData of each invoice from its current rows."""
    if not invoice_ids:
        return {}
    marks, ids = _in(invoice_ids)
    invoices = await fetch(conn, f"SELECT {_INVOICE_COLUMNS} FROM tblinvoices WHERE id IN ({marks})", ids)
    items: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in await fetch(
        conn,
        "SELECT id, invoiceid, type, relid, description, amount, taxed FROM tblinvoiceitems"
        f" WHERE invoiceid IN ({marks}) ORDER BY id",
        ids,
    ):
        items[row["invoiceid"]].append(row)
    invoicedata: dict[int, dict[str, Any]] = {}
    if has_invoicedata:
        for row in await fetch(
            conn,
            "SELECT invoiceid, clientsdetails, customfields"
            f" FROM mod_invoicedata WHERE invoiceid IN ({marks})",
            ids,
        ):
            invoicedata[row["invoiceid"]] = row
    user_marks, user_ids = _in({row["userid"] for row in invoices})
    clients = {
        row["id"]: row
        for row in await fetch(
            conn, f"SELECT {_CLIENT_COLUMNS} FROM tblclients WHERE id IN ({user_marks})", user_ids
        )
    }
    transactions: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in await fetch(
        conn, f"SELECT {_TRANSACTION_COLUMNS} FROM tblaccounts WHERE invoiceid IN ({marks}) ORDER BY id", ids
    ):
        transactions[row["invoiceid"]].append(transaction(row))
    fields: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in await fetch(
        conn,
        "SELECT v.relid, f.id, f.fieldname, v.value FROM tblcustomfields f"
        " JOIN tblcustomfieldsvalues v ON v.fieldid = f.id"
        f" WHERE f.type = 'client' AND f.showinvoice = 'on' AND v.relid IN ({user_marks})"
        " ORDER BY f.id",
        user_ids,
    ):
        fields[row["relid"]].append(row)
    out = {}
    for inv in invoices:
        doctype = rules.doctype(inv["total"])
        out[inv["id"]] = Snapshot(
            invoice_id=inv["id"],
            doctype=doctype,
            formatted=inv["invoicenum"],
            fingerprint=inv["fingerprint"],
            document={
                **document(
                    doctype,
                    inv["invoicenum"],
                    inv,
                    items[inv["id"]],
                    clients.get(inv["userid"], {}),
                    invoicedata.get(inv["id"]),
                    fields[inv["userid"]],
                ),
                TRANSACTIONS: transactions[inv["id"]],
            },
        )
    return out


T = TypeVar("T")
LOCK_CONFLICTS = (1213, 1205)  # MySQL: deadlock found; lock wait timeout exceeded
WRITE_ATTEMPTS = 3


async def write_numbers(pool: Any, numbered: Mapping[int, Mapping[str, Any]]) -> dict[int, str]:
    """Write each invoice's number (invoice id -> its reservation), with its outbox row and
    receipt, all in one transaction; only an empty ``invoicenum`` is filled.

    Returns per invoice "written", "already" (this number was written before: a repeat), or
    the number the invoice carries from someone else ("" when the invoice is gone).
    """
    # It only fills empty numbers: running it again is safe.
    return await _again_on_lock_conflict(lambda: _write_numbers_once(pool, numbered))


async def _again_on_lock_conflict(run: Callable[[], Awaitable[T]]) -> T:
    """Run the transaction ``run`` again when InnoDB rolled it back whole (a deadlock victim,
    or a lock wait that timed out): only for transactions that may run twice."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return await run()
        except OperationalError as exc:
            if exc.args[0] not in LOCK_CONFLICTS or attempt == WRITE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _write_numbers_once(pool: Any, numbered: Mapping[int, Mapping[str, Any]]) -> dict[int, str]:
    marks, ids = _in(numbered)
    async with pool.acquire() as conn, in_transaction(conn) as cur:
        # Locked, in id order: what is empty now is still empty when written.
        await cur.execute(
            f"SELECT id, invoicenum FROM tblinvoices WHERE id IN ({marks}) ORDER BY id FOR UPDATE", ids
        )
        current = {row["id"]: row["invoicenum"] for row in await cur.fetchall()}
        empty = {i: r for i, r in numbered.items() if current.get(i) == ""}
        if empty:
            await _fill_numbers(cur, empty)
    return {
        i: "written" if i in empty else "already" if current.get(i) == r["formatted"] else current.get(i, "")
        for i, r in numbered.items()
    }


async def _fill_numbers(cur: Any, numbered: Mapping[int, Mapping[str, Any]]) -> None:
    marks, ids = _in(numbered)
    cases = " ".join(["WHEN %s THEN %s"] * len(numbered))
    await cur.execute(
        f"UPDATE tblinvoices SET invoicenum = CASE id {cases} END WHERE id IN ({marks}) AND invoicenum = ''",
        [v for i, r in numbered.items() for v in (i, r["formatted"])] + ids,
    )
    rows = ", ".join(["(%s, %s, %s, %s, NOW(6))"] * len(numbered))
    await cur.execute(
        "INSERT INTO mod_concord_outbox (reservation_id, invoice_id, doctype, formatted,"
        f" created_at) VALUES {rows} ON DUPLICATE KEY UPDATE created_at = created_at",
        [v for i, r in numbered.items() for v in (r["reservation_id"], i, r["doctype"], r["formatted"])],
    )
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, NOW(6))"] * len(numbered))
    await cur.execute(
        "INSERT INTO mod_concord_receipts (reservation_id, invoice_id, doctype, series, period,"
        " number, formatted, reserved_position, reserved_hash, received_at)"
        f" VALUES {rows} ON DUPLICATE KEY UPDATE received_at = received_at",
        [
            v
            for i, r in numbered.items()
            for v in (
                r["reservation_id"],
                i,
                r["doctype"],
                r["series"],
                r["period"],
                r["number"],
                r["formatted"],
                r["receipt"]["position"],
                r["receipt"]["hash"],
            )
        ],
    )


async def pending_outbox(conn: Any, limit: int) -> list[dict[str, Any]]:
    return await fetch(
        conn,
        "SELECT reservation_id, invoice_id, doctype, formatted FROM mod_concord_outbox"
        " WHERE confirmed_at IS NULL ORDER BY created_at LIMIT %s",
        (limit,),
    )


class Confirmed(NamedTuple):
    reservation_id: str
    snapshot: Snapshot
    receipt: Mapping[str, Any]  # the coordinator's {position, hash} of the NumberIssued


async def mark_confirmed(pool: Any, confirmed: Sequence[Confirmed]) -> None:
    """Record confirms the coordinator acknowledged, in one transaction; it sets what it sets
    whatever was there, so a run that InnoDB rolled back runs again."""
    if confirmed:
        await _again_on_lock_conflict(lambda: _mark_confirmed_once(pool, confirmed))


async def _mark_confirmed_once(pool: Any, confirmed: Sequence[Confirmed]) -> None:
    marks, rids = _in(c.reservation_id for c in confirmed)
    cases = " ".join(["WHEN %s THEN %s"] * len(confirmed))
    async with pool.acquire() as conn, in_transaction(conn) as cur:
        await cur.execute(
            f"UPDATE mod_concord_outbox SET confirmed_at = NOW(6) WHERE reservation_id IN ({marks})", rids
        )
        await cur.execute(
            f"UPDATE mod_concord_receipts SET issued_position = CASE reservation_id"
            f" {cases} END, issued_hash = CASE reservation_id {cases} END"
            f" WHERE reservation_id IN ({marks})",
            [v for c in confirmed for v in (c.reservation_id, c.receipt["position"])]
            + [v for c in confirmed for v in (c.reservation_id, c.receipt["hash"])]
            + rids,
        )
        await _remember_documents(cur, [c.snapshot for c in confirmed], "issued")


async def _remember_documents(cur: Any, snaps: Sequence[Snapshot], origin: str) -> None:
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, NOW(6))"] * len(snaps))
    await cur.execute(
        "INSERT INTO mod_concord_documents (invoice_id, doctype, formatted, origin,"
        f" state_fingerprint, snapshot_sha256, reported_at) VALUES {rows}"
        " ON DUPLICATE KEY UPDATE state_fingerprint = VALUES(state_fingerprint),"
        " snapshot_sha256 = VALUES(snapshot_sha256), reported_at = VALUES(reported_at)",
        [
            v
            for snap in snaps
            for v in (snap.invoice_id, snap.doctype, snap.formatted, origin, snap.fingerprint, snap.sha256)
        ],
    )


async def remember_documents(pool: Any, snaps: Iterable[Snapshot], origin: str) -> None:
    batch = list(snaps)
    if batch:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await _remember_documents(cur, batch, origin)


async def undo_number(pool: Any, reservation_id: str, invoice_id: int, formatted: str) -> None:
    """Take back a number whose reservation was released meanwhile (by an operator)."""
    async with pool.acquire() as conn, in_transaction(conn) as cur:
        await cur.execute(
            "UPDATE tblinvoices SET invoicenum = '' WHERE id = %s AND invoicenum = %s",
            (invoice_id, formatted),
        )
        await cur.execute("DELETE FROM mod_concord_outbox WHERE reservation_id = %s", (reservation_id,))


async def forget_outbox(pool: Any, reservation_id: str) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("DELETE FROM mod_concord_outbox WHERE reservation_id = %s", (reservation_id,))


async def changed_documents(conn: Any, limit: int) -> list[int]:
    """Issued documents whose status, payment, credit or totals changed since last reported."""
    rows = await fetch(
        conn,
        "SELECT tblinvoices.id FROM tblinvoices"
        " JOIN mod_concord_documents d ON d.invoice_id = tblinvoices.id"
        f" WHERE d.state_fingerprint <> {STATE_FINGERPRINT}"
        " ORDER BY tblinvoices.id LIMIT %s",
        (limit,),
    )
    return [row["id"] for row in rows]


async def known_documents(conn: Any, after_id: int, limit: int) -> list[dict[str, Any]]:
    return await fetch(
        conn,
        "SELECT invoice_id, snapshot_sha256 FROM mod_concord_documents"
        " WHERE invoice_id > %s ORDER BY invoice_id LIMIT %s",
        (after_id, limit),
    )


async def unknown_numbered(conn: Any, since: date | None, after_id: int, limit: int) -> list[int]:
    """Numbered invoices the coordinator does not know: candidates for the backfill."""
    rows = await fetch(
        conn,
        "SELECT i.id FROM tblinvoices i"
        " LEFT JOIN mod_concord_documents d ON d.invoice_id = i.id"
        " LEFT JOIN mod_concord_outbox o ON o.invoice_id = i.id"
        " WHERE i.invoicenum <> '' AND d.invoice_id IS NULL AND o.invoice_id IS NULL"
        " AND i.id > %s AND (%s IS NULL OR i.date >= %s) ORDER BY i.id LIMIT %s",
        (after_id, since, since, limit),
    )
    return [row["id"] for row in rows]


async def count_unknown_numbered(conn: Any, since: date | None) -> int:
    rows = await fetch(
        conn,
        "SELECT COUNT(*) AS n FROM tblinvoices i"
        " LEFT JOIN mod_concord_documents d ON d.invoice_id = i.id"
        " LEFT JOIN mod_concord_outbox o ON o.invoice_id = i.id"
        " WHERE i.invoicenum <> '' AND d.invoice_id IS NULL AND o.invoice_id IS NULL"
        " AND (%s IS NULL OR i.date >= %s)",
        (since, since),
    )
    return int(rows[0]["n"])


async def currencies(conn: Any) -> dict[str, str]:
    """The store's currencies, id (as text) -> ISO code, as WHMCS's Currencies page lists
    them: the coordinator matches them by code to what KashFlow knows."""
    rows = await fetch(conn, "SELECT id, code FROM tblcurrencies ORDER BY id")
    return {str(row["id"]): str(row["code"]).strip().upper() for row in rows}


async def has_table(conn: Any, name: str) -> bool:
    rows = await fetch(
        conn,
        "SELECT COUNT(*) AS n FROM information_schema.tables"
        " WHERE table_schema = DATABASE() AND table_name = %s",
        (name,),
    )
    return bool(rows[0]["n"])


async def configuration(conn: Any, names: Sequence[str]) -> dict[str, str]:
    """The tblconfiguration settings of these names that the store has."""
    marks, values = _in(names)
    rows = await fetch(
        conn, f"SELECT setting, value FROM tblconfiguration WHERE setting IN ({marks})", values
    )
    return {row["setting"]: str(row["value"]) for row in rows}


DUPLICATE_IDS = 20  # invoice ids reported per duplicate number


async def duplicate_numbers(conn: Any, limit: int) -> dict[str, list[int]]:
    """Formatted numbers that more than one tblinvoices row carries (WHMCS does not prevent
    it), the first ``limit`` by number: number -> its first ``DUPLICATE_IDS`` invoice ids.
    It reads the whole table (``invoicenum`` has no index): seconds at a million invoices,
    so not on every heartbeat."""
    rows = await fetch(
        conn,
        "SELECT CAST(invoicenum AS CHAR(255)) AS number,"
        " SUBSTRING_INDEX(GROUP_CONCAT(id ORDER BY id), ',', %s) AS ids FROM tblinvoices"
        " WHERE invoicenum <> '' GROUP BY number HAVING COUNT(*) > 1 ORDER BY number LIMIT %s",
        (DUPLICATE_IDS, limit),
    )
    return {row["number"]: [int(i) for i in str(row["ids"]).split(",")] for row in rows}
