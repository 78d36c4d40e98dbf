"""The locale rules of bot/formats.py and the filters bot/render.py builds on them: no server, no database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from bot import formats, render
from bot.models import Cadence, Direction
from bot.periods import Period, parse_key
from bot.scoring import TargetValue, achievement_pct


@pytest.mark.parametrize(
    ("value", "ja", "en"),
    [
        ("9000", "9,000円", "¥9,000"),
        ("9999", "9,999円", "¥9,999"),
        # 9,999.5 rounds to 10,000, which is written in the next unit, not as "10,000円".
        ("9999.5", "1万円", "¥10K"),
        ("10000", "1万円", "¥10K"),
        ("12345", "1万2,350円", "¥12.35K"),
        ("84000000", "8,400万円", "¥84M"),
        ("99990000", "9,999万円", "¥99.99M"),
        ("99994999", "9,999万円", "¥99.99M"),
        ("99995000", "1億円", "¥100M"),
        ("100000000", "1億円", "¥100M"),
        # From 1億 the 万 stay: a KGI total moving by 10万円 still reads as moved.
        ("614986900", "6億1,499万円", "¥615M"),
        ("615086900", "6億1,509万円", "¥615.1M"),
        ("1000000000", "10億円", "¥1bn"),
        ("1234567890123", "1兆2,346億円", "¥1.235tn"),
        ("-84000000", "-8,400万円", "-¥84M"),
        ("-9999", "-9,999円", "-¥9,999"),
        ("-0.3", "0円", "¥0"),
        ("0", "0円", "¥0"),
    ],
)
def test_yen_read_as_a_report_writes_them(value: str, ja: str, en: str) -> None:
    assert formats.money(Decimal(value), "jpy", "ja") == ja
    assert formats.money(Decimal(value), "jpy", "en") == en
    assert render.localized(Decimal(value), "jpy", "ja") == ja


@pytest.mark.parametrize(
    ("value", "ja", "en"),
    [
        ("614986900", "6億1,498万6,900円", "¥614,986,900"),
        ("99995000", "9,999万5,000円", "¥99,995,000"),
        ("10023", "1万23円", "¥10,023"),
        ("-12345", "-1万2,345円", "-¥12,345"),
    ],
)
def test_exact_yen_keep_every_digit(value: str, ja: str, en: str) -> None:
    assert render.localized(Decimal(value), "jpy", "ja", exact=True) == ja
    assert render.localized(Decimal(value), "jpy", "en", exact=True) == en


def test_dollars_follow_the_same_rule() -> None:
    assert render.localized(Decimal("12.5"), "usd", "en") == "$12.5"
    assert render.localized(Decimal("12.5"), "usd", "ja") == "12.5ドル"
    assert render.localized(Decimal("1234567"), "usd", "en") == "$1.235M"
    assert render.localized(Decimal("1234567"), "usd", "ja") == "123万5,000ドル"


@pytest.mark.parametrize(
    ("value", "unit", "ja", "en"),
    [
        ("120", "count", "120件", "120"),
        ("12345", "count", "12,345件", "12,345"),
        ("61", "percent", "61%", "61%"),
        ("15.55", "percent", "15.6%", "15.6%"),
        ("12.5", "hours", "12.5時間", "12.5 h"),
        ("3", "days", "3日", "3 d"),
        ("42", "score", "42", "42"),
        ("-12", "score", "-12", "-12"),
    ],
)
def test_units_without_a_space_in_japanese(value: str, unit: str, ja: str, en: str) -> None:
    assert render.localized(Decimal(value), unit, "ja") == ja
    assert render.localized(Decimal(value), unit, "en") == en


def test_a_counter_other_than_ken() -> None:
    assert formats.number(Decimal(8), "count", "ja", counter="社") == "8社"
    assert formats.number(Decimal(8), "count", "en", counter="社") == "8"


def test_percent_never_takes_a_space() -> None:
    assert render.message("format.attainment", "ja", pct=formats.percent(Decimal("61.4"))) == "達成率 61%"
    assert formats.percent(Decimal("61.45"), 1) == "61.5%"
    assert formats.percent(None) == "—"


@pytest.mark.parametrize(
    ("low", "high", "unit", "ja", "en"),
    [
        ("15", "20", "percent", "15〜20%", "15–20%"),
        ("100", "120", "count", "100〜120件", "100–120"),
        ("30000000", "50000000", "jpy", "3,000〜5,000万円", "¥30M–¥50M"),
        ("30000000", "100000000", "jpy", "3,000万円〜1億円", "¥30M–¥100M"),
    ],
)
def test_a_range_writes_its_unit_once(low: str, high: str, unit: str, ja: str, en: str) -> None:
    for locale, expected in (("ja", ja), ("en", en)):
        ends = (render.localized(Decimal(low), unit, locale), render.localized(Decimal(high), unit, locale))
        assert formats.span(*ends, locale) == expected


@pytest.mark.parametrize(
    ("key", "ja", "en"),
    [
        ("2026-11", "2026年11月", "Nov 2026"),
        ("2027-01", "2027年1月", "Jan 2027"),
        ("2026-W48", "第48週(11/23〜11/29)", "week 48 (Nov 23–29)"),
        # A week across a month end, and ISO week 53 across the year end (2026 has 53 weeks).
        ("2026-W49", "第49週(11/30〜12/6)", "week 49 (Nov 30–Dec 6)"),
        ("2026-W53", "第53週(12/28〜1/3)", "week 53 (Dec 28–Jan 3)"),
        # Week 1 of 2026 starts in 2025.
        ("2026-W01", "第1週(12/29〜1/4)", "week 1 (Dec 29–Jan 4)"),
    ],
)
def test_periods_as_people_name_them(key: str, ja: str, en: str) -> None:
    assert render.period_label(parse_key(key), "ja") == ja
    assert render.period_label(key, "en") == en


def test_a_label_that_is_not_a_period_is_shown_as_given() -> None:
    assert render.period_label("—", "ja") == "—"
    assert render.period_label(Period(Cadence.MONTHLY, 2026, 4), "en") == "Apr 2026"

def test_a_charts_axis_names_periods_within_slacks_20_characters() -> None:
    # 13 weeks back from week 2 reach week 42 of the year before (ISO 2026 has 53 weeks).
    weeks = parse_key("2027-W02").last(13)
    for locale in ("ja", "en"):
        labels = [formats.axis_label(week, locale) for week in weeks]
        assert len(set(labels)) == 13 and all(len(label) <= 20 for label in labels)
    assert [formats.axis_label(week, "ja") for week in weeks[-3:]] == ["第53週", "第1週", "第2週"]
    assert [formats.axis_label(week, "en") for week in weeks[-3:]] == ["wk 53", "wk 1", "wk 2"]
    assert formats.axis_label("2026-11", "ja") == "2026年11月"
    assert formats.axis_label("2026-11", "en") == "Nov 2026"



@pytest.mark.parametrize(
    ("day", "ja", "en"),
    [
        # The fiscal year starts in April and is named by the year it starts in.
        (dt.date(2026, 4, 1), "2026年度 第1四半期", "FY2026 Q1"),
        (dt.date(2026, 11, 30), "2026年度 第3四半期", "FY2026 Q3"),
        (dt.date(2027, 1, 4), "2026年度 第4四半期", "FY2026 Q4"),
        (dt.date(2027, 3, 31), "2026年度 第4四半期", "FY2026 Q4"),
    ],
)
def test_fiscal_quarters_from_april(day: dt.date, ja: str, en: str) -> None:
    assert formats.quarter_label(day, "ja") == ja
    assert formats.quarter_label(day, "en") == en


def test_dates_with_their_weekday() -> None:
    day = dt.date(2026, 12, 16)  # a Wednesday
    assert render.day_label(day, "ja") == "12月16日(水)"
    assert render.day_label(day, "en") == "Wed, Dec 16"
    assert render.day_label(day, "ja", year=True) == "2026年12月16日(水)"
    assert render.day_label(day, "en", year=True) == "Wed, Dec 16, 2026"
    assert render.day_label(dt.date(2027, 1, 3), "ja") == "1月3日(日)"
    assert render.day_label(None, "ja") == "—"


def test_lower_is_better_reads_against_its_ceiling() -> None:
    ceiling = TargetValue.exact(Decimal(10_000))
    over = achievement_pct(Decimal(12_600), ceiling, Direction.LOWER)
    assert over is not None and round(over) == 79  # what 「目標の 79 %」 used to say
    assert render.attainment(over, Direction.LOWER, "ja") == "上限を26%超過"
    assert render.attainment(over, Direction.LOWER, "en") == "26% over its ceiling"
    under = achievement_pct(Decimal(8_000), ceiling, Direction.LOWER)
    assert render.attainment(under, "lower", "ja") == "上限より20%低い"
    assert render.attainment(under, "lower", "en") == "20% under its ceiling"
    assert render.attainment(Decimal(100), "lower", "ja") == "上限ちょうど"


def test_higher_is_better_reads_as_attainment() -> None:
    assert render.attainment(Decimal("61.4"), Direction.HIGHER, "ja") == "達成率 61%"
    assert render.attainment(Decimal("61.4"), "higher", "en") == "61% of target"
    assert render.attainment(None, "higher", "ja") == "—"
