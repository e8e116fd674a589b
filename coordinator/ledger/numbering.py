"""Numbering rules: series settings, number formats, periods and allocation. Pure."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coordinator.ledger import series_defaults

SERIES_NAMES = ("invoice", "creditnote")
ALL_TIME = "all"  # the single period of a series that never resets
# Ceilings of a series' start (or next) and increment: a counter then stays far below
# PostgreSQL's bigint (2**63) for more numbers than any business issues.
MAX_START = 10**15
MAX_INCREMENT = 10**6

_TOKEN = re.compile(r"\{([A-Z]+)(?::([0-9]+))?\}")  # ASCII digits: int() takes any script's
_KNOWN_TOKENS = {"NUMBER", "YEAR", "YY", "MONTH", "DAY", "STORE"}


class FormatError(ValueError):
    pass


def check_format(fmt: str) -> None:
    """Refuse unknown tokens, stray braces and a format without ``{NUMBER}``."""
    has_number = False
    for match in _TOKEN.finditer(fmt):
        name, width = match.group(1), match.group(2)
        if name not in _KNOWN_TOKENS:
            raise FormatError(
                f"unknown token {{{name}}}; accepted: {{NUMBER}}, {{NUMBER:N}}, {{YEAR}}, "
                "{YY}, {MONTH}, {DAY}, {STORE}"
            )
        if width is not None and name != "NUMBER":
            raise FormatError(f"only {{NUMBER}} takes a width, not {{{name}:{width}}}")
        if width is not None and not 1 <= int(width) <= 20:
            raise FormatError(f"{{NUMBER:{width}}}: width must be between 1 and 20")
        has_number = has_number or name == "NUMBER"
    rest = _TOKEN.sub("", fmt)
    if "{" in rest or "}" in rest:
        raise FormatError(f"unbalanced or malformed braces in format {fmt!r}")
    if not has_number:
        raise FormatError("the format must contain {NUMBER} or {NUMBER:N}")
    if len(fmt) > 64:
        raise FormatError("the format may be at most 64 characters long")


_TOKEN_PATTERNS = {
    "NUMBER": "[0-9]+",
    "YEAR": "[0-9]{4}",
    "YY": "[0-9]{2}",
    "MONTH": "[0-9]{2}",
    "DAY": "[0-9]{2}",
}


def parse(fmt: str, formatted: str, store: str) -> tuple[int, int | None] | None:
    """The number (and the year, when the format shows one) of a text written in ``fmt``;
    None when the text does not follow the format. The inverse of ``render``.

    A two-digit year is read as 20YY. A token written twice must read alike both times.
    """
    names: list[str] = []
    pattern, end = [], 0
    for match in _TOKEN.finditer(fmt):
        pattern.append(re.escape(fmt[end : match.start()]))
        name = match.group(1)
        if name == "STORE":
            pattern.append(re.escape(store))
        else:
            names.append(name)
            pattern.append(f"({_TOKEN_PATTERNS[name]})")
        end = match.end()
    pattern.append(re.escape(fmt[end:]))
    found = re.fullmatch("".join(pattern), formatted)
    if found is None:
        return None
    read: dict[str, int] = {}
    for name, text in zip(names, found.groups(), strict=True):
        if read.setdefault(name, int(text)) != int(text):
            return None
    year = read.get("YEAR", 2000 + read["YY"] if "YY" in read else None)
    return read["NUMBER"], year


def render(fmt: str, number: int, doc_date: date, store: str) -> str:
    def token(match: re.Match[str]) -> str:
        name, width = match.group(1), match.group(2)
        if name == "NUMBER":
            return str(number).zfill(int(width)) if width else str(number)
        return {
            "YEAR": f"{doc_date.year:04d}",
            "YY": f"{doc_date.year % 100:02d}",
            "MONTH": f"{doc_date.month:02d}",
            "DAY": f"{doc_date.day:02d}",
            "STORE": store,
        }[name]

    return _TOKEN.sub(token, fmt)


class SeriesSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int = Field(default=series_defaults.START, ge=0, le=MAX_START)
    increment: int = Field(default=series_defaults.INCREMENT, ge=1, le=MAX_INCREMENT)
    format: str = "{NUMBER}"
    reset: Literal["never", "yearly"] = "never"
    assign_on: Literal["creation", "payment"] = "payment"
    dedicated: bool = True

    @field_validator("format")
    @classmethod
    def _valid_format(cls, value: str) -> str:
        check_format(value)
        return value

    @model_validator(mode="after")
    def _yearly_needs_year(self) -> SeriesSettings:
        # Numbers restart every year, so without the year in the text they would repeat.
        if self.reset == "yearly" and "{YEAR}" not in self.format and "{YY}" not in self.format:
            raise ValueError(
                "reset 'yearly' needs {YEAR} or {YY} in the format, "
                "otherwise formatted numbers would repeat across years"
            )
        return self


def period_of(settings: SeriesSettings, doc_date: date) -> str:
    return str(doc_date.year) if settings.reset == "yearly" else ALL_TIME


def counter_series(doctype: str, settings: dict[str, SeriesSettings]) -> str:
    """The series whose counter a document type draws from."""
    if doctype == "creditnote" and not settings["creditnote"].dedicated:
        return "invoice"
    return doctype


def number_of(
    doctype: str, formatted: str, settings: dict[str, SeriesSettings], store: str
) -> tuple[str, str, int] | None:
    """The counter, period and number a document's text names, read with its type's format:
    None when the text does not follow it (or, in a yearly series, shows no year)."""
    parsed = parse(settings[doctype].format, formatted, store)
    if parsed is None:
        return None
    number, year = parsed
    series = counter_series(doctype, settings)
    if settings[series].reset == "never":
        return series, ALL_TIME, number
    return None if year is None else (series, str(year), number)


def allocate(next_number: int, increment: int, pool: list[int]) -> tuple[int, int, bool]:
    """Pick a number: the lowest released one, else ``next``.

    Returns (number, new next, taken_from_pool). ``pool`` must be sorted ascending.
    """
    if pool:
        return pool[0], next_number, True
    return next_number, next_number + increment, False
