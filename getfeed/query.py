"""The WebService ``Get`` request: its parameters, the date keywords, and the errors. Pure.

Parameter names and values follow the contract (seeds/webservice-get.txt): values are
case-insensitive, ``start`` takes a date, an integer N (today-N … today) or a keyword of
the contract's table, and every error names the parameter, the value received and what
is accepted. "Today" is passed in: it is the store's (or the coordinator's) local date.
Numbers and dates are read from ASCII digits only (Python's int() and ``\\d`` also take
other scripts' digits), and every field is checked for NUL, lone surrogates and length
before anything reads it.
"""

from __future__ import annotations

import json
import re
from calendar import monthrange
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson

from coordinator.events.canonical import BIGINT, NotCanonical, check_text

# The Billing Extension's URL path (with ws=einvoice): existing scripts only change the host.
BILLING_EXTENSION_PATH = (
    "/modules/addons/BillingExtension/core/BillingExtension_Admin/resources/einvoice/einvoice.php"
)
DOCTYPES = {
    "invoice": "invoice",
    "invoices": "invoice",
    "creditnote": "creditnote",
    "creditnotes": "creditnote",
}
BOTH_DOCTYPES = frozenset(("invoice", "creditnote"))
KEYWORDS = (
    "Today",
    "Yesterday",
    "Last 7 days",
    "Last week",
    "Week to date",
    "Month to date",
    "Previous month",
    "Year to date",
    "Last year",
    "All",
)
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIGITS = re.compile(r"[0-9]+")
MAX_FIELD_LENGTH = 200
# More days than reach back to year 1, and the most digits of a bigint document ID.
_MAX_DAYS_DIGITS = 7
_MAX_ID_DIGITS = 19


class GetQueryError(ValueError):
    """A request the feed does not answer: ``message`` says what is wrong and what is accepted
    (or, for a source that is down, to retry); ``status`` is the answer's HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class GetQuery:
    """What a Get request selects: a date range (None = open), or one document."""

    start: date | None = None
    end: date | None = None
    invoicenum: str | None = None
    invoiceid: int | None = None
    doctypes: frozenset[str] = BOTH_DOCTYPES
    store: str | None = None


def _month_start(day: date) -> date:
    return day.replace(day=1)


def keyword_range(keyword: str, today: date) -> tuple[date | None, date | None] | None:
    """The range of a date keyword as the contract's table gives it, None for an unknown one.

    Monday starts the week. "Last week" is the table's Monday-to-Sunday week holding today
    (2019-06-10 … 2019-06-16 for Saturday 2019-06-15); "Year to date" ends today.
    """
    monday = today - timedelta(days=today.weekday())
    previous_month_end = _month_start(today) - timedelta(days=1)
    ranges: dict[str, tuple[date | None, date | None]] = {
        "today": (today, today),
        "yesterday": (today - timedelta(days=1), today - timedelta(days=1)),
        "last 7 days": (today - timedelta(days=7), today),
        "last week": (monday, monday + timedelta(days=6)),
        "week to date": (monday, today),
        "month to date": (_month_start(today), today),
        "previous month": (_month_start(previous_month_end), previous_month_end),
        "year to date": (date(today.year, 1, 1), today),
        "last year": (date(today.year - 1, 1, 1), date(today.year - 1, 12, 31)),
        "all": (None, None),
    }
    return ranges.get(" ".join(keyword.lower().replace("_", " ").split()))


def _whole_number(raw: str) -> bool:
    return _DIGITS.fullmatch(raw) is not None


def _iso_date(name: str, raw: str) -> date:
    if not ISO_DATE.fullmatch(raw):
        raise GetQueryError(f"{name} {raw!r} is not a date: use YYYY-MM-DD (e.g. 2019-06-01)")
    year, month, day = (int(part) for part in raw.split("-"))
    if not (1 <= month <= 12 and 1 <= day <= monthrange(max(year, 1), month)[1]) or year < 1:
        raise GetQueryError(f"{name} {raw!r} is not a calendar date: use YYYY-MM-DD")
    return date(year, month, day)


def _start_range(raw: str, today: date) -> tuple[date | None, date | None, bool]:
    """(start, end, is_date) for the ``start`` value."""
    if raw == "":
        return None, None, False
    if _whole_number(raw):
        if len(raw) > _MAX_DAYS_DIGITS:
            raise GetQueryError(f"start {raw!r} reaches before year 1: use a smaller number of days")
        try:
            return today - timedelta(days=int(raw)), today, False
        except OverflowError:
            raise GetQueryError(
                f"start {raw!r} reaches before year 1: use a smaller number of days"
            ) from None
    keyword = keyword_range(raw, today)
    if keyword is not None:
        return keyword[0], keyword[1], False
    if ISO_DATE.fullmatch(raw):
        return _iso_date("start", raw), today, True
    raise GetQueryError(
        f"start {raw!r} is not accepted: use a date YYYY-MM-DD, a number of days (5 = the last "
        f"5 days up to today) or one of {', '.join(KEYWORDS)}; leave it empty for all"
    )


def _described(value: Any) -> str:
    """A field that is not text, briefly: never all of a deeply nested JSON value."""
    if isinstance(value, bool | float):
        return json.dumps(value)
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else "a file"


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise GetQueryError(f"{name} must be a string, received {_described(value)}")
    return str(value).strip()


def check_alias(fields: Mapping[str, Any], query_ws: str | None) -> None:
    """The Billing Extension path serves only ``ws=einvoice`` (a field, or in the query)."""
    ws = _text(fields, "ws") or (query_ws or "").strip()
    if ws.lower() != "einvoice":
        raise GetQueryError(f"ws {ws[:MAX_FIELD_LENGTH]!r} is not accepted on this path: send ws=einvoice")


def check_fields(fields: Mapping[str, Any]) -> None:
    """Refuse text no field may hold, read or not: NUL, lone surrogates, names or values
    longer than MAX_FIELD_LENGTH. (A field that is not text is refused where it is read.)"""
    for name, value in fields.items():
        shown = name[:40]
        for what, text in (("name", name), ("value", value)):
            if not isinstance(text, str):
                continue
            try:
                check_text(text, f"field {shown!r}", what)
            except NotCanonical as exc:
                raise GetQueryError(str(exc)) from None
            if len(text) > MAX_FIELD_LENGTH:
                raise GetQueryError(
                    f"field {shown!r}: the {what} is longer than {MAX_FIELD_LENGTH} characters"
                )


def parse_get(fields: Mapping[str, Any], today: date) -> GetQuery:
    """Validate a Get request's fields (the token is checked before, by the caller). ``store``
    selects one store of the coordinator's feed; the agent, one store itself, ignores it."""
    action = _text(fields, "action")
    if action.lower() != "get":
        what = f"action {action!r} is not supported" if action else "action is missing"
        raise GetQueryError(f"{what}: send action=Get")
    raw_type = _text(fields, "doctype")
    doctypes = BOTH_DOCTYPES
    if raw_type:
        doctype = DOCTYPES.get(raw_type.lower())
        if doctype is None:
            raise GetQueryError(
                f"doctype {raw_type!r} is not accepted: use Invoice or "
                "CreditNote (Invoices, CreditNotes), or leave it empty for both"
            )
        doctypes = frozenset((doctype,))
    store = _text(fields, "store") or None
    invoicenum, raw_id = _text(fields, "invoicenum"), _text(fields, "invoiceid")
    if invoicenum and raw_id:
        raise GetQueryError(
            f"invoicenum {invoicenum!r} and invoiceid {raw_id!r} exclude each other: send only one of them"
        )
    if raw_id:
        if not _whole_number(raw_id) or len(raw_id) > _MAX_ID_DIGITS or int(raw_id) >= BIGINT:
            raise GetQueryError(
                f"invoiceid {raw_id!r} is not accepted: it must be a whole "
                "number, the document ID (tblinvoices.id)"
            )
        return GetQuery(invoiceid=int(raw_id), doctypes=doctypes, store=store)
    if invoicenum:
        return GetQuery(invoicenum=invoicenum, doctypes=doctypes, store=store)
    raw_start, raw_end = _text(fields, "start"), _text(fields, "end")
    start, end, is_date = _start_range(raw_start, today)
    if raw_end:
        if not is_date:
            got = f"start {raw_start!r}" if raw_start else "no start"
            raise GetQueryError(
                f"end {raw_end!r} needs a start date in YYYY-MM-DD, received "
                f"{got}: end only works with a date start"
            )
        end = _iso_date("end", raw_end)
        if start is not None and end < start:
            raise GetQueryError(
                f"end {raw_end!r} is before start {raw_start!r}: end must be on or after start"
            )
    return GetQuery(start=start, end=end, doctypes=doctypes, store=store)


def json_fields(body: bytes) -> dict[str, Any]:
    """The fields of a JSON request body (form bodies are read by the web framework)."""
    try:
        fields = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise GetQueryError(
            "the request body is not valid JSON: send a JSON object or form fields (action=Get&token=…)"
        ) from None
    if not isinstance(fields, dict):
        raise GetQueryError(
            'the JSON body must be an object of parameters such as {"action": "Get", "token": "…"}'
        )
    return fields


def error_body(message: str) -> bytes:
    return orjson.dumps({"result": "error", "message": message})
