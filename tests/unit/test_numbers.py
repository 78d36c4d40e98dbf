"""Tests for bot.numbers: what people type, what we refuse, and how numbers are shown back."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from bot.numbers import (
    MAX_ABS_VALUE,
    NumberFormatError,
    ParsedNumber,
    format_compact,
    format_decimal,
    parse_number,
)

ACCEPTED = [
    # plain and grouped
    ("1200", "1200", None),
    ("1,200", "1200", None),
    ("1,234,567.89", "1234567.89", None),
    ("0.5", "0.5", None),
    (".5", "0.5", None),
    ("007", "7", None),
    ("  42\t", "42", None),
    ("\u3000４２\u3000", "42", None),  # ideographic spaces around full-width digits
    # full-width forms (NFKC)
    ("１，２００", "1200", None),
    ("１,２００", "1200", None),
    ("１２．５", "12.5", None),
    ("－３", "-3", None),
    # signs
    ("-3", "-3", None),
    ("\u22123", "-3", None),  # U+2212 MINUS SIGN, which NFKC leaves alone
    ("+5", "5", None),
    ("-0", "0", None),
    ("-$5", "-5", "usd"),
    ("$-5", "-5", "usd"),
    ("¥ -3,000", "-3000", "jpy"),
    # latin scales
    ("1.2k", "1200", None),
    ("1.2K", "1200", None),
    ("1.2 k", "1200", None),
    ("3m", "3000000", None),
    ("3M", "3000000", None),
    ("2b", "2000000000", None),
    ("1.5bn", "1500000000", None),
    ("1.5BN", "1500000000", None),
    ("0.25k", "250", None),
    # kanji scales
    ("2千", "2000", None),
    ("1.2万", "12000", None),
    ("１．２万", "12000", None),
    ("3億", "300000000", None),
    ("1兆", "1000000000000", None),
    ("1億2000万", "120000000", None),
    ("1億2,000万", "120000000", None),
    ("3,000万", "30000000", None),
    ("2千万", "20000000", None),
    ("2千500万", "25000000", None),
    ("1億2千", "100002000", None),
    ("1万2千", "12000", None),
    ("1万5", "10005", None),
    ("1兆2億3万4", "1000200030004", None),
    ("1.5千万", "15000000", None),
    # yen
    ("¥3,000万", "30000000", "jpy"),
    ("3,000万円", "30000000", "jpy"),
    ("¥12,000", "12000", "jpy"),
    ("￥12,000", "12000", "jpy"),
    ("12000円", "12000", "jpy"),
    ("12,000 円", "12000", "jpy"),
    ("1200 JPY", "1200", "jpy"),
    ("JPY1200", "1200", "jpy"),
    # dollars
    ("$12k", "12000", "usd"),
    ("＄12k", "12000", "usd"),
    ("$1.2M", "1200000", "usd"),
    ("USD 1,200", "1200", "usd"),
    ("1200 USD", "1200", "usd"),
    ("1200usd", "1200", "usd"),
    # percent
    ("15%", "15", "percent"),
    ("15.5 %", "15.5", "percent"),
    ("１５％", "15", "percent"),
    ("-3.25%", "-3.25", "percent"),
    # the limit itself is allowed
    ("1,000,000,000,000,000,000", "1000000000000000000", None),
    ("1000000兆", "1000000000000000000", None),
]


@pytest.mark.parametrize(("text", "value", "unit"), ACCEPTED)
def test_parse_number_accepts(text: str, value: str, unit: str | None) -> None:
    parsed = parse_number(text)
    assert parsed == ParsedNumber(Decimal(value), unit)
    assert isinstance(parsed.value, Decimal)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1.2万", "12000"),
        ("1.2k", "1200"),
        ("0.50", "0.5"),
        ("12000.00", "12000"),
        ("-0.0", "0"),
        ("3億", "300000000"),
    ],
)
def test_parse_number_returns_canonical_decimals(text: str, canonical: str) -> None:
    # Equality alone would accept Decimal("1.2E+4"); callers store and print these, so the form matters.
    assert str(parse_number(text).value) == canonical


REJECTED = [
    ("", "empty"),
    ("   ", "empty"),
    ("\u3000", "empty"),
    ("abc", "not_a_number"),
    ("百", "not_a_number"),
    ("三千", "not_a_number"),
    ("100京", "not_a_number"),  # only 千/万/億/兆 are supported
    ("千", "not_a_number"),
    ("万", "not_a_number"),
    ("1.2.3", "not_a_number"),
    ("1,2,3,,", "not_a_number"),
    ("1,,000", "not_a_number"),
    ("1,000,", "not_a_number"),
    ("12k%", "not_a_number"),
    ("1万%", "not_a_number"),
    ("$15%", "not_a_number"),
    ("¥100円", "not_a_number"),
    ("$100 JPY", "not_a_number"),
    ("1e5", "not_a_number"),
    ("1E5", "not_a_number"),
    ("NaN", "not_a_number"),
    ("nan", "not_a_number"),
    ("Infinity", "not_a_number"),
    ("-inf", "not_a_number"),
    ("5.", "not_a_number"),
    (".", "not_a_number"),
    ("-", "not_a_number"),
    ("$", "not_a_number"),
    ("%", "not_a_number"),
    ("USD", "not_a_number"),
    ("--5", "not_a_number"),
    ("-$-5", "not_a_number"),
    ("1 200", "not_a_number"),
    ("12kk", "not_a_number"),
    ("1.2万k", "not_a_number"),
    ("1万億", "not_a_number"),  # units out of order
    ("1万1億", "not_a_number"),
    ("1万2万", "not_a_number"),  # a unit may not repeat...
    ("1万0万", "not_a_number"),  # ...even when the repeat adds nothing
    ("1億12000万", "not_a_number"),  # group overflows into 億
    ("1万20000", "not_a_number"),
    ("2千千", "not_a_number"),
    ("2千1500万", "not_a_number"),
    ("1.5万3000", "not_a_number"),
    ("0x10", "not_a_number"),
    ("٣", "not_a_number"),  # Arabic-Indic digit: NFKC keeps it and we only read 0-9
    ("1,20", "ambiguous_separator"),
    ("12,00", "ambiguous_separator"),
    ("1,2,3", "ambiguous_separator"),
    ("0,500", "ambiguous_separator"),
    ("1234,567", "ambiguous_separator"),
    ("1,20.5", "ambiguous_separator"),
    ("1,20万", "ambiguous_separator"),
    ("$1,20k", "ambiguous_separator"),
    ("1.200,50", "ambiguous_separator"),
    ("1.200.000", "ambiguous_separator"),
    ("1,000,000,000,000,000,001", "too_large"),
    ("-1,000,000,000,000,000,001", "too_large"),
    ("1000001兆", "too_large"),  # 1000000兆 is exactly 10^18, which is allowed
    ("1000000000000b", "too_large"),
    ("9" * 400, "too_large"),
]


@pytest.mark.parametrize(("text", "code"), REJECTED)
def test_parse_number_rejects(text: str, code: str) -> None:
    with pytest.raises(NumberFormatError) as excinfo:
        parse_number(text)
    assert excinfo.value.code == code
    assert excinfo.value.text == text


def test_number_format_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_number("abc")


@pytest.mark.parametrize(
    ("text", "hints"),
    [("1,20", ["1.20", "120"]), ("12,00", ["12.00", "1200"]), ("1.200,5", ["1200.5"])],
)
def test_ambiguous_separator_message_suggests_unambiguous_spellings(text: str, hints: list[str]) -> None:
    with pytest.raises(NumberFormatError) as excinfo:
        parse_number(text)
    for hint in hints:
        assert hint in str(excinfo.value)


def test_parsed_number_is_frozen() -> None:
    parsed = parse_number("1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.value = Decimal(2)  # type: ignore[misc]


def test_max_abs_value_is_ten_to_the_eighteenth() -> None:
    assert Decimal(10**18) == MAX_ABS_VALUE


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        ("12000.00", {}, "12,000"),
        ("15.50", {}, "15.5"),
        ("0", {}, "0"),
        ("0.5", {}, "0.5"),
        ("1234567.891", {}, "1,234,567.89"),
        ("1234567.895", {}, "1,234,567.9"),  # half-up, then the trailing zero goes
        ("2.345", {}, "2.35"),
        ("2.344", {}, "2.34"),
        ("-2.345", {}, "-2.35"),  # half-up is away from zero for negatives
        ("-1234.5", {}, "-1,234.5"),
        ("-0.001", {}, "0"),  # no "-0"
        ("999.999", {}, "1,000"),
        ("1.2E+4", {}, "12,000"),
        ("1000000000000000000", {}, "1,000,000,000,000,000,000"),
        ("15.55", {"max_fraction_digits": 1}, "15.6"),
        ("2.5", {"max_fraction_digits": 0}, "3"),
        ("0.123456", {"max_fraction_digits": 4}, "0.1235"),
        ("12000.5", {"locale": "ja"}, "12,000.5"),
        ("12345678901234567890123456789012.345", {}, "12,345,678,901,234,567,890,123,456,789,012.35"),
    ],
)
def test_format_decimal(value: str, kwargs: dict[str, object], expected: str) -> None:
    assert format_decimal(Decimal(value), **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1234.5", "-0.25", "1000000", "12.34"])
def test_format_decimal_round_trips_through_parse(value: str) -> None:
    for locale in ("en", "ja"):
        assert parse_number(format_decimal(Decimal(value), locale)).value == Decimal(value)


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity")])
def test_format_decimal_rejects_non_finite(bad: Decimal) -> None:
    with pytest.raises(ValueError):
        format_decimal(bad)


def test_format_decimal_rejects_negative_fraction_digits() -> None:
    with pytest.raises(ValueError):
        format_decimal(Decimal(1), max_fraction_digits=-1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120000000", "1.2億"),
        ("30000000", "3,000万"),
        ("12000", "1.2万"),
        ("12345", "1.2万"),
        ("10000", "1万"),
        ("9999", "9,999"),
        ("1234.56", "1,234.6"),
        ("0.04", "0"),
        ("9999.99", "1万"),  # rounding carries into the next unit
        ("99999999", "1億"),
        ("1000000000000", "1兆"),
        ("-30000000", "-3,000万"),
        ("150000000", "1.5億"),
    ],
)
def test_format_compact_ja(value: str, expected: str) -> None:
    assert format_compact(Decimal(value), "ja") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1200", "1.2k"),
        ("1000", "1k"),
        ("999", "999"),
        ("999.95", "1k"),
        ("12345", "12.3k"),
        ("999950", "1M"),  # not "1,000k"
        ("2500000", "2.5M"),
        ("1000000000", "1B"),
        ("1500000000000", "1,500B"),
        ("-1200", "-1.2k"),
        ("-0.01", "0"),
    ],
)
def test_format_compact_en(value: str, expected: str) -> None:
    assert format_compact(Decimal(value), "en") == expected


@pytest.mark.parametrize(
    ("locale", "expected"), [("ja-JP", "1.2万"), ("JA", "1.2万"), ("en-US", "12k"), ("fr", "12k")]
)
def test_format_compact_locale_variants(locale: str, expected: str) -> None:
    assert format_compact(Decimal(12000), locale) == expected


@pytest.mark.parametrize("value", ["120000000", "30000000", "12000", "1500000000000"])
def test_format_compact_output_parses_back(value: str) -> None:
    for locale in ("ja", "en"):
        assert parse_number(format_compact(Decimal(value), locale)).value == Decimal(value)
