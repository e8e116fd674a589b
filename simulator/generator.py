"""Realistic WHMCS store data for tests, benchmarks and the demo. Pure: no I/O.

Rows are dicts keyed by column name, values as the MariaDB driver returns them (DECIMAL as
`Decimal` with the column's scale, DATE as `date`, DATETIME as `datetime`, and a zero DATETIME as the
string `ZERO_DATETIME`). The same seed and store name always give the same data.

Invoice totals follow WHMCS: subtotal = sum of items; tax and tax2 are the rates applied to the
taxed items; total = subtotal + tax + tax2 - credit. Credit notes are invoice rows with negated
amounts, as billing add-ons store them.
"""

from __future__ import annotations

import copy
import json
import random
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

Row = dict[str, Any]

ZERO_DATETIME = "0000-00-00 00:00:00"

INVOICE_STATUSES = ("Draft", "Unpaid", "Paid", "Cancelled", "Refunded", "Collections", "Payment Pending")
ITEM_TYPES = (
    "Hosting",
    "Setup",
    "Domain",
    "DomainRegister",
    "DomainTransfer",
    "DomainRenew",
    "Upgrade",
    "Item",
    "Addon",
    "PromoHosting",
    "DomainGraceFee",
    "LateFee",
    "AddFunds",
    "Invoice",
    "",
)
GATEWAYS = ("paypal", "stripe", "banktransfer", "mailin")

# Load order: referenced rows first.
TABLES = (
    "tblcurrencies",
    "tblconfiguration",
    "tblclients",
    "tblcustomfields",
    "tblcustomfieldsvalues",
    "tblinvoices",
    "tblinvoiceitems",
    "tblaccounts",
    "mod_invoicedata",
)

VAT_NUMBER_FIELD = "VAT Number"

CENT = Decimal("0.01")
RATE_SCALE = Decimal("0.001")


def money(value: Decimal | int | str) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def tax_rate(value: Decimal | int | str) -> Decimal:
    return Decimal(value).quantize(RATE_SCALE, rounding=ROUND_HALF_UP)


# -- places ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """A town clients live in. `vat_rate` is None outside the EU VAT area."""

    country: str
    city: str
    state: str
    postcode: str  # pattern: '#' becomes a digit
    vat_rate: Decimal | None
    currency: str
    outermost: bool = False


def _p(
    country: str,
    city: str,
    state: str,
    postcode: str,
    rate: str | None,
    currency: str = "EUR",
    outermost: bool = False,
) -> Place:
    return Place(
        country, city, state, postcode, None if rate is None else tax_rate(rate), currency, outermost
    )


PLACES: tuple[Place, ...] = (
    _p("NL", "Amsterdam", "Noord-Holland", "10## AB", "21"),
    _p("NL", "Utrecht", "Utrecht", "35## CD", "21"),
    _p("DE", "Berlin", "Berlin", "10###", "19"),
    _p("DE", "München", "Bayern", "80###", "19"),
    _p("FR", "Paris", "Île-de-France", "75###", "20"),
    _p("FR", "Lyon", "Auvergne-Rhône-Alpes", "69###", "20"),
    _p("IT", "Milano", "MI", "20###", "22"),
    _p("IT", "Roma", "RM", "00###", "22"),
    _p("ES", "Madrid", "Madrid", "28###", "21"),
    _p("PT", "Lisboa", "Lisboa", "1###-###", "23"),
    _p("BE", "Bruxelles", "Bruxelles-Capitale", "1###", "21"),
    _p("AT", "Wien", "Wien", "1###", "20"),
    _p("IE", "Dublin", "Dublin", "D0# X###", "23"),
    _p("PL", "Warszawa", "Mazowieckie", "0#-###", "23"),
    _p("SE", "Stockholm", "Stockholms län", "1## ##", "25"),
    _p("DK", "København", "Hovedstaden", "1###", "25"),
    # Outermost regions and special territories.
    _p("GP", "Pointe-à-Pitre", "Guadeloupe", "971##", None, outermost=True),
    _p("MQ", "Fort-de-France", "Martinique", "972##", None, outermost=True),
    _p("GF", "Cayenne", "Guyane", "973##", None, outermost=True),
    _p("RE", "Saint-Denis", "La Réunion", "974##", None, outermost=True),
    _p("YT", "Mamoudzou", "Mayotte", "976##", None, outermost=True),
    _p("MF", "Marigot", "Saint-Martin", "97150", None, outermost=True),
    _p("ES", "Las Palmas de Gran Canaria", "Las Palmas", "35###", None, outermost=True),
    _p("ES", "Santa Cruz de Tenerife", "Santa Cruz de Tenerife", "38###", None, outermost=True),
    # Azores and Madeira are outermost regions inside the EU VAT area, with their own rates.
    _p("PT", "Ponta Delgada", "Açores", "95##-###", "16", outermost=True),
    _p("PT", "Funchal", "Madeira", "90##-###", "22", outermost=True),
    # Outside the EU.
    _p("US", "New York", "NY", "10###", None, "USD"),
    _p("US", "Austin", "TX", "73###", None, "USD"),
    _p("CA", "Montréal", "QC", "H2X #A#", None, "USD"),
    _p("CH", "Zürich", "ZH", "80##", None, "CHF"),
    _p("NO", "Oslo", "Oslo", "0###", None),
    _p("GB", "London", "Greater London", "EC1A #BB", None, "GBP"),
    _p("GB", "Manchester", "Greater Manchester", "M# #AB", None, "GBP"),
    _p("AG", "St. John's", "Saint John", "", None, "XCD"),
)

COUNTRY_NAMES = {
    "NL": "Netherlands",
    "DE": "Germany",
    "FR": "France",
    "IT": "Italy",
    "ES": "Spain",
    "PT": "Portugal",
    "BE": "Belgium",
    "AT": "Austria",
    "IE": "Ireland",
    "PL": "Poland",
    "SE": "Sweden",
    "DK": "Denmark",
    "GP": "Guadeloupe",
    "MQ": "Martinique",
    "GF": "French Guiana",
    "RE": "Reunion",
    "YT": "Mayotte",
    "MF": "Saint Martin (French part)",
    "US": "United States",
    "CA": "Canada",
    "CH": "Switzerland",
    "NO": "Norway",
    "GB": "United Kingdom",
    "AG": "Antigua and Barbuda",
}
PHONE_CODES = {
    "NL": 31,
    "DE": 49,
    "FR": 33,
    "IT": 39,
    "ES": 34,
    "PT": 351,
    "BE": 32,
    "AT": 43,
    "IE": 353,
    "PL": 48,
    "SE": 46,
    "DK": 45,
    "GP": 590,
    "MQ": 596,
    "GF": 594,
    "RE": 262,
    "YT": 262,
    "MF": 590,
    "US": 1,
    "CA": 1,
    "CH": 41,
    "NO": 47,
    "GB": 44,
    "AG": 1,
}
COMPANY_SUFFIXES = {
    "NL": "B.V.",
    "DE": "GmbH",
    "FR": "SARL",
    "IT": "S.r.l.",
    "ES": "S.L.",
    "PT": "Lda.",
    "BE": "BV",
    "AT": "GmbH",
    "IE": "Ltd",
    "PL": "Sp. z o.o.",
    "SE": "AB",
    "DK": "ApS",
    "GP": "SARL",
    "MQ": "SAS",
    "GF": "SARL",
    "RE": "SAS",
    "YT": "SARL",
    "MF": "SARL",
    "US": "LLC",
    "CA": "Inc.",
    "CH": "AG",
    "NO": "AS",
    "GB": "Ltd",
    "AG": "Ltd",
}
# Territories that use the VAT number of their mainland state.
VAT_PREFIX = {"GP": "FR", "MQ": "FR", "GF": "FR", "RE": "FR", "YT": "FR", "MF": "FR"}

FIRST_NAMES = (
    "Anna",
    "Jürgen",
    "Zoë",
    "François",
    "Łukasz",
    "Søren",
    "João",
    "Íñigo",
    "Chiara",
    "Pieter",
    "Sinéad",
    "Björn",
    "Marie-Claire",
    "Giulia",
    "Ahmed",
    "Emily",
    "Olivier",
    "Marta",
    "Noah",
    "Léa",
)
LAST_NAMES = (
    "Müller",
    "Dupont",
    "Rossi",
    "de Vries",
    "García",
    "Silva",
    "Peeters",
    "Gruber",
    "O'Brien",
    "Kowalski",
    "Lindqvist",
    "Jensen",
    "Smith",
    "Tremblay",
    "Keller",
    "Hansen",
    "Baptiste",
    "Hoarau",
    "Jones",
    "Martin",
)
STREETS = (
    "Hoofdstraat",
    "Rue de la Paix",
    "Via Roma",
    "Calle Mayor",
    "Hauptstraße",
    "Rua Augusta",
    "Main Street",
    "Bahnhofstrasse",
    "Storgata",
    "High Street",
    "Boulevard Lagarrigue",
    "Kongens Nytorv",
)
PRODUCTS = ("Shared Hosting Starter", "Shared Hosting Pro", "VPS Medium", "VPS Large", "Reseller Gold")
ADDONS = ("Daily Backups", "Dedicated IP", "SSL Certificate", "Premium Support")
TLDS = ("com", "eu", "net", "nl", "de", "fr", "it", "io")


@dataclass(frozen=True)
class ClientDetails:
    """A client's billing details as they were from `since` on."""

    since: date
    place: Place
    firstname: str
    lastname: str
    companyname: str
    email: str
    address1: str
    address2: str
    city: str
    state: str
    postcode: str
    country: str
    phonenumber: str
    tax_id: str
    taxexempt: bool
    custom_values: dict[str, str]  # custom field name -> value

    @property
    def vat_number(self) -> str:
        return (self.tax_id or self.custom_values.get(VAT_NUMBER_FIELD, "")).strip()


@dataclass
class Client:
    id: int
    uuid: str
    currency_id: int
    gateway: str
    credit: Decimal
    created: date
    history: list[ClientDetails] = field(default_factory=list)

    @property
    def live(self) -> ClientDetails:
        return self.history[-1]

    def details_on(self, day: date) -> ClientDetails:
        current = self.history[0]
        for details in self.history:
            if details.since <= day:
                current = details
        return current


@dataclass
class InvoiceRows:
    """One document's rows. Documents not yet inserted have no "id" in `invoice`, and their items,
    snapshot and payments get "invoiceid" (and refunds their "refundid") when inserted."""

    invoice: Row
    items: list[Row]
    snapshot: Row | None
    payments: list[Row]

    @property
    def credit_note(self) -> bool:
        return self.invoice["total"] < 0 or self.invoice["subtotal"] < 0


@dataclass(frozen=True)
class _Line:
    type: str
    relid: int
    description: str
    amount: Decimal
    taxable: bool = True


def php_serialize(value: Any) -> str:
    """PHP's serialize(), for the snapshots very old WHMCS versions wrote."""
    if value is None:
        return "N;"
    if isinstance(value, bool):
        return f"b:{int(value)};"
    if isinstance(value, int):
        return f"i:{value};"
    if isinstance(value, str | Decimal):
        text = str(value)
        return f's:{len(text.encode())}:"{text}";'
    if isinstance(value, list):
        value = dict(enumerate(value))
    if isinstance(value, dict):
        body = "".join(php_serialize(key) + php_serialize(item) for key, item in value.items())
        return f"a:{len(value)}:{{{body}}}"
    raise TypeError(f"cannot serialize {type(value).__name__}")


def php_json(value: Any) -> str:
    # PHP's json_encode escapes slashes and non-ASCII by default; the agent meets exactly that.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


# -- the generator -----------------------------------------------------------------------------


class StoreGenerator:
    """One WHMCS store's data: `base()` for the initial load, then `new_invoice()` over time."""

    def __init__(
        self,
        seed: int | str,
        store_name: str,
        *,
        clients: int = 60,
        invoices: int = 300,
        today: date = date(2025, 1, 15),
        days: int = 730,
        home_country: str = "NL",
        numbered_until: date | None = None,
        legacy_snapshots: bool = True,
    ) -> None:
        """`numbered_until`: paid documents before that date carry a WHMCS number, as in a store that
        numbered with WHMCS's own sequence before Concord. `legacy_snapshots`: the oldest snapshots are
        PHP-serialized, as very old WHMCS versions wrote them."""
        if clients < 8 or invoices < 40:
            raise ValueError("need at least 8 clients and 40 invoices to cover every variety")
        self.store_name = store_name
        self.today = today
        self.start = today - timedelta(days=days)
        self.home_country = home_country
        self.number_format = "{YEAR}-{NUMBER}"
        self._next_number = "0001"
        self._rng = random.Random(f"{seed}:{store_name}")
        self._domain = "".join(ch for ch in store_name.lower() if ch.isalnum()) or "store"
        self._currencies = self._make_currencies()
        self._currency_by_code = {row["code"]: row for row in self._currencies}
        self._custom_fields = self._make_custom_fields()
        self._field_by_name = {row["fieldname"]: row for row in self._custom_fields}
        self._clients: dict[int, Client] = {}
        self._invoices: dict[int, InvoiceRows] = {}
        self._next_item_id = 1
        self._next_payment_id = 1
        self._next_relid = 100
        self._make_clients(clients)
        self._make_invoices(invoices, numbered_until, legacy_snapshots)
        self._base = self._collect_base()

    # -- public ----------------------------------------------------------------------------------

    def base(self) -> dict[str, list[Row]]:
        """Every table's rows (keys in load order, `TABLES`), ids included. A fresh copy each call."""
        return copy.deepcopy(self._base)

    @property
    def currencies(self) -> list[Row]:
        return copy.deepcopy(self._currencies)

    def client(self, client_id: int) -> Client:
        return self._clients[client_id]

    def config(self) -> dict[str, str]:
        return {row["setting"]: row["value"] for row in self._base["tblconfiguration"]}

    def new_invoice(
        self,
        *,
        status: str = "Unpaid",
        credit_note: bool = False,
        date: date | None = None,
        client_id: int | None = None,
        item_types: Sequence[str] | None = None,
        paid_at: datetime | None = None,
        gateway: str | None = None,
        numbered: bool = False,
        invoicenum: str | None = None,
        original_id: int | None = None,
        snapshot: bool = True,
    ) -> InvoiceRows:
        """A document WHMCS creates now: rows without ids, for `fixture.create_invoice`.

        `numbered` gives it the next number of WHMCS's own (pre-Concord) sequence; `invoicenum` sets
        one outright (duplicates included). `original_id` is the invoice a credit note refers to.
        """
        if status not in INVOICE_STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(INVOICE_STATUSES)}")
        for item_type in item_types or ():
            if item_type not in ITEM_TYPES:
                raise ValueError(f"unknown item type {item_type!r}")
        issue_date = date or self.today
        client = self._clients[client_id] if client_id is not None else self._pick_client()
        rows = self._build_invoice(
            client,
            issue_date,
            status,
            credit_note=credit_note,
            item_types=item_types,
            paid_at=paid_at,
            gateway=gateway,
            original=self._invoices.get(original_id) if original_id else None,
            original_id=original_id,
        )
        if invoicenum is not None:
            rows.invoice["invoicenum"] = invoicenum
        elif numbered:
            rows.invoice["invoicenum"] = self._take_number(rows.invoice)
        if not snapshot:
            rows.snapshot = None
        return self._without_ids(rows)

    def relocate_client(self, client_id: int, on: date | None = None, *, rename: bool = True) -> Row:
        """The client moves (and renames the company) from `on`: returns the changed tblclients
        columns; later snapshots from this generator carry the new details."""
        client = self._clients[client_id]
        since = on or self.today
        moved = self._moved_details(client.live, since, rename=rename)
        client.history.append(moved)
        return {"id": client_id, **self._client_detail_columns(moved)}

    # -- reference data --------------------------------------------------------------------------

    def _make_currencies(self) -> list[Row]:
        specs = (
            ("EUR", "€", " EUR", 3, "1.00000", 1),
            ("USD", "$", " USD", 2, "1.08310", 0),
            ("GBP", "£", " GBP", 2, "0.85940", 0),
            ("CHF", "", " CHF", 2, "0.94120", 0),
            ("XCD", "EC$", " XCD", 2, "2.92710", 0),
        )
        return [
            {
                "id": index,
                "code": code,
                "prefix": prefix,
                "suffix": suffix,
                "format": fmt,
                "rate": Decimal(rate),
                "default": default,
            }
            for index, (code, prefix, suffix, fmt, rate, default) in enumerate(specs, start=1)
        ]

    def _make_custom_fields(self) -> list[Row]:
        specs = (
            ("client", 0, VAT_NUMBER_FIELD, "text", "", "", "on"),
            ("client", 0, "Codice Fiscale", "text", "", "", "on"),
            ("client", 0, "How did you find us?", "dropdown", "Search,Friend,Advert", "", ""),
            ("client", 0, "Purchase Order", "text", "", "", "on"),
            ("client", 0, "Account manager", "text", "", "on", ""),
            # A product field: its values' relid is a service id, not a client id.
            ("product", 3, "Server hostname", "text", "", "", "on"),
        )
        rows = []
        for index, (kind, relid, name, fieldtype, options, adminonly, showinvoice) in enumerate(specs, 1):
            stamp = datetime.combine(self.start, time(9, 0))
            rows.append(
                {
                    "id": index,
                    "type": kind,
                    "relid": relid,
                    "fieldname": name,
                    "fieldtype": fieldtype,
                    "description": "",
                    "fieldoptions": options,
                    "regexpr": "",
                    "adminonly": adminonly,
                    "required": "",
                    "showorder": "on" if kind == "client" else "",
                    "showinvoice": showinvoice,
                    "sortorder": index,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
            )
        return rows

    def _config_rows(self) -> list[Row]:
        settings = {
            "Version": "8.7.3-release.1",
            "CompanyName": f"{self.store_name} Hosting",
            "SystemURL": f"https://billing.{self._domain}.example/",
            "Email": f"billing@{self._domain}.example",
            "DateFormat": "DD/MM/YYYY",
            "StoreClientDataSnapshotOnInvoiceCreation": "on",
            "TaxEnabled": "on",
            "TaxType": "Exclusive",
            "TaxL2Compound": "",
            "TaxEUTaxValidation": "on",
            "TaxEUTaxExempt": "on",
            "TaxEUHomeCountry": self.home_country,
            "TaxEUHomeCountryNoExempt": "on",
            "SequentialInvoiceNumbering": "",
            "SequentialInvoiceNumberFormat": self.number_format,
            "SequentialInvoiceNumberValue": self._next_number,
            "InvoiceIncrement": "1",
            "TaxAutoResetPaidNumbering": "never",
            "TaxCustomInvoiceNumbering": "",
            "TaxCustomInvoiceNumberFormat": "{NUMBER}",
            "TaxNextCustomInvoiceNumber": "1",
            "TaxAutoResetNumbering": "never",
        }
        stamp = datetime.combine(self.start, time(9, 0))
        return [
            {"setting": key, "value": value, "created_at": stamp, "updated_at": stamp}
            for key, value in settings.items()
        ]

    # -- clients ---------------------------------------------------------------------------------

    def _make_clients(self, count: int) -> None:
        rng = self._rng
        places = list(PLACES)
        for client_id in range(1, count + 1):
            # Every place at least once, then at random.
            place = places[client_id - 1] if client_id <= len(places) else rng.choice(places)
            company = rng.random() < 0.55 if client_id > 3 else client_id != 2
            created = self.start - timedelta(days=rng.randint(0, 400))
            details = self._details(place, company, created, client_id)
            currency = self._currency_by_code[place.currency]
            # Some EU clients pay in another currency than the local one.
            if place.vat_rate is not None and rng.random() < 0.1:
                currency = self._currency_by_code["USD"]
            client = Client(
                id=client_id,
                uuid=self._uuid(),
                currency_id=currency["id"],
                gateway=rng.choice(GATEWAYS),
                credit=money(rng.choice((0, 0, 0, 0, 15, 50))),
                created=created,
                history=[details],
            )
            # Many clients moved or renamed during the period: snapshots of their older invoices differ
            # from the live client. The first ones stay put so every place has a live client.
            if client_id > min(len(PLACES), count // 2) and client_id % 3 != 0:
                since = self.start + timedelta(days=rng.randint(120, 600))
                client.history.append(self._moved_details(details, since, rename=client_id % 8 == 1))
            self._clients[client_id] = client

    def _details(self, place: Place, company: bool, since: date, client_id: int) -> ClientDetails:
        rng = self._rng
        firstname = rng.choice(FIRST_NAMES)
        lastname = rng.choice(LAST_NAMES)
        companyname = (
            f"{lastname} {rng.choice(('Digital', 'Web', 'Media', 'Systems', 'Data'))} "
            f"{COMPANY_SUFFIXES[place.country]}"
            if company
            else ""
        )
        email_name = "".join(ch for ch in f"{firstname}.{lastname}".lower() if ch.isascii() and ch != "'")
        tax_id, custom = "", {}
        if company and (place.vat_rate is not None or place.country in VAT_PREFIX or rng.random() < 0.6):
            vat = self._vat_number(place)
            # WHMCS 8 keeps the VAT number in tax_id; stores migrated from 7.x still use the custom
            # field, and some have both.
            where = client_id % 3
            if where in (0, 2):
                tax_id = vat
            if where in (1, 2):
                custom[VAT_NUMBER_FIELD] = vat if where == 2 or rng.random() < 0.7 else f" {vat} "
        if place.country == "IT" and not company:
            custom["Codice Fiscale"] = self._codice_fiscale()
        if rng.random() < 0.5:
            custom["How did you find us?"] = rng.choice(("Search", "Friend", "Advert"))
        if company and rng.random() < 0.3:
            custom["Purchase Order"] = f"PO-{rng.randint(1000, 99999)}"
        if rng.random() < 0.2:
            custom["Account manager"] = rng.choice(("Kim", "Lars", "Ines"))
        reverse_charge = (
            bool(vat_in_eu(tax_id or custom.get(VAT_NUMBER_FIELD, ""), place))
            and place.country != self.home_country
        )
        details = ClientDetails(
            since=since,
            place=place,
            firstname=firstname,
            lastname=lastname,
            companyname=companyname,
            email=f"{email_name}{client_id}@{self._domain}-clients.example",
            address1=f"{rng.choice(STREETS)} {rng.randint(1, 200)}",
            address2=rng.choice(("", "", "Suite 4")),
            city=place.city,
            state=place.state,
            postcode=self._digits(place.postcode),
            country=place.country,
            phonenumber=f"+{PHONE_CODES[place.country]}.{rng.randint(10**8, 10**9 - 1)}",
            tax_id=tax_id,
            taxexempt=reverse_charge or (rng.random() < 0.05),
            custom_values=custom,
        )
        return self._with_stray_whitespace(details)

    def _moved_details(self, details: ClientDetails, since: date, *, rename: bool) -> ClientDetails:
        rng = self._rng
        same_kind = [p for p in PLACES if (p.vat_rate is None) == (details.place.vat_rate is None)]
        # Some move between the mainland and an outermost region, which changes their VAT treatment.
        destination = rng.choice(PLACES if rng.random() < 0.3 else same_kind)
        companyname = details.companyname
        if rename and companyname:
            companyname = f"{details.lastname} & Partners {COMPANY_SUFFIXES[destination.country]}"
        elif rename:
            companyname = ""
        lastname = details.lastname if companyname or not rename else rng.choice(LAST_NAMES)
        custom = dict(details.custom_values)
        tax_id = details.tax_id
        if details.vat_number and destination.country != details.place.country:
            new_vat = self._vat_number(destination)
            tax_id = new_vat if details.tax_id else ""
            if VAT_NUMBER_FIELD in custom:
                custom[VAT_NUMBER_FIELD] = new_vat
        reverse_charge = (
            bool(vat_in_eu(tax_id or custom.get(VAT_NUMBER_FIELD, ""), destination))
            and destination.country != self.home_country
        )
        return replace(
            details,
            since=since,
            place=destination,
            companyname=companyname,
            lastname=lastname,
            address1=f"{rng.choice(STREETS)} {rng.randint(1, 200)}",
            address2="",
            city=destination.city,
            state=destination.state,
            postcode=self._digits(destination.postcode),
            country=destination.country,
            phonenumber=f"+{PHONE_CODES[destination.country]}.{rng.randint(10**8, 10**9 - 1)}",
            tax_id=tax_id,
            taxexempt=reverse_charge,
            custom_values=custom,
        )

    def _with_stray_whitespace(self, details: ClientDetails) -> ClientDetails:
        # Admins paste values with spaces around them; the feed trims.
        if self._rng.random() < 0.2:
            return replace(
                details,
                companyname=f"{details.companyname} " if details.companyname else "",
                address1=f" {details.address1}",
                city=f"{details.city}  ",
            )
        return details

    def _vat_number(self, place: Place) -> str:
        rng = self._rng
        prefix = VAT_PREFIX.get(place.country, place.country)
        digits = "".join(rng.choice(string.digits) for _ in range(9))
        if place.country == "CH":
            return f"CHE-{digits[:3]}.{digits[3:6]}.{digits[6:]} MWST"
        if place.country == "NO":
            return f"NO{digits}MVA"
        if place.country in ("US", "CA", "AG"):
            return f"{digits[:2]}-{digits[2:]}"
        if prefix == "NL":
            return f"NL{digits}B01"
        if prefix == "ES":
            return f"ESB{digits[:8]}"
        if prefix == "IT":
            return f"IT{digits}{rng.randint(10, 99)}"
        if prefix == "FR":
            return f"FR{rng.randint(10, 99)}{digits}"
        return f"{prefix}{digits}"

    def _codice_fiscale(self) -> str:
        rng = self._rng
        letters = string.ascii_uppercase
        return (
            "".join(rng.choice(letters) for _ in range(6))
            + f"{rng.randint(40, 99)}"
            + rng.choice(letters)
            + f"{rng.randint(10, 70)}"
            + rng.choice(letters)
            + f"{rng.randint(100, 999)}"
            + rng.choice(letters)
        )

    def _client_detail_columns(self, details: ClientDetails) -> Row:
        return {
            "firstname": details.firstname,
            "lastname": details.lastname,
            "companyname": details.companyname,
            "email": details.email,
            "address1": details.address1,
            "address2": details.address2,
            "city": details.city,
            "state": details.state,
            "postcode": details.postcode,
            "country": details.country,
            "phonenumber": details.phonenumber,
            "tax_id": details.tax_id,
            "taxexempt": int(details.taxexempt),
        }

    def _client_row(self, client: Client) -> Row:
        created = datetime.combine(client.created, time(10, 0))
        return {
            "id": client.id,
            "uuid": client.uuid,
            **self._client_detail_columns(client.live),
            "currency": client.currency_id,
            "defaultgateway": client.gateway,
            "credit": client.credit,
            "datecreated": client.created,
            "status": "Active",
            "language": "",
            "notes": "",
            "created_at": created,
            "updated_at": datetime.combine(client.live.since, time(10, 0)),
        }

    def _custom_value_rows(self) -> list[Row]:
        rows: list[Row] = []
        for client in self._clients.values():
            for name, value in client.live.custom_values.items():
                rows.append({"fieldid": self._field_by_name[name]["id"], "relid": client.id, "value": value})
        product_field = self._field_by_name["Server hostname"]
        for service_id in range(1, 6):
            rows.append(
                {
                    "fieldid": product_field["id"],
                    "relid": service_id,
                    "value": f"srv{service_id}.{self._domain}.example",
                }
            )
        for row_id, row in enumerate(rows, start=1):
            row["id"] = row_id
        return rows

    # -- invoices --------------------------------------------------------------------------------

    def _make_invoices(self, count: int, numbered_until: date | None, legacy_snapshots: bool) -> None:
        rng = self._rng
        plan: list[tuple[str, bool, tuple[str, ...] | None]] = []
        plan += [(status, False, None) for status in INVOICE_STATUSES]
        plan += [
            (rng.choice(("Paid", "Unpaid")), False, (item_type,))
            for item_type in ITEM_TYPES
            if item_type not in ("Invoice", "PromoHosting")
        ]
        plan.append(("Paid", False, ("Hosting", "PromoHosting")))
        plan += [("Paid", True, None), ("Unpaid", True, None)]
        weights = {
            "Paid": 55,
            "Unpaid": 14,
            "Cancelled": 7,
            "Draft": 5,
            "Refunded": 4,
            "Collections": 3,
            "Payment Pending": 4,
        }
        while len(plan) < count - 1:
            if rng.random() < 0.07:
                plan.append((rng.choice(("Paid", "Paid", "Unpaid")), True, None))
            else:
                plan.append((rng.choices(list(weights), list(weights.values()))[0], False, None))
        rng.shuffle(plan)
        # Mass-payment invoices refer to earlier ones, so one comes last.
        plan.append(("Paid", False, ("Invoice",)))
        days = (self.today - self.start).days
        dates = sorted(self.start + timedelta(days=rng.randint(0, days)) for _ in plan)
        dates[-1] = self.today
        legacy_cut = len(plan) // 20 if legacy_snapshots else 0
        missing_until = len(plan) // 8
        for position, (entry, issue_date) in enumerate(zip(plan, dates, strict=True)):
            status, credit_note, item_types = entry
            invoice_id = position + 1
            # Invoices are not strictly in date order by id: some are created with another date.
            if rng.random() < 0.05:
                issue_date = min(self.today, issue_date + timedelta(days=rng.randint(-4, 4)))
            client = self._pick_client(need_invoices=item_types == ("Invoice",))
            original = None
            if credit_note:
                original = self._pick_paid_invoice(client.id)
            rows = self._build_invoice(
                client,
                issue_date,
                status,
                credit_note=credit_note,
                item_types=item_types,
                paid_at=None,
                gateway=None,
                original=original,
                original_id=original.invoice["id"] if original else None,
            )
            if position < legacy_cut and rows.snapshot is not None:
                rows.snapshot["clientsdetails"] = php_serialize(json.loads(rows.snapshot["clientsdetails"]))
                rows.snapshot["customfields"] = php_serialize(json.loads(rows.snapshot["customfields"]))
            elif legacy_cut <= position < missing_until or rng.random() < 0.03:
                # Snapshots were switched off for a while, and some invoices never got one.
                rows.snapshot = None
            self._assign_ids(rows, invoice_id)
            self._invoices[invoice_id] = rows
        if numbered_until is not None:
            self._number_history(numbered_until)

    def _pick_client(self, *, need_invoices: bool = False) -> Client:
        if need_invoices:
            with_invoices = sorted(
                {rows.invoice["userid"] for rows in self._invoices.values() if not rows.credit_note}
            )
            if with_invoices:
                return self._clients[self._rng.choice(with_invoices)]
        return self._clients[self._rng.choice(sorted(self._clients))]

    def _pick_paid_invoice(self, client_id: int) -> InvoiceRows | None:
        paid = [
            rows
            for rows in self._invoices.values()
            if rows.invoice["userid"] == client_id
            and rows.invoice["status"] in ("Paid", "Refunded")
            and not rows.credit_note
            and rows.invoice["subtotal"] > 0
            and not any(item["type"] in ("AddFunds", "Invoice") for item in rows.items)
        ]
        return self._rng.choice(paid) if paid else None

    def _tax_rates(self, client: Client, details: ClientDetails) -> tuple[Decimal, Decimal]:
        if details.taxexempt:
            return tax_rate(0), tax_rate(0)
        if details.place.vat_rate is not None:
            return details.place.vat_rate, tax_rate(0)
        if details.country == "CA" and details.state.strip() == "QC":
            # A store registered for Canadian GST (level 1) and Québec QST (level 2).
            return tax_rate("5"), tax_rate("9.975")
        return tax_rate(0), tax_rate(0)

    def _build_invoice(
        self,
        client: Client,
        issue_date: date,
        status: str,
        *,
        credit_note: bool,
        item_types: Sequence[str] | None,
        paid_at: datetime | None,
        gateway: str | None,
        original: InvoiceRows | None,
        original_id: int | None,
    ) -> InvoiceRows:
        rng = self._rng
        details = client.details_on(issue_date)
        taxrate, taxrate2 = self._tax_rates(client, details)
        currency = self._currency(client)
        if credit_note:
            lines = self._credit_note_lines(original, currency, issue_date)
        else:
            lines = self._lines(client, currency, issue_date, item_types)
        taxed_lines = [line.taxable and not details.taxexempt for line in lines]
        if any(line.type in ("Invoice", "AddFunds") for line in lines):
            taxrate = taxrate2 = tax_rate(0)
        subtotal = money(sum((line.amount for line in lines), Decimal(0)))
        taxable = sum(
            (line.amount for line, taxed in zip(lines, taxed_lines, strict=True) if taxed), Decimal(0)
        )
        tax = money(taxable * taxrate / 100)
        tax2 = money(taxable * taxrate2 / 100)
        gross = subtotal + tax + tax2
        credit = money(0)
        if not credit_note and status in ("Paid", "Unpaid") and gross > 0 and rng.random() < 0.1:
            # Credit that covers the whole invoice pays it.
            full = status == "Paid" and rng.random() < 0.3
            credit = gross if full else money(min(gross - CENT, Decimal(rng.choice((5, 10, 20)))))
        total = gross - credit
        method = gateway or client.gateway
        created_at = datetime.combine(
            issue_date, time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
        )
        invoice: Row = {
            "userid": client.id,
            "invoicenum": "",
            "date": issue_date,
            "duedate": issue_date + timedelta(days=0 if status == "Draft" else rng.choice((7, 14, 30))),
            "datepaid": ZERO_DATETIME,
            "last_capture_attempt": ZERO_DATETIME,
            "date_refunded": ZERO_DATETIME,
            "date_cancelled": ZERO_DATETIME,
            "subtotal": subtotal,
            "credit": credit,
            "tax": tax,
            "tax2": tax2,
            "total": total,
            "taxrate": taxrate,
            "taxrate2": taxrate2,
            "status": status,
            "paymentmethod": method,
            "paymethodid": rng.randint(1, 500) if method == "stripe" else None,
            "notes": f"Credit note for invoice #{original_id}" if credit_note and original_id else "",
            "created_at": created_at,
            "updated_at": created_at,
        }
        payments: list[Row] = []
        settled = status in ("Paid", "Refunded")
        if settled:
            when = paid_at or self._payment_time(created_at)
            invoice["datepaid"] = when
            invoice["updated_at"] = when
            if total > 0:
                payments += self._payments(
                    client, method, total, when, parts=1 if status == "Refunded" else None
                )
            if status == "Refunded":
                refunded_at = max(
                    when,
                    min(
                        when + timedelta(days=rng.randint(1, 30)), datetime.combine(self.today, time(23, 59))
                    ),
                )
                invoice["date_refunded"] = refunded_at
                invoice["updated_at"] = refunded_at
                if payments:
                    payments.append(self._refund(client, method, payments[0], total, refunded_at))
        elif status in ("Unpaid", "Collections", "Payment Pending") and total > 0 and rng.random() < 0.15:
            # A partial payment: recorded, but the invoice stays as it is.
            partial = money(total * Decimal(rng.choice(("0.25", "0.5"))))
            payments += self._payments(client, method, partial, self._payment_time(created_at), parts=1)
        elif status == "Cancelled":
            cancelled_at = self._payment_time(created_at)
            invoice["date_cancelled"] = cancelled_at
            invoice["updated_at"] = cancelled_at
        items = [
            {
                "userid": client.id,
                "type": line.type,
                "relid": line.relid,
                "description": line.description,
                "amount": line.amount,
                "taxed": int(taxed),
                "duedate": invoice["duedate"],
                "paymentmethod": method,
                "notes": "",
            }
            for line, taxed in zip(lines, taxed_lines, strict=True)
        ]
        return InvoiceRows(
            invoice=invoice,
            items=items,
            snapshot=self._snapshot(client, details, created_at),
            payments=payments,
        )

    def _currency(self, client: Client) -> Row:
        return next(row for row in self._currencies if row["id"] == client.currency_id)

    def _price(self, currency: Row, low: str, high: str) -> Decimal:
        cents = self._rng.randint(int(Decimal(low) * 100), int(Decimal(high) * 100))
        return money(Decimal(cents) / 100 * currency["rate"])

    def _relid(self) -> int:
        self._next_relid += self._rng.randint(1, 3)
        return self._next_relid

    def _lines(
        self, client: Client, currency: Row, issue_date: date, item_types: Sequence[str] | None
    ) -> list[_Line]:
        rng = self._rng
        if item_types is None:
            roll = rng.random()
            if roll < 0.05:
                item_types = ("AddFunds",)
            elif roll < 0.08 and self._client_invoices(client.id):
                item_types = ("Invoice",)
            else:
                common = (
                    "Hosting",
                    "Hosting",
                    "Domain",
                    "DomainRegister",
                    "DomainRenew",
                    "DomainTransfer",
                    "Addon",
                    "Setup",
                    "Upgrade",
                    "Item",
                    "",
                    "LateFee",
                    "DomainGraceFee",
                )
                item_types = tuple(rng.sample(common, rng.randint(1, 3)))
                if "Hosting" in item_types and rng.random() < 0.15:
                    item_types += ("PromoHosting",)
        lines: list[_Line] = []
        period_end = issue_date + timedelta(days=30)
        span = f"({issue_date:%d/%m/%Y} - {period_end:%d/%m/%Y})"
        domain = (
            f"{rng.choice(LAST_NAMES).lower().replace(' ', '').replace(chr(39), '')}"
            f"{rng.randint(1, 99)}.{rng.choice(TLDS)}"
        )
        year_span = f"({issue_date:%d/%m/%Y} - {_year_later(issue_date) - timedelta(days=1):%d/%m/%Y})"
        hosting_amount = Decimal(0)
        for item_type in item_types:
            if item_type == "Hosting":
                amount = self._price(currency, "4.99", "89.00")
                hosting_amount += amount
                description = f"{rng.choice(PRODUCTS)} - {domain} {span}"
                lines.append(_Line(item_type, self._relid(), description, amount))
            elif item_type == "PromoHosting":
                base = hosting_amount or self._price(currency, "4.99", "89.00")
                description = "Promotion Code: WELCOME10 - 10.00% Recurring Discount"
                lines.append(_Line(item_type, self._relid(), description, -money(base / 10)))
            elif item_type == "Setup":
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        f"{rng.choice(PRODUCTS)} - Setup Fee",
                        self._price(currency, "9.00", "49.00"),
                    )
                )
            elif item_type in ("Domain", "DomainRenew"):
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        f"Domain Renewal - {domain} - 1 Year/s {year_span}",
                        self._price(currency, "7.99", "39.99"),
                    )
                )
            elif item_type == "DomainRegister":
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        f"Domain Registration - {domain} - 1 Year/s {year_span}",
                        self._price(currency, "7.99", "39.99"),
                    )
                )
            elif item_type == "DomainTransfer":
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        f"Domain Transfer - {domain} - 1 Year/s {year_span}",
                        self._price(currency, "7.99", "29.99"),
                    )
                )
            elif item_type == "Upgrade":
                old, new = rng.sample(PRODUCTS, 2)
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        f"Upgrade/Downgrade: {old} => {new}\n",
                        self._price(currency, "2.00", "60.00"),
                    )
                )
            elif item_type == "Item":
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        "Consultancy (2 hours)",
                        self._price(currency, "60.00", "240.00"),
                    )
                )
            elif item_type == "Addon":
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        f"Addon: {rng.choice(ADDONS)} {span}",
                        self._price(currency, "1.00", "19.00"),
                    )
                )
            elif item_type == "DomainGraceFee":
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        f"Grace Period Fee - {domain}",
                        self._price(currency, "5.00", "15.00"),
                    )
                )
            elif item_type == "LateFee":
                lines.append(
                    _Line(
                        item_type,
                        self._relid(),
                        f"Late Fee (Added {issue_date:%d/%m/%Y})",
                        self._price(currency, "5.00", "10.00"),
                    )
                )
            elif item_type == "AddFunds":
                lines.append(
                    _Line(
                        item_type,
                        0,
                        "Add Funds",
                        money(Decimal(rng.choice((20, 50, 100, 250))) * currency["rate"]),
                        taxable=False,
                    )
                )
            elif item_type == "Invoice":
                lines += self._mass_payment_lines(client, currency)
            else:
                lines.append(
                    _Line("", 0, "  Custom development work  ", self._price(currency, "50.00", "500.00"))
                )
        return lines

    def _client_invoices(self, client_id: int) -> list[InvoiceRows]:
        return [
            rows
            for rows in self._invoices.values()
            if rows.invoice["userid"] == client_id and not rows.credit_note and rows.invoice["total"] > 0
        ]

    def _mass_payment_lines(self, client: Client, currency: Row) -> list[_Line]:
        earlier = self._client_invoices(client.id)
        if not earlier:
            return [_Line("Invoice", 0, "Invoice #0", self._price(currency, "10.00", "90.00"), taxable=False)]
        chosen = self._rng.sample(earlier, min(len(earlier), self._rng.randint(1, 3)))
        return [
            _Line(
                "Invoice",
                rows.invoice["id"],
                f"Invoice #{rows.invoice['id']}",
                rows.invoice["total"],
                taxable=False,
            )
            for rows in chosen
        ]

    def _credit_note_lines(
        self, original: InvoiceRows | None, currency: Row, issue_date: date
    ) -> list[_Line]:
        if original is not None and original.items:
            count = self._rng.randint(1, len(original.items))
            lines = [
                _Line(item["type"], item["relid"], f"Credit: {item['description'].strip()}", -item["amount"])
                for item in original.items[:count]
                if item["amount"] > 0
            ]
            if lines:
                return lines
        return [
            _Line(
                "Item",
                self._relid(),
                f"Credit: service outage {issue_date:%m/%Y}",
                -self._price(currency, "5.00", "30.00"),
            )
        ]

    def _payment_time(self, created_at: datetime) -> datetime:
        rng = self._rng
        when = created_at + timedelta(days=rng.randint(0, 20), seconds=rng.randint(60, 36000))
        if when.date() > max(self.today, created_at.date()):
            when = created_at + timedelta(minutes=rng.randint(1, 90))
        return when

    def _payments(
        self, client: Client, gateway: str, amount: Decimal, when: datetime, parts: int | None = None
    ) -> list[Row]:
        rng = self._rng
        parts = parts or (2 if rng.random() < 0.1 and amount > 1 else 1)
        amounts = [amount] if parts == 1 else [money(amount / 2), amount - money(amount / 2)]
        currency = self._currency(client)
        rows = []
        for index, part in enumerate(amounts):
            paid = when - timedelta(minutes=30 * (len(amounts) - 1 - index))
            rows.append(
                {
                    # WHMCS records a currency only for transactions without a client.
                    "userid": client.id,
                    "currency": 0,
                    "gateway": gateway,
                    "date": paid,
                    "description": "Invoice Payment",
                    "amountin": part,
                    "fees": self._fee(gateway, part),
                    "amountout": money(0),
                    "rate": currency["rate"],
                    "transid": self._transid(gateway),
                    "refundid": 0,
                    "created_at": paid,
                    "updated_at": paid,
                }
            )
        return rows

    def _refund(self, client: Client, gateway: str, payment: Row, amount: Decimal, when: datetime) -> Row:
        return {
            "userid": client.id,
            "currency": 0,
            "gateway": gateway,
            "date": when,
            "description": f"Refund of Transaction ID {payment['transid']}",
            "amountin": money(0),
            "fees": -payment["fees"],
            "amountout": amount,
            "rate": payment["rate"],
            "transid": self._transid(gateway),
            "refundid": payment.get("id", 0),
            "created_at": when,
            "updated_at": when,
        }

    def _fee(self, gateway: str, amount: Decimal) -> Decimal:
        if gateway == "paypal":
            return money(amount * Decimal("0.029") + Decimal("0.35"))
        if gateway == "stripe":
            return money(amount * Decimal("0.014") + Decimal("0.25"))
        return money(0)

    def _transid(self, gateway: str) -> str:
        rng = self._rng
        alphabet = string.ascii_letters + string.digits
        if gateway == "stripe":
            return "ch_" + "".join(rng.choice(alphabet) for _ in range(24))
        if gateway == "paypal":
            return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(17))
        if gateway == "banktransfer":
            return f"BT{rng.randint(10**7, 10**8 - 1)}"
        return ""

    def _snapshot(self, client: Client, details: ClientDetails, created_at: datetime) -> Row:
        currency = self._currency(client)
        phone_cc = PHONE_CODES.get(details.country.strip(), 0)
        clientsdetails = {
            "userid": client.id,
            "id": client.id,
            "uuid": client.uuid,
            "firstname": details.firstname,
            "lastname": details.lastname,
            "fullname": f"{details.firstname} {details.lastname}",
            "companyname": details.companyname,
            "email": details.email,
            "address1": details.address1,
            "address2": details.address2,
            "city": details.city,
            "fullstate": details.state,
            "state": details.state,
            "postcode": details.postcode,
            "countrycode": details.country,
            "country": details.country,
            "countryname": COUNTRY_NAMES.get(details.country, details.country),
            "phonecc": phone_cc,
            "phonenumber": details.phonenumber,
            "phonenumberformatted": details.phonenumber,
            "tax_id": details.tax_id,
            "billingcid": 0,
            "currency": client.currency_id,
            "currency_code": currency["code"],
            "defaultgateway": client.gateway,
            "taxexempt": details.taxexempt,
            "language": "",
            "status": "Active",
        }
        fields = [
            {
                "id": row["id"],
                "fieldname": row["fieldname"],
                "value": details.custom_values.get(row["fieldname"], ""),
            }
            for row in self._custom_fields
            if row["type"] == "client" and row["showinvoice"] == "on"
        ]
        return {
            "clientsdetails": php_json(clientsdetails),
            "customfields": php_json(fields),
            "created_at": created_at,
            "updated_at": created_at,
        }

    # -- numbering and ids -----------------------------------------------------------------------

    def _take_number(self, invoice: Row) -> str:
        when = invoice["datepaid"] if isinstance(invoice["datepaid"], datetime) else invoice["date"]
        number = (
            self.number_format.replace("{YEAR}", f"{when:%Y}")
            .replace("{MONTH}", f"{when:%m}")
            .replace("{DAY}", f"{when:%d}")
            .replace("{NUMBER}", self._next_number)
        )
        self._next_number = str(int(self._next_number) + 1).zfill(len(self._next_number))
        return number

    def _number_history(self, numbered_until: date) -> None:
        paid = [
            rows
            for rows in self._invoices.values()
            if isinstance(rows.invoice["datepaid"], datetime)
            and rows.invoice["datepaid"].date() < numbered_until
        ]
        for rows in sorted(paid, key=lambda r: (r.invoice["datepaid"], r.invoice["id"])):
            rows.invoice["invoicenum"] = self._take_number(rows.invoice)

    def _assign_ids(self, rows: InvoiceRows, invoice_id: int) -> None:
        rows.invoice = {"id": invoice_id, **rows.invoice}
        for item in rows.items:
            item["id"] = self._next_item_id
            item["invoiceid"] = invoice_id
            self._next_item_id += 1
        first_payment_id = self._next_payment_id
        for payment in rows.payments:
            payment["id"] = self._next_payment_id
            payment["invoiceid"] = invoice_id
            if payment["amountout"] > 0:
                payment["refundid"] = first_payment_id
            self._next_payment_id += 1
        if rows.snapshot is not None:
            rows.snapshot["invoiceid"] = invoice_id

    def _without_ids(self, rows: InvoiceRows) -> InvoiceRows:
        return InvoiceRows(
            invoice={k: v for k, v in rows.invoice.items() if k != "id"},
            items=[{k: v for k, v in item.items() if k not in ("id", "invoiceid")} for item in rows.items],
            snapshot=rows.snapshot,
            payments=[
                {k: v for k, v in payment.items() if k not in ("id", "invoiceid")}
                for payment in rows.payments
            ],
        )

    def _collect_base(self) -> dict[str, list[Row]]:
        invoices = list(self._invoices.values())
        snapshot_rows = [rows.snapshot for rows in invoices if rows.snapshot is not None]
        for snapshot_id, snapshot in enumerate(snapshot_rows, start=1):
            snapshot["id"] = snapshot_id
        tables = {
            "tblcurrencies": self._currencies,
            "tblconfiguration": self._config_rows(),
            "tblclients": [self._client_row(client) for client in self._clients.values()],
            "tblcustomfields": self._custom_fields,
            "tblcustomfieldsvalues": self._custom_value_rows(),
            "tblinvoices": [rows.invoice for rows in invoices],
            "tblinvoiceitems": [item for rows in invoices for item in rows.items],
            "tblaccounts": [payment for rows in invoices for payment in rows.payments],
            "mod_invoicedata": snapshot_rows,
        }
        return {table: tables[table] for table in TABLES}

    # -- small helpers ---------------------------------------------------------------------------

    def _digits(self, pattern: str) -> str:
        return "".join(str(self._rng.randint(0, 9)) if ch == "#" else ch for ch in pattern)

    def _uuid(self) -> str:
        hexdigits = f"{self._rng.getrandbits(128):032x}"
        return f"{hexdigits[:8]}-{hexdigits[8:12]}-4{hexdigits[13:16]}-a{hexdigits[17:20]}-{hexdigits[20:]}"


def _year_later(day: date) -> date:
    return (
        day.replace(year=day.year + 1, day=28)
        if (day.month, day.day) == (2, 29)
        else day.replace(year=day.year + 1)
    )


def vat_in_eu(vat_number: str, place: Place) -> bool:
    """Whether a VAT number can be VIES-registered: EU VAT area only, prefix not a Swiss/Norwegian one."""
    return bool(vat_number.strip()) and place.vat_rate is not None


def iter_documents(tables: dict[str, list[Row]]) -> Iterator[InvoiceRows]:
    """The documents of `StoreGenerator.base()` tables, each with its items, snapshot and payments."""
    items: dict[int, list[Row]] = {}
    for item in tables["tblinvoiceitems"]:
        items.setdefault(item["invoiceid"], []).append(item)
    payments: dict[int, list[Row]] = {}
    for payment in tables["tblaccounts"]:
        payments.setdefault(payment["invoiceid"], []).append(payment)
    snapshots = {row["invoiceid"]: row for row in tables["mod_invoicedata"]}
    for invoice in tables["tblinvoices"]:
        yield InvoiceRows(
            invoice,
            items.get(invoice["id"], []),
            snapshots.get(invoice["id"]),
            payments.get(invoice["id"], []),
        )
