"""Periods and fiscal years: ISO weeks, months, April-start fiscal years."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.models import Cadence
from bot.periods import (
    Period,
    PeriodError,
    fiscal_quarter,
    fiscal_year,
    fiscal_year_bounds,
    fiscal_year_periods,
    parse_key,
    parse_period,
    period_of,
    weeks_in_month,
)

D = dt.date
W = Cadence.WEEKLY
M = Cadence.MONTHLY


@pytest.mark.parametrize(
    ("day", "cadence", "key"),
    [
        (D(2026, 11, 30), Cadence.WEEKLY, "2026-W49"),  # a Monday starts its week
        (D(2026, 11, 29), Cadence.WEEKLY, "2026-W48"),  # Sunday ends the previous one
        (D(2026, 12, 31), Cadence.WEEKLY, "2026-W53"),  # 2026 has 53 ISO weeks
        (D(2027, 1, 3), Cadence.WEEKLY, "2026-W53"),  # early January can belong to last year's week
        (D(2024, 12, 30), Cadence.WEEKLY, "2025-W01"),  # late December can belong to next year's week
        (D(2026, 11, 30), Cadence.MONTHLY, "2026-11"),
        (D(2027, 1, 1), Cadence.MONTHLY, "2027-01"),
    ],
)
def test_period_of(day: dt.date, cadence: Cadence, key: str) -> None:
    assert period_of(day, cadence).key == key


def test_week_bounds_are_monday_to_sunday() -> None:
    week = parse_key("2026-W48")
    assert (week.start, week.end, week.days) == (D(2026, 11, 23), D(2026, 11, 29), 7)
    assert week.start.weekday() == 0


@pytest.mark.parametrize(
    ("key", "days"), [("2026-02", 28), ("2028-02", 29), ("2026-11", 30), ("2026-12", 31)]
)
def test_month_lengths(key: str, days: int) -> None:
    assert parse_key(key).days == days


def test_shift_crosses_years() -> None:
    assert parse_key("2026-12").next().key == "2027-01"
    assert parse_key("2027-01").shift(-13).key == "2025-12"
    assert parse_key("2026-W53").next().key == "2027-W01"
    assert parse_key("2027-W01").previous().key == "2026-W53"


def test_last_lists_oldest_first() -> None:
    assert [p.key for p in parse_key("2026-W02").last(4)] == ["2025-W51", "2025-W52", "2026-W01", "2026-W02"]


def test_periods_order_within_a_cadence() -> None:
    assert parse_key("2026-W09") < parse_key("2026-W10") < parse_key("2027-W01")
    with pytest.raises(TypeError):
        _ = parse_key("2026-11") < parse_key("2026-W48")


def test_week_belongs_to_the_month_of_its_thursday() -> None:
    # 2026-W49 runs Mon 30 Nov – Sun 6 Dec; its Thursday is 3 Dec.
    assert parse_key("2026-W49").month().key == "2026-12"
    assert [w.key for w in weeks_in_month(parse_key("2026-11"))] == [
        "2026-W45",
        "2026-W46",
        "2026-W47",
        "2026-W48",
    ]
    assert len(weeks_in_month(parse_key("2026-12"))) == 5


@pytest.mark.parametrize("key", ["2026-W48", "2026w48", "2026-11", "2026-1"])
def test_parse_key_accepts(key: str) -> None:
    assert parse_key(key) in (
        Period(Cadence.WEEKLY, 2026, 48),
        Period(Cadence.MONTHLY, 2026, 11),
        Period(Cadence.MONTHLY, 2026, 1),
    )


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("2026-13", "bad_month"),
        ("2026-00", "bad_month"),
        ("2025-W53", "bad_week"),
        ("2026-W54", "bad_week"),
        ("November", "malformed"),
        ("2026/11", "malformed"),
        ("", "malformed"),
    ],
)
def test_parse_key_rejects(key: str, code: str) -> None:
    with pytest.raises(PeriodError) as error:
        parse_key(key)
    assert error.value.code == code


@pytest.mark.parametrize(
    ("day", "start_month", "year", "quarter"),
    [
        (D(2026, 4, 1), 4, 2026, 1),
        (D(2026, 3, 31), 4, 2025, 4),
        (D(2027, 3, 31), 4, 2026, 4),
        (D(2026, 11, 30), 4, 2026, 3),
        (D(2026, 11, 30), 1, 2026, 4),
        (D(2026, 9, 30), 10, 2025, 4),
        (D(2026, 10, 1), 10, 2026, 1),
    ],
)
def test_fiscal_year_and_quarter(day: dt.date, start_month: int, year: int, quarter: int) -> None:
    assert fiscal_year(day, start_month) == year
    assert fiscal_quarter(day, start_month) == quarter


def test_fiscal_year_bounds() -> None:
    assert fiscal_year_bounds(2026) == (D(2026, 4, 1), D(2027, 3, 31))
    assert fiscal_year_bounds(2026, 1) == (D(2026, 1, 1), D(2026, 12, 31))
    assert fiscal_year_bounds(2027, 4)[1] == D(2028, 3, 31)


def test_fiscal_year_periods_cover_the_year_once() -> None:
    months = fiscal_year_periods(2026, Cadence.MONTHLY)
    assert [months[0].key, months[-1].key, len(months)] == ["2026-04", "2027-03", 12]
    weeks = fiscal_year_periods(2026, Cadence.WEEKLY)
    assert len(weeks) in (52, 53)
    # Consecutive fiscal years share no week and leave no gap.
    following = fiscal_year_periods(2027, Cadence.WEEKLY)
    assert weeks[-1].next() == following[0]
    assert not set(weeks) & set(following)


# -- pinned dates: the turn of the year, the fiscal year, months' first, 7th and last days ----------


@pytest.mark.parametrize(
    ("day", "week", "month", "quarter"),
    [
        (D(2026, 12, 28), "2026-W53", "2026-12", 3),
        (D(2026, 12, 31), "2026-W53", "2026-12", 3),
        (D(2027, 1, 1), "2026-W53", "2027-01", 4),
        (D(2027, 1, 3), "2026-W53", "2027-01", 4),
        (D(2027, 1, 4), "2027-W01", "2027-01", 4),
    ],
)
def test_new_year_days_fall_in_week_53_and_fiscal_2026(
    day: dt.date, week: str, month: str, quarter: int
) -> None:
    assert period_of(day, W).key == week
    assert period_of(day, M).key == month
    assert (fiscal_year(day), fiscal_quarter(day)) == (2026, quarter)


def test_week_53_runs_from_28_december_to_3_january_and_belongs_to_december() -> None:
    week = parse_key("2026-W53")
    assert (week.start, week.end, week.days) == (D(2026, 12, 28), D(2027, 1, 3), 7)
    assert week.month().key == "2026-12"  # its Thursday is 31 December
    assert weeks_in_month(parse_key("2026-12"))[-1] == week
    january = weeks_in_month(parse_key("2027-01"))
    assert (january[0].key, january[0].start) == ("2027-W01", D(2027, 1, 4))
    assert week in fiscal_year_periods(2026, W)


def test_the_week_of_31_march_2027_counts_in_the_next_fiscal_year() -> None:
    # 2027-W13 runs Mon 29 March – Sun 4 April; its Thursday, 1 April, is in fiscal 2027.
    week = period_of(D(2027, 3, 31), W)
    assert week == period_of(D(2027, 4, 1), W) == parse_key("2027-W13")
    assert fiscal_year(D(2027, 3, 31)) == 2026 and fiscal_year(D(2027, 4, 1)) == 2027
    assert fiscal_year_periods(2026, W)[-1].key == "2027-W12"
    assert fiscal_year_periods(2027, W)[0] == week
    assert week not in fiscal_year_periods(2026, W)


@pytest.mark.parametrize(
    ("month", "first", "seventh", "last"),
    [
        ("2026-12", D(2026, 12, 1), D(2026, 12, 7), D(2026, 12, 31)),
        ("2027-02", D(2027, 2, 1), D(2027, 2, 7), D(2027, 2, 28)),
        ("2028-02", D(2028, 2, 1), D(2028, 2, 7), D(2028, 2, 29)),
        ("2027-03", D(2027, 3, 1), D(2027, 3, 7), D(2027, 3, 31)),
        ("2027-04", D(2027, 4, 1), D(2027, 4, 7), D(2027, 4, 30)),
    ],
)
def test_first_seventh_and_last_day_are_in_their_month(
    month: str, first: dt.date, seventh: dt.date, last: dt.date
) -> None:
    period = parse_key(month)
    assert (period.start, period.end) == (first, last)
    assert all(period_of(day, M) == period and period.contains(day) for day in (first, seventh, last))
    assert period_of(last + dt.timedelta(days=1), M) == period.next()
    assert period_of(first - dt.timedelta(days=1), M) == period.previous()


@pytest.mark.parametrize(
    ("today", "text", "cadence", "key"),
    [
        (D(2027, 1, 1), "先月", M, "2026-12"),
        (D(2027, 1, 1), "this month", M, "2027-01"),
        (D(2027, 1, 1), "今週", W, "2026-W53"),
        (D(2027, 1, 4), "last week", W, "2026-W53"),
        (D(2027, 1, 4), "今週", W, "2027-W01"),
        (D(2026, 12, 31), "先々月", M, "2026-10"),
        (D(2026, 12, 7), "先週", W, "2026-W49"),  # the 7th is a Monday: last week ended yesterday
        (D(2027, 4, 1), "先月", M, "2027-03"),
        (D(2027, 3, 31), "今月", M, "2027-03"),
        (D(2028, 3, 1), "last month", M, "2028-02"),
        (D(2027, 1, 1), "2027年1月", M, "2027-01"),  # the first day of a month may be reported
        (D(2027, 1, 4), "2027-W01", W, "2027-W01"),
    ],
)
def test_periods_people_type_on_pinned_days(today: dt.date, text: str, cadence: Cadence, key: str) -> None:
    assert parse_period(text, cadence, today).key == key


@pytest.mark.parametrize(
    ("today", "text", "cadence"),
    [
        (D(2026, 12, 31), "2027-01", M),
        (D(2026, 12, 31), "2027年1月", M),
        (D(2027, 1, 3), "2027-W01", W),
        (D(2027, 3, 31), "2027-04", M),
    ],
)
def test_a_period_that_has_not_started_is_future(today: dt.date, text: str, cadence: Cadence) -> None:
    with pytest.raises(PeriodError) as error:
        parse_period(text, cadence, today)
    assert error.value.code == "future"
