"""`/kpi report` text as people type it, read by the pure rules (no server, no database).

The same cases tests/test_report_command.py sends over signed HTTP; here each is the rule that
decides it: splitting the text (split_report_text), naming the KPI (find_kpi), reading the value
for the KPI's unit (check_value), the period for its cadence (check_period), the note (check_note),
and the words the user is shown for a refusal (the template the /kpi handler renders).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from bot import render
from bot.periods import looks_like_period
from bot.reports.service import (
    NOTE_MAX_LENGTH,
    ReportError,
    ReportText,
    check_note,
    check_period,
    check_value,
    find_kpi,
    split_report_text,
)
from tests.unit.plan import example_kpis, kpi

# The harness's day: Monday 30 November 2026 in Tokyo (current week 2026-W49, month 2026-11).
TODAY = dt.date(2026, 11, 30)


def read(text: str) -> tuple[str, str, Decimal, str | None]:
    """What a `/kpi report` text is taken to mean: KPI key, period key, value, note."""
    parts = split_report_text(text)
    found, _ = find_kpi(example_kpis(), parts.kpi, suggest_from=example_kpis())
    value = check_value(parts.value, found, in_command=True)
    period = check_period(parts.period, found, TODAY)
    return found.key, period.key, value, check_note(parts.note)


def refusal(error: pytest.ExceptionInfo[ReportError], locale: str = "ja") -> str:
    """The words the user sees for a refusal, as the /kpi handler renders them."""
    return render.message(f"report.error.{error.value.code}", locale, **error.value.params)


@pytest.mark.parametrize(
    ("text", "key", "period", "value"),
    [
        ("mqls 1,200", "mqls", "2026-11", Decimal(1200)),
        ("mqls １，２００", "mqls", "2026-11", Decimal(1200)),
        ("mqls 1.2k", "mqls", "2026-11", Decimal(1200)),
        ("mqls 1.2万 先月", "mqls", "2026-10", Decimal(12000)),
        ("MQL数 180 last month", "mqls", "2026-10", Decimal(180)),
        ("close_rate 15.5 % 2026-10", "close_rate", "2026-10", Decimal("15.5")),
        ("成約率 18%", "close_rate", "2026-11", Decimal(18)),
        ("New approaches 70", "new_approaches", "2026-11", Decimal(70)),
        ("average_deal_size ¥3,000万", "average_deal_size", "2026-11", Decimal(30_000_000)),
        ("pipeline_deals 38 2026-W48", "pipeline_deals", "2026-W48", Decimal(38)),
        ("pipeline_deals 41 先週", "pipeline_deals", "2026-W48", Decimal(41)),
        ("pipeline_deals 41 this week", "pipeline_deals", "2026-W49", Decimal(41)),
        ("website_visits 4800 last week", "website_visits", "2026-W48", Decimal(4800)),
    ],
)
def test_values_and_periods_as_people_type_them(text: str, key: str, period: str, value: Decimal) -> None:
    assert read(text) == (key, period, value, None)


def test_the_words_after_the_period_are_the_note() -> None:
    assert split_report_text("new_approaches 92 CRM import was late") == ReportText(
        "new_approaches", "92", None, "CRM import was late"
    )
    assert read("new_approaches 92 2026-10 CRM import was late")[1:] == (
        "2026-10",
        Decimal(92),
        "CRM import was late",
    )


@pytest.mark.parametrize("value", ["99999999999999", "-99999999999999", "123.456789"])
def test_the_largest_and_most_precise_storable_values_are_taken_exactly(value: str) -> None:
    key = "nps" if value.startswith("-") else "cost_per_lead"  # only a score may be negative
    assert check_value(value, kpi(key)) == Decimal(value)


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("new_aproaches 85", ["new_approaches", "もしかして"]),
        ("nothing_like_it 85", ["nothing_like_it", "/kpi list"]),
    ],
)
def test_a_kpi_not_known_by_that_name_gets_suggestions_or_the_list(text: str, expected: list[str]) -> None:
    parts = split_report_text(text)
    with pytest.raises(ReportError) as error:
        find_kpi(example_kpis(), parts.kpi, suggest_from=example_kpis())
    assert error.value.code == "unknown_kpi"
    for fragment in expected:
        assert fragment in refusal(error)


@pytest.mark.parametrize(
    ("key", "value", "code", "expected"),
    [
        (
            "new_approaches",
            "eighty",
            "not_a_number",
            ["新規アプローチ数 の値「eighty」は数値として読めません"],
        ),
        ("new_approaches", "1,20", "not_a_number", ["1,20", "カンマ"]),
        ("new_approaches", "-5", "negative", ["-5", "マイナス"]),
        ("new_approaches", "8.5", "not_whole", ["8.5", "整数"]),
        ("close_rate", "150%", "percent_over_100", ["150%", "100%"]),
        ("new_approaches", "15%", "unit_mismatch", ["15%", "単位"]),
        ("average_deal_size", "$12k", "unit_mismatch", ["$12k", "単位"]),
    ],
)
def test_a_value_the_kpi_cannot_take_is_refused_with_why(
    key: str, value: str, code: str, expected: list[str]
) -> None:
    with pytest.raises(ReportError) as error:
        check_value(value, kpi(key), in_command=True)
    assert error.value.code == code
    for fragment in expected:
        assert fragment in refusal(error)


@pytest.mark.parametrize(
    ("text", "value", "period"),
    [
        ("new_approaches 1,20", "1,20", None),  # a malformed number is still the value, not a name
        ("new_approaches -5", "-5", None),
        ("close_rate 150%", "150%", None),
        ("average_deal_size $12k", "$12k", None),
        ("new_approaches 85 2027-01", "85", "2027-01"),
        ("new_approaches 85 2026-13", "85", "2026-13"),  # a typo in a period is still the period
        ("pipeline_deals 40 先月", "40", "先月"),
        ("mqls 1.2.3", "1.2.3", None),  # starts like a number: the value slot, refused for why
        ("mqls 1e30", "1e30", None),
        ("mqls 100,000,000,000,000", "100,000,000,000,000", None),  # too large is still the value
        ("mqls 1" + "0" * 30, "1" + "0" * 30, None),
    ],
)
def test_the_value_and_the_period_are_found_even_when_they_will_be_refused(
    text: str, value: str, period: str | None
) -> None:
    parts = split_report_text(text)
    assert (parts.value, parts.period, parts.note) == (value, period, None)


@pytest.mark.parametrize(
    ("key", "period", "code", "expected"),
    [
        ("new_approaches", "2027-01", "period_future", ["2027-01", "まだ始まっていない"]),
        ("new_approaches", "2026-13", "period_bad_month", ["2026-13", "という月はありません"]),
        ("new_approaches", "2026-W48", "period_wrong_cadence", ["2026-W48", "月次"]),
        ("pipeline_deals", "先月", "period_wrong_cadence", ["先月", "週次"]),
    ],
)
def test_a_period_the_kpi_cannot_take_is_refused_with_why(
    key: str, period: str, code: str, expected: list[str]
) -> None:
    with pytest.raises(ReportError) as error:
        check_period(period, kpi(key), TODAY)
    assert error.value.code == code
    for fragment in expected:
        assert fragment in refusal(error)


def test_a_note_longer_than_a_message_may_be_is_refused() -> None:
    assert check_note("x" * NOTE_MAX_LENGTH) == "x" * NOTE_MAX_LENGTH
    with pytest.raises(ReportError) as error:
        check_note("x" * 2001)
    assert error.value.code == "note_too_long" and "2000" in refusal(error)


@pytest.mark.parametrize("text", ["new_approaches", "mqls abc", "mqls --5", "mqls 先月", "", "85"])
def test_text_without_a_kpi_and_a_number_after_it_is_the_usage(text: str) -> None:
    with pytest.raises(ReportError) as error:
        split_report_text(text)
    assert error.value.code == "usage"
    assert "KPI と値を指定してください" in refusal(error)


def test_a_period_where_the_value_should_be_means_the_value_was_left_out() -> None:
    # "mqls 先月": the handler says the value is missing rather than that 先月 is not a number.
    assert looks_like_period("先月") and not looks_like_period("abc")


# What a user sees for a value or period kpibot can't take: the word they typed, the KPI, how
# to write it; ja is the example plan's default, en is what an en-US Slack user gets.
EXAMPLES_JA = "`1200`、`1,200`、`１,２００`、`1.2万`、`15%`、`¥3,000万` のように入力してください。"
EXAMPLES_EN = "Write it like `1200`, `1,200`, `１,２００`, `1.2万`, `1.2k`, `15%` or `¥3,000万`."


@pytest.mark.parametrize(
    ("value", "locale", "expected"),
    [
        ("abc", "ja", f"MQL 数 の値「abc」は数値として読めません。{EXAMPLES_JA}例: `/kpi report mqls 1200`"),
        (
            "abc",
            "en",
            f"“abc” is not a number I can read for MQLs. {EXAMPLES_EN} For example: `/kpi report mqls 1200`",
        ),
        (
            "1.2.3",
            "ja",
            f"MQL 数 の値「1.2.3」は数値として読めません。{EXAMPLES_JA}例: `/kpi report mqls 1200`",
        ),
        (
            "--5",
            "en",
            f"“--5” is not a number I can read for MQLs. {EXAMPLES_EN} For example: `/kpi report mqls 1200`",
        ),
        (
            "100,000,000,000,000",
            "ja",
            "「100,000,000,000,000」は大きすぎて MQL 数 の値として保存できません。"
            "絶対値が 100兆 未満の値を入力してください。",
        ),
        (
            "1e30",
            "en",
            f"“1e30” is not a number I can read for MQLs. {EXAMPLES_EN} For example: `/kpi report mqls 1200`",
        ),
        (
            "1" + "0" * 30,
            "en",
            f"“1{'0' * 30}” is too large to store for MQLs. Keep it under 100,000,000,000,000.",
        ),
    ],
)
def test_a_known_kpi_with_a_value_it_cannot_take(value: str, locale: str, expected: str) -> None:
    with pytest.raises(ReportError) as error:
        check_value(value, kpi("mqls"), in_command=True)
    assert refusal(error, locale) == expected


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("ja", "「2026-13」という月はありません。`2026-11` のように入力してください。"),
        ("en", "“2026-13” has no such month. Write it like `2026-11`."),
    ],
)
def test_a_known_kpi_with_a_period_it_cannot_take(locale: str, expected: str) -> None:
    assert split_report_text("mqls 120 2026-13").period == "2026-13"
    with pytest.raises(ReportError) as error:
        check_period("2026-13", kpi("mqls"), TODAY)
    assert refusal(error, locale) == expected


@pytest.mark.parametrize(
    ("key", "example"),
    [
        ("close_rate", "例: `/kpi report close_rate 15%`"),
        ("average_deal_size", "例: `/kpi report average_deal_size ¥3,000万`"),
    ],
)
def test_the_example_command_fits_the_kpis_unit(key: str, example: str) -> None:
    with pytest.raises(ReportError) as error:
        check_value("high", kpi(key), in_command=True)
    assert refusal(error).endswith(example)


def test_more_decimals_than_the_database_keeps_are_refused() -> None:
    with pytest.raises(ReportError) as error:
        check_value("15.1234567", kpi("close_rate"), in_command=True)
    assert error.value.code == "too_precise"
