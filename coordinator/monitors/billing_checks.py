"""Billing-error checks on document snapshots: the warning system's second job in the Invoice
Sync seed ("also used to detect billing errors"). Pure: snapshots and facts in, findings out.

Each check gives a finding, a warning code with a message naming the store, the document
and the numbers involved, or nothing. The background monitor (coordinator/monitors/billing.py)
reads the snapshots from the ledger, runs these checks and raises or resolves the warnings.

How WHMCS computes a document's figures (``updateInvoiceTotal`` and ``WHMCS\\Billing\\Tax``),
which the checks recompute to the cent:

- Only items with ``Taxed`` are taxed, and only when tax support is on and the client is not
  tax exempt. Each amount is rounded half away from zero to the cent (``format_as_currency``,
  PHP's ``round($x, 2)``).
- Exclusive tax (rates as fractions): Tax = round(base * rate); Tax2 the same on the base,
  or with compound tax (``TaxL2Compound``) on base + Tax. Subtotal = the items' sum.
- Inclusive tax (prices include tax): Tax2 = round(base - base / (1 + rate2)) and Tax from
  what is left (compound), or both from base / (1 + rate + rate2) (not compound). Subtotal =
  the items' sum less the taxes.
- ``TaxPerLineItem`` on: each taxed item is taxed and rounded on its own and the results are
  added; off: the taxed items are added first and taxed once.

The snapshot does not say which of those settings the store uses: its agent reports them in
the heartbeat (coordinator/events/store_report.py). A setting not reported counts as unknown,
and a figure passes when any of WHMCS's ways gives it. WHMCS keeps tax rates with three
decimals, the snapshot with two: a rate with a second decimal may also be the three-decimal
rate ending in 5 that rounds to it (Québec's 9.975 % shows as 9.98, New York's 8.875 % as
8.88).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from coordinator.events.store_report import DUPLICATE_NUMBERS
from getfeed.europe import client_territory, vat_number, vies_key
from getfeed.vies import VatKey

ITEMS_SUBTOTAL = "billing_items_subtotal"
TAX = "billing_tax"
TAX2 = "billing_tax2"
TOTAL_SIGN = "billing_total_sign"
PAID_WITHOUT_DATE = "billing_paid_without_date"
DATE_ORDER = "billing_date_order"
VAT_REJECTED = "billing_vat_rejected"
DUPLICATE_NUMBER = "billing_duplicate_number"
# The codes of the checks that need only the snapshot itself.
SNAPSHOT_CODES = (ITEMS_SUBTOTAL, TAX, TAX2, TOTAL_SIGN, PAID_WITHOUT_DATE)

_CENT = Decimal("0.01")
_HALF_STEP = Decimal("0.005")
_HUNDRED = Decimal(100)
_LARGEST = Decimal("1e14")
_ON = ("on", "1", "true", "yes")
_LABELS = {"invoice": "invoice", "creditnote": "credit note"}


@dataclass(frozen=True)
class DocumentRef:
    """Which document a finding is about, as its message names it."""

    store: str
    doctype: str
    doc_id: str
    formatted: str

    def __str__(self) -> str:
        return f"store {self.store}, {self.label()}"

    def label(self) -> str:
        return f"{_LABELS.get(self.doctype, self.doctype)} {self.doc_id} ({self.formatted})"


@dataclass(frozen=True)
class TaxSettings:
    """How the store's WHMCS computes tax; None: not reported, so any of WHMCS's ways."""

    enabled: bool | None = None
    inclusive: bool | None = None
    compound: bool | None = None
    per_line: bool | None = None

    @classmethod
    def from_reported(cls, reported: Mapping[str, Any] | None) -> TaxSettings:
        def flag(name: str) -> bool | None:
            if not reported or name not in reported:
                return None
            return str(reported[name] or "").strip().lower() in _ON

        inclusive = None
        if reported and "TaxType" in reported:
            inclusive = str(reported["TaxType"] or "").strip().lower() == "inclusive"
        return cls(
            enabled=flag("TaxEnabled"),
            inclusive=inclusive,
            compound=flag("TaxL2Compound"),
            per_line=flag("TaxPerLineItem"),
        )

    def ways(self) -> tuple[_Way, ...]:
        """Every way of computing the known settings allow, the reported (or most common:
        exclusive, on the total, not compound) first."""
        return _ways(self.inclusive, self.per_line, self.compound)


@functools.cache  # 27 combinations at most; asked once per snapshot checked
def _ways(inclusive: bool | None, per_line: bool | None, compound: bool | None) -> tuple[_Way, ...]:
    def choices(value: bool | None) -> tuple[bool, ...]:
        return (value,) if value is not None else (False, True)

    combinations = itertools.product(choices(inclusive), choices(per_line), choices(compound))
    return tuple(_Way(i, c, p) for i, p, c in combinations)


@dataclass(frozen=True)
class _Way:
    inclusive: bool
    compound: bool
    per_line: bool

    def __str__(self) -> str:
        return (
            f"{'inclusive' if self.inclusive else 'exclusive'} tax"
            f"{', compound' if self.compound else ''}"
            f", {'per line item' if self.per_line else 'on the total'}"
        )


@dataclass(frozen=True)
class _Figures:
    subtotal: Decimal
    tax: Decimal
    tax2: Decimal


def whmcs_round(value: Decimal) -> Decimal:
    """WHMCS's ``format_as_currency``: to the cent, halves away from zero."""
    return value.quantize(_CENT, ROUND_HALF_UP)


def _decimal(value: Any) -> Decimal:
    """An amount or rate of the snapshot; 0 for what WHMCS's DECIMAL(16,2) cannot hold."""
    try:
        number = Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation:
        return Decimal(0)
    return number if number.is_finite() and abs(number) < _LARGEST else Decimal(0)


def _rate(value: Any) -> Decimal:
    """A tax rate in percent; WHMCS refuses rates above 100, so do we (and negative ones)."""
    rate = _decimal(value)
    return rate if 0 <= rate <= _HUNDRED else Decimal(0)


def _taxes(base: Decimal, rate1: Decimal, rate2: Decimal, way: _Way) -> tuple[Decimal, Decimal, Decimal]:
    """``WHMCS\\Billing\\Tax``: (total before taxes, Tax, Tax2) of one tax base."""
    m1, m2 = rate1 / _HUNDRED, rate2 / _HUNDRED
    if way.inclusive:
        if way.compound:
            tax2 = whmcs_round(base - base / (1 + m2))
            before_tax2 = base - tax2
            tax = whmcs_round(before_tax2 - before_tax2 / (1 + m1))
        else:
            before = base / (1 + m1 + m2)
            tax, tax2 = whmcs_round(before * m1), whmcs_round(before * m2)
        return whmcs_round(base - tax - tax2), tax, tax2
    tax = whmcs_round(base * m1)
    tax2 = whmcs_round((base + tax if way.compound else base) * m2)
    return whmcs_round(base), tax, tax2


def _figures(
    taxed: Sequence[Decimal], untaxed: Decimal, rate1: Decimal, rate2: Decimal, way: _Way
) -> _Figures:
    """``updateInvoiceTotal``: Subtotal, Tax and Tax2 from the items."""
    if way.per_line:
        parts = [_taxes(amount, rate1, rate2, way) for amount in taxed]
        before = sum((p[0] for p in parts), Decimal(0))
        tax = sum((p[1] for p in parts), Decimal(0))
        tax2 = sum((p[2] for p in parts), Decimal(0))
    else:
        before, tax, tax2 = _taxes(sum(taxed, Decimal(0)), rate1, rate2, way)
    return _Figures(whmcs_round(untaxed + before), tax, tax2)


def _rates(snapshot_rate: Decimal) -> list[Decimal]:
    """The rates the snapshot's two decimals may stand for: itself, and when it has a second
    decimal, the three-decimal rate ending in 5 that rounds (half up) to it (9.975 -> 9.98)."""
    if snapshot_rate % Decimal("0.1"):
        return [snapshot_rate, snapshot_rate - _HALF_STEP]
    return [snapshot_rate]


def _part(snapshot: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """ClientData or DocData; {} when the snapshot has none (the checks take any JSON)."""
    part = snapshot.get(name)
    return part if isinstance(part, Mapping) else {}


def snapshot_findings(doc: DocumentRef, snapshot: Mapping[str, Any], settings: TaxSettings) -> dict[str, str]:
    """The findings (code -> message) of the checks that need only the snapshot: items and
    Subtotal, Tax, Tax2, the sign of Total, Paid with a payment date."""
    data, client = _part(snapshot, "DocData"), _part(snapshot, "ClientData")
    found: dict[str, str] = {}
    listed = data.get("Items")
    items = [i for i in listed if isinstance(i, Mapping)] if isinstance(listed, list) else []
    amounts = [_decimal(i.get("Amount")) for i in items]
    exempt = str(client.get("TaxExempt", "0")) == "1"
    charged = settings.enabled is not False and not exempt
    taxed = [a for a, i in zip(amounts, items, strict=True) if charged and i.get("Taxed") is True]
    untaxed = sum(amounts, Decimal(0)) - sum(taxed, Decimal(0))
    subtotal, tax, tax2 = (_decimal(data.get(k)) for k in ("Subtotal", "Tax", "Tax2"))
    rate1, rate2 = _rate(data.get("TaxRate")), _rate(data.get("TaxRate2"))
    ways = settings.ways()
    rate_pairs = list(itertools.product(_rates(rate1), _rates(rate2)))  # the exact one first
    computed: dict[tuple[Decimal, Decimal, _Way], _Figures] = {}

    def figures(r1: Decimal, r2: Decimal, way: _Way) -> _Figures:
        if (r1, r2, way) not in computed:
            computed[r1, r2, way] = _figures(taxed, untaxed, r1, r2, way)
        return computed[r1, r2, way]

    def explained(field: str, value: Decimal) -> bool:
        return any(getattr(figures(r1, r2, way), field) == value for r1, r2 in rate_pairs for way in ways)

    expected = figures(rate1, rate2, ways[0])
    if not explained("subtotal", subtotal):
        found[ITEMS_SUBTOTAL] = (
            f"{doc}: Subtotal is {subtotal:.2f} but its {len(items)} items sum to "
            f"{whmcs_round(sum(amounts, Decimal(0))):.2f} (WHMCS, {ways[0]}, gives "
            f"{expected.subtotal:.2f})"
        )
    for code, field, value, rate, wanted in (
        (TAX, "Tax", tax, rate1, expected.tax),
        (TAX2, "Tax2", tax2, rate2, expected.tax2),
    ):
        if explained(field.lower(), value):
            continue
        if exempt:
            why = "the client is tax exempt"
        elif not taxed:
            why = "no item is taxed"
        else:
            why = f"the taxed items sum to {sum(taxed, Decimal(0)):.2f} at {rate:.2f} %"
        found[code] = f"{doc}: {field} is {value:.2f}, but {why}: WHMCS ({ways[0]}) gives {wanted:.2f}"
    total = _decimal(data.get("Total"))
    if doc.doctype == "creditnote" and total > 0:
        found[TOTAL_SIGN] = f"{doc}: a credit note with a positive Total, {total:.2f}"
    elif doc.doctype == "invoice" and total < 0:
        found[TOTAL_SIGN] = f"{doc}: an invoice with a negative Total, {total:.2f}"
    if str(data.get("Status") or "") == "Paid" and not str(data.get("DatePaid") or "").strip():
        found[PAID_WITHOUT_DATE] = f"{doc}: Status is Paid (Total {total:.2f}) but DatePaid is empty"
    return found


def document_date(snapshot: Mapping[str, Any]) -> str:
    """The document's ``Date`` (``YYYY-MM-DD``), "" when it has none."""
    return str(_part(snapshot, "DocData").get("Date") or "")


def date_order_finding(
    doc: DocumentRef, date: str, previous: DocumentRef, previous_date: str, series: str, period: str
) -> str | None:
    """A document dated before the document holding the previous number of its series in the
    same store: numbering out of date order, which several EU countries forbid. Dates are
    ``YYYY-MM-DD`` (an empty one is not compared)."""
    if not date or not previous_date or date >= previous_date:
        return None
    return (
        f"{doc} is dated {date}, before {previous.label()}, dated {previous_date}, which "
        f"holds the previous number of series {series} {period} in this store: the numbers "
        "are out of date order"
    )


def vat_to_check(snapshot: Mapping[str, Any]) -> tuple[str, VatKey | None] | None:
    """The VAT number of an EU client and its VIES key (None: no number VIES could accept),
    or None when there is nothing to ask VIES (no EU client, no VAT number)."""
    client = dict(_part(snapshot, "ClientData"))
    if not isinstance(client.get("CustomFields"), list):
        client["CustomFields"] = []
    place = client_territory(client)
    number = vat_number(client)
    if place is None or not number:
        return None
    return number, vies_key(number, place.member_state)


def vat_rejected_message(
    doc: DocumentRef, snapshot: Mapping[str, Any], number: str, key: VatKey | None
) -> str:
    client = _part(snapshot, "ClientData")
    who = str(client.get("CompanyName") or client.get("ClientName") or "").strip()
    name = f"client {client.get('UserID', '?')}" + (f" ({who})" if who else "")
    why = "VIES rejects it" if key is not None else "it is not written as a VAT number VIES can check"
    return f"{doc}: {name} in {client.get('Country', '')} has the VAT number {number}, and {why}"


def duplicate_numbers(reported: Mapping[str, Any] | None) -> dict[str, list[int]] | None:
    """The store's formatted numbers carried by more than one WHMCS document, as its agent
    reported them; None when the agent does not report them (an older agent)."""
    if not reported or not isinstance(reported.get(DUPLICATE_NUMBERS), Mapping):
        return None
    out: dict[str, list[int]] = {}
    for number, ids in reported[DUPLICATE_NUMBERS].items():
        if isinstance(ids, list):
            out[str(number)] = [i for i in ids if type(i) is int]
    return out


def duplicate_message(store: str, number: str, invoice_ids: Sequence[int]) -> str:
    return (
        f"store {store}: the number {number} is on {len(invoice_ids)} documents in WHMCS "
        f"(tblinvoices ids {', '.join(str(i) for i in invoice_ids)}); a number belongs to "
        "one document only"
    )
