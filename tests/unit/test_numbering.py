"""Numbering rules (docs/design.md §2): formats, series settings, periods, counters, allocation. Pure."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from coordinator.ledger.numbering import (
    ALL_TIME,
    FormatError,
    SeriesSettings,
    allocate,
    check_format,
    counter_series,
    number_of,
    parse,
    period_of,
    render,
)

D = date(2026, 3, 7)

# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "number", "doc_date", "store", "expected"),
    [
        ("{NUMBER}", 42, D, "s1", "42"),
        ("{NUMBER:5}", 42, D, "s1", "00042"),
        ("{NUMBER:1}", 7, D, "s1", "7"),
        ("{NUMBER:3}", 0, D, "s1", "000"),
        ("{NUMBER:3}", 123456, D, "s1", "123456"),  # wider than N: never truncated
        ("{YEAR}|{NUMBER}", 1, D, "s1", "2026|1"),
        ("{YY}|{NUMBER}", 1, D, "s1", "26|1"),
        ("{YY}|{NUMBER}", 1, date(2009, 1, 1), "s1", "09|1"),
        ("{YY}|{NUMBER}", 1, date(2000, 1, 1), "s1", "00|1"),
        ("{YEAR}|{NUMBER}", 1, date(987, 1, 1), "s1", "0987|1"),
        ("{MONTH}|{NUMBER}", 1, D, "s1", "03|1"),
        ("{MONTH}|{NUMBER}", 1, date(2026, 12, 1), "s1", "12|1"),
        ("{DAY}|{NUMBER}", 1, D, "s1", "07|1"),
        ("{DAY}|{NUMBER}", 1, date(2026, 1, 31), "s1", "31|1"),
        ("{STORE}|{NUMBER}", 1, D, "shop-eu", "shop-eu|1"),
        ("INV-{YEAR}/{NUMBER:4}", 17, D, "s1", "INV-2026/0017"),
        ("{STORE}-{YY}{MONTH}{DAY}-{NUMBER}", 9, D, "eu", "eu-260307-9"),
        ("{NUMBER}{NUMBER:3}", 5, D, "s1", "5005"),
        ("no. {NUMBER} (draft: no)", 3, D, "s1", "no. 3 (draft: no)"),
    ],
)
def test_render_tokens(fmt: str, number: int, doc_date: date, store: str, expected: str) -> None:
    check_format(fmt)
    assert render(fmt, number, doc_date, store) == expected


@given(number=st.integers(0, 10**15), width=st.integers(1, 20))
def test_number_width_zero_pads_and_never_truncates(number: int, width: int) -> None:
    text = render(f"{{NUMBER:{width}}}", number, D, "s")
    assert len(text) == max(width, len(str(number)))
    assert int(text) == number
    assert text.endswith(str(number))


_LITERAL = st.text(
    alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=6
)
_TOKEN = st.sampled_from(["{NUMBER}", "{NUMBER:6}", "{YEAR}", "{YY}", "{MONTH}", "{DAY}", "{STORE}"])
# A format as parts (literal text, token) and a tail, with what render() fills in.
_FORMAT = {
    "parts": st.lists(st.tuples(_LITERAL, _TOKEN), min_size=1, max_size=5),
    "tail": _LITERAL,
    "number": st.integers(0, 10**9),
    "store": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", fullmatch=True),
}


@given(**_FORMAT, doc_date=st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31)))
def test_render_keeps_literal_text_and_substitutes_every_token(
    parts: list[tuple[str, str]], tail: str, number: int, doc_date: date, store: str
) -> None:
    values = {
        "{NUMBER}": str(number),
        "{NUMBER:6}": str(number).zfill(6),
        "{YEAR}": f"{doc_date.year:04d}",
        "{YY}": f"{doc_date.year % 100:02d}",
        "{MONTH}": f"{doc_date.month:02d}",
        "{DAY}": f"{doc_date.day:02d}",
        "{STORE}": store,
    }
    fmt = "".join(lit + tok for lit, tok in parts) + tail
    expected = "".join(lit + values[tok] for lit, tok in parts) + tail
    assert render(fmt, number, doc_date, store) == expected


@given(**_FORMAT, doc_date=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
def test_parse_never_reads_another_number_than_render_wrote(
    parts: list[tuple[str, str]], tail: str, number: int, doc_date: date, store: str
) -> None:
    """An import's text is read back to the number it carries: a wrong reading would hand a
    number out twice (None, "not in this format", only costs the skip)."""
    fmt = "".join(lit + tok for lit, tok in parts) + tail
    if "{NUMBER" not in fmt:
        fmt += "{NUMBER}"
    has_year = "{YEAR}" in fmt or "{YY}" in fmt
    assert parse(fmt, render(fmt, number, doc_date, store), store) in (
        None,
        (number, doc_date.year if has_year else None),
    )


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("INV-{NUMBER}", "INV-60", (60, None)),
        ("INV-{NUMBER:4}", "INV-0060", (60, None)),
        ("INV-{NUMBER:4}", "INV-60", (60, None)),  # the same number, written without padding
        ("{YEAR}/{NUMBER}", "2025/7", (7, 2025)),
        ("{YY}{MONTH}-{NUMBER}", "2603-12", (12, 2026)),
        ("{STORE}-{NUMBER}", "eu.shop-3", (3, None)),
        ("{STORE}-{NUMBER}", "us.shop-3", None),
        ("INV-{NUMBER}", "INV-٦٠", None),  # non-ASCII digits are not a number of this format
        ("INV-{NUMBER}", "inv-60", None),
        ("{YEAR}-{NUMBER}-{YEAR}", "2025-1-2026", None),
    ],
)
def test_parse_reads_texts_in_the_format(
    fmt: str, text: str, expected: tuple[int, int | None] | None
) -> None:
    assert parse(fmt, text, "eu.shop") == expected


def test_number_of_names_the_counter_and_period() -> None:
    yearly = SeriesSettings(format="{YEAR}-{NUMBER}", reset="yearly")
    shared = {"invoice": yearly, "creditnote": SeriesSettings(format="CN{YEAR}-{NUMBER}", dedicated=False)}
    assert number_of("creditnote", "CN2025-4", shared, "s") == ("invoice", "2025", 4)
    assert number_of(
        "invoice", "2025-4", {**shared, "invoice": SeriesSettings(format="{YEAR}-{NUMBER}")}, "s"
    ) == ("invoice", ALL_TIME, 4)
    assert number_of("invoice", "X-4", shared, "s") is None


# -- check_format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt",
    ["{NUMBER}", "{NUMBER:1}", "{NUMBER:20}", "INV-{YEAR}-{NUMBER:6}", "{STORE}/{YY}/{MONTH}/{DAY}/{NUMBER}"],
)
def test_check_format_accepts(fmt: str) -> None:
    check_format(fmt)


@pytest.mark.parametrize(
    ("fmt", "complaint"),
    [
        ("{NUMBER}{FOO}", "unknown token {FOO}"),
        ("{NUMBER}-{YEARS}", "unknown token {YEARS}"),
        ("{NUMBER} {", "braces"),
        ("{NUMBER} }", "braces"),
        ("{{NUMBER}}", "braces"),
        ("{NUMBER", "braces"),
        ("{number}", "braces"),
        ("{NUMBER:}", "braces"),
        ("{NUMBER:x}", "braces"),
        ("{NUMBER:-3}", "braces"),
        ("{NUMBER}{}", "braces"),
        ("{NUMBER:0}", "width"),
        ("{NUMBER:21}", "width"),
        ("{NUMBER}{YEAR:4}", "only {NUMBER} takes a width"),
        ("{NUMBER}{STORE:2}", "only {NUMBER} takes a width"),
        ("{YEAR}-{YY}", "must contain {NUMBER}"),
        ("INV-", "must contain {NUMBER}"),
        ("", "must contain {NUMBER}"),
        ("{NUMBER}" + "x" * 60, "at most 64"),
    ],
)
def test_check_format_refuses(fmt: str, complaint: str) -> None:
    with pytest.raises(FormatError) as info:
        check_format(fmt)
    assert complaint in str(info.value)


def test_format_error_is_a_value_error() -> None:
    # pydantic turns a ValueError raised in a validator into a validation error with the text.
    with pytest.raises(ValidationError, match="unknown token"):
        SeriesSettings(format="{NUMBER}{WEEK}")


# -- SeriesSettings ------------------------------------------------------------------------------


def test_settings_defaults_follow_the_design() -> None:
    s = SeriesSettings()
    assert (s.start, s.increment, s.format, s.reset, s.assign_on, s.dedicated) == (
        1,
        1,
        "{NUMBER}",
        "never",
        "payment",
        True,
    )


@pytest.mark.parametrize("fmt", ["{YEAR}-{NUMBER}", "{YY}{NUMBER:5}", "{STORE}/{YEAR}/{NUMBER}"])
def test_yearly_reset_with_year_in_format_is_accepted(fmt: str) -> None:
    assert SeriesSettings(reset="yearly", format=fmt).reset == "yearly"


@pytest.mark.parametrize("fmt", ["{NUMBER}", "{MONTH}-{NUMBER}", "YEAR-{NUMBER}", "{STORE}{DAY}{NUMBER}"])
def test_yearly_reset_without_year_in_format_is_refused(fmt: str) -> None:
    with pytest.raises(ValidationError, match="yearly"):
        SeriesSettings(reset="yearly", format=fmt)


@pytest.mark.parametrize(
    "changes",
    [
        {"increment": 0},
        {"increment": -1},
        {"start": -1},
        {"reset": "monthly"},
        {"assign_on": "later"},
        {"format": "{NUMBER}{X}"},
        {"prefix": "INV"},  # unknown key
        {"next": 5},  # 'next' is not a stored setting
    ],
)
def test_settings_refuse(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SeriesSettings.model_validate(changes)


def test_settings_are_frozen() -> None:
    s = SeriesSettings()
    with pytest.raises(ValidationError):
        s.start = 5  # type: ignore[misc]


def test_settings_round_trip_through_model_dump() -> None:
    s = SeriesSettings(
        start=100,
        increment=5,
        format="{YY}-{NUMBER:4}",
        reset="yearly",
        assign_on="creation",
        dedicated=False,
    )
    assert SeriesSettings.model_validate(s.model_dump()) == s


# -- periods and counters ------------------------------------------------------------------------


@pytest.mark.parametrize("doc_date", [date(2025, 12, 31), date(2026, 1, 1), date(1999, 6, 30)])
def test_never_reset_has_a_single_period(doc_date: date) -> None:
    assert period_of(SeriesSettings(), doc_date) == ALL_TIME == "all"


def test_yearly_period_is_the_documents_year_across_the_boundary() -> None:
    s = SeriesSettings(reset="yearly", format="{YEAR}-{NUMBER}")
    assert period_of(s, date(2025, 12, 31)) == "2025"
    assert period_of(s, date(2026, 1, 1)) == "2026"
    assert period_of(s, date(2026, 12, 31)) == "2026"


@given(doc_date=st.dates())
def test_yearly_period_is_always_the_year(doc_date: date) -> None:
    s = SeriesSettings(reset="yearly", format="{YY}{NUMBER}")
    assert period_of(s, doc_date) == str(doc_date.year)


def _series(*, dedicated: bool) -> dict[str, SeriesSettings]:
    return {"invoice": SeriesSettings(), "creditnote": SeriesSettings(dedicated=dedicated)}


def test_counter_series() -> None:
    assert counter_series("invoice", _series(dedicated=True)) == "invoice"
    assert counter_series("invoice", _series(dedicated=False)) == "invoice"
    assert counter_series("creditnote", _series(dedicated=True)) == "creditnote"
    assert counter_series("creditnote", _series(dedicated=False)) == "invoice"


# -- allocate ------------------------------------------------------------------------------------


def test_allocate_takes_next_and_advances_by_increment() -> None:
    assert allocate(7, 3, []) == (7, 10, False)


def test_allocate_takes_the_lowest_released_number_first() -> None:
    assert allocate(20, 5, [5, 10, 15]) == (5, 20, True)


@given(
    next_number=st.integers(0, 10**12),
    increment=st.integers(1, 10**6),
    pool=st.lists(st.integers(0, 10**12), unique=True, max_size=5).map(sorted),
)
def test_allocate_property(next_number: int, increment: int, pool: list[int]) -> None:
    number, new_next, from_pool = allocate(next_number, increment, list(pool))
    if pool:
        assert (number, new_next, from_pool) == (min(pool), next_number, True)
    else:
        assert (number, new_next, from_pool) == (next_number, next_number + increment, False)
