"""What must hold on every date: periods, fiscal years, pace, digest slots and reminders.

Each test takes `any_day` (10:00 Tokyo on KPIBOT_TEST_DATE, default today) and computes its
expectations from it; `.ci/any-date` runs them at a date drawn for the run, so a rule that only
holds on some days of the calendar fails in CI before it fails for a user. The pinned dates
(2026-W53, New Year, 31 March, DST) are tested in test_periods.py and test_slots.py.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import jpholiday
import pytest

from bot import clock
from bot.alerts.rules import PACE_MIN_ELAPSED, projected
from bot.models import Cadence
from bot.periods import (
    PeriodError,
    fiscal_quarter,
    fiscal_year,
    fiscal_year_bounds,
    fiscal_year_periods,
    parse_key,
    parse_period,
    period_of,
)
from bot.schedule.slots import (
    REMINDER_TIME,
    digest_slots,
    is_working_day,
    next_digest_slot,
    next_reminder,
    previous_digest_slot,
    slot_key,
)
from bot.scorecard import current_period, reviewed_period

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
WEEK = dt.timedelta(weeks=1)
# A week between two slots at the same local time is an hour longer or shorter across a DST change.
DST_HOUR = dt.timedelta(hours=1)
# A holiday slot moves to the next working day; no run of Japanese holidays is this long.
LONGEST_SHIFT = dt.timedelta(days=14)
THIS = {Cadence.MONTHLY: ("今月", "this month"), Cadence.WEEKLY: ("今週", "this week")}
LAST = {Cadence.MONTHLY: ("先月", "last month"), Cadence.WEEKLY: ("先週", "last week")}


def test_the_clock_reads_the_day_under_test(any_day: dt.date) -> None:
    assert clock.today(TOKYO) == any_day
    assert clock.utcnow().astimezone(TOKYO).time() == dt.time(10)


@pytest.mark.parametrize("cadence", list(Cadence))
def test_the_current_period_contains_today_and_the_reviewed_one_is_finished(
    any_day: dt.date, cadence: Cadence
) -> None:
    current = current_period(cadence, any_day)
    reviewed = reviewed_period(cadence, any_day)
    assert current.start <= any_day <= current.end and current.contains(any_day)
    assert reviewed.end < any_day and reviewed.next() == current
    assert parse_key(current.key) == current
    # What people type gives the same periods, and the next period cannot be reported yet.
    assert {parse_period(text, cadence, any_day) for text in THIS[cadence]} == {current}
    assert {parse_period(text, cadence, any_day) for text in LAST[cadence]} == {reviewed}
    with pytest.raises(PeriodError) as error:
        parse_period(current.next().key, cadence, any_day)
    assert error.value.code == "future"


def test_this_week_belongs_to_a_month_it_overlaps(any_day: dt.date) -> None:
    week = period_of(any_day, Cadence.WEEKLY)
    month = week.month()
    assert month.contains(week.start + dt.timedelta(days=3))  # by its Thursday
    assert month in (period_of(week.start, Cadence.MONTHLY), period_of(week.end, Cadence.MONTHLY))


@pytest.mark.parametrize("start_month", [4, 1, 10])
def test_the_fiscal_year_of_today_contains_today(any_day: dt.date, start_month: int) -> None:
    year = fiscal_year(any_day, start_month)
    start, end = fiscal_year_bounds(year, start_month)
    assert start <= any_day <= end
    assert start.month == start_month and start.day == 1
    months = fiscal_year_periods(year, Cadence.MONTHLY, start_month)
    assert len(months) == 12 and period_of(any_day, Cadence.MONTHLY) in months
    quarter = fiscal_quarter(any_day, start_month)
    assert months.index(period_of(any_day, Cadence.MONTHLY)) // 3 + 1 == quarter
    # This week counts in the fiscal year of its Thursday, exactly once.
    week = period_of(any_day, Cadence.WEEKLY)
    thursday_year = fiscal_year(week.start + dt.timedelta(days=3), start_month)
    assert week in fiscal_year_periods(thursday_year, Cadence.WEEKLY, start_month)
    assert week not in fiscal_year_periods(thursday_year - 1, Cadence.WEEKLY, start_month)
    assert week not in fiscal_year_periods(thursday_year + 1, Cadence.WEEKLY, start_month)


@pytest.mark.parametrize("cadence", list(Cadence))
def test_pace_is_judged_from_a_quarter_of_the_period(any_day: dt.date, cadence: Cadence) -> None:
    current = current_period(cadence, any_day)
    elapsed = (any_day - current.start).days + 1
    so_far = Decimal(10)
    pace = projected(so_far, current, any_day)
    if Decimal(elapsed) / current.days < PACE_MIN_ELAPSED:
        assert pace is None
    else:
        assert pace == so_far * current.days / elapsed and pace >= so_far
    # A finished period is judged on its total.
    assert projected(so_far, reviewed_period(cadence, any_day), any_day) == so_far


WEEKLY_SCHEDULES = [
    ("0 9 * * mon", TOKYO, False),
    ("0 9 * * mon", NEW_YORK, False),
    ("30 1 * * sun", NEW_YORK, False),  # inside New York's repeated hour at the autumn change
]
SHIFTED_SCHEDULES = [("0 9 * * mon", TOKYO, True), ("0 9 * * fri", TOKYO, True), ("0 9 1 * *", TOKYO, True)]


@pytest.mark.parametrize(("cron", "tz", "holiday_shift"), WEEKLY_SCHEDULES)
def test_the_next_weekly_digest_slot_is_in_the_future_and_within_a_week(
    any_day: dt.date, cron: str, tz: ZoneInfo, holiday_shift: bool
) -> None:
    now = clock.utcnow()
    upcoming = next_digest_slot(cron, tz, holiday_shift, now)
    previous = previous_digest_slot(cron, tz, holiday_shift, now, WEEK + DST_HOUR)
    assert upcoming is not None and previous is not None
    assert now < upcoming <= now + WEEK + DST_HOUR
    assert now - WEEK - DST_HOUR < previous <= now
    # Consecutive slots: nothing between them, one local day apart by a week, one ledger period each.
    assert digest_slots(cron, tz, holiday_shift, previous, upcoming) == [upcoming]
    assert upcoming.astimezone(tz).date() - previous.astimezone(tz).date() == WEEK
    assert slot_key(previous, tz) != slot_key(upcoming, tz)


@pytest.mark.parametrize(("cron", "tz", "holiday_shift"), SHIFTED_SCHEDULES)
def test_a_shifted_digest_slot_is_in_the_future_on_a_working_day(
    any_day: dt.date, cron: str, tz: ZoneInfo, holiday_shift: bool
) -> None:
    now = clock.utcnow()
    upcoming = next_digest_slot(cron, tz, holiday_shift, now)
    assert upcoming is not None
    local = upcoming.astimezone(tz)
    assert now < upcoming <= now + dt.timedelta(days=31) + LONGEST_SHIFT
    assert local.time() == dt.time(9)
    # Never on a public holiday (weekends are not shifted: a monthly cron may fall on one).
    assert not jpholiday.is_holiday(local.date())


@pytest.mark.parametrize(("cron", "tz", "holiday_shift"), WEEKLY_SCHEDULES + SHIFTED_SCHEDULES)
def test_the_next_reminder_is_15_00_on_the_working_day_before_its_digest(
    any_day: dt.date, cron: str, tz: ZoneInfo, holiday_shift: bool
) -> None:
    now = clock.utcnow()
    pair = next_reminder(cron, tz, holiday_shift, now)
    assert pair is not None
    reminder, digest = pair
    assert now < reminder < digest
    local = reminder.astimezone(tz)
    assert local.time() == REMINDER_TIME
    assert is_working_day(local.date(), skip_holidays=holiday_shift)
    between = local.date() + dt.timedelta(days=1)
    while between < digest.astimezone(tz).date():
        assert not is_working_day(between, skip_holidays=holiday_shift)
        between += dt.timedelta(days=1)
