"""Slot arithmetic: cron in the department's time zone, DST, Japanese holidays, reminders, clock jumps."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import jpholiday
import pytest

from bot.schedule.slots import (
    SlotTrigger,
    digest_slots,
    digest_trigger,
    is_working_day,
    next_digest_slot,
    next_reminder,
    reminder_slot,
    reminder_slots,
    reminder_trigger,
    slot_key,
)

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
MONDAY_9 = "0 9 * * mon"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def local(tz: ZoneInfo, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz)


def test_tokyo_monday_9_is_monday_midnight_utc() -> None:
    slots = digest_slots(MONDAY_9, TOKYO, False, utc(2026, 11, 22), utc(2026, 12, 8))
    assert slots == [utc(2026, 11, 23), utc(2026, 11, 30), utc(2026, 12, 7)]
    assert all(slot.astimezone(TOKYO).hour == 9 for slot in slots)
    # Always returned in UTC: an ambiguous local datetime never compares equal across zones.
    assert all(slot.tzinfo is dt.UTC for slot in slots)
    assert next_digest_slot(MONDAY_9, TOKYO, False, utc(2026, 11, 24)) == utc(2026, 11, 30)


def test_slots_are_in_start_end_right_closed() -> None:
    slot = utc(2026, 11, 30)
    assert digest_slots(MONDAY_9, TOKYO, False, slot, slot + dt.timedelta(days=1)) == []
    assert digest_slots(MONDAY_9, TOKYO, False, slot - dt.timedelta(seconds=1), slot) == [slot]
    assert next_digest_slot(MONDAY_9, TOKYO, False, slot) == utc(2026, 12, 7)


def test_new_york_follows_dst_neither_twice_nor_skipped() -> None:
    slots = digest_slots(MONDAY_9, NEW_YORK, False, utc(2026, 10, 1), utc(2026, 12, 1))
    mondays = [dt.date(2026, 10, 5) + dt.timedelta(weeks=n) for n in range(9)]
    assert [slot.astimezone(NEW_YORK).date() for slot in slots] == mondays
    assert all(slot.astimezone(NEW_YORK).time() == dt.time(9) for slot in slots)
    # Summer (EDT, UTC-4) before 2026-11-01, winter (EST, UTC-5) after.
    assert utc(2026, 10, 26, 13) in slots
    assert utc(2026, 11, 2, 14) in slots


def test_repeated_hour_at_dst_end_fires_once() -> None:
    # 01:30 happens twice in New York on 2026-11-01; a daily 01:30 digest fires at the first.
    slots = digest_slots("30 1 * * *", NEW_YORK, False, utc(2026, 10, 31), utc(2026, 11, 3))
    assert [s.astimezone(NEW_YORK).date() for s in slots] == [
        dt.date(2026, 10, 31),
        dt.date(2026, 11, 1),
        dt.date(2026, 11, 2),
    ]
    assert utc(2026, 11, 1, 5, 30) in slots
    assert utc(2026, 11, 1, 6, 30) not in slots
    # Asking from between the two 01:30s does not produce the second one either.
    assert next_digest_slot("30 1 * * *", NEW_YORK, False, utc(2026, 11, 1, 6)) == utc(2026, 11, 2, 6, 30)


def test_nonexistent_local_time_at_spring_forward_fires_once_that_day() -> None:
    # Europe/London skips 01:00–02:00 on 2026-03-29: a 01:30 digest fires once, at 02:30 BST.
    slots = digest_slots("30 1 * * *", LONDON, False, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12))
    assert [s.astimezone(LONDON).date() for s in slots] == [
        dt.date(2026, 3, 28),
        dt.date(2026, 3, 29),
        dt.date(2026, 3, 30),
        dt.date(2026, 3, 31),
    ]
    assert slots[1] == utc(2026, 3, 29, 1, 30) == local(LONDON, 2026, 3, 29, 2, 30)
    assert slots[2] == local(LONDON, 2026, 3, 30, 1, 30) == utc(2026, 3, 30, 0, 30)


def test_holiday_monday_moves_to_tuesday_with_holiday_shift() -> None:
    start, end = utc(2027, 1, 5), utc(2027, 1, 20)
    # 2027-01-11 is 成人の日.
    assert digest_slots(MONDAY_9, TOKYO, False, start, end) == [utc(2027, 1, 11), utc(2027, 1, 18)]
    assert digest_slots(MONDAY_9, TOKYO, True, start, end) == [utc(2027, 1, 12), utc(2027, 1, 18)]
    assert next_digest_slot(MONDAY_9, TOKYO, True, utc(2027, 1, 10)) == utc(2027, 1, 12)
    # The shifted slot is found even when asked from after the holiday's own cron time.
    assert next_digest_slot(MONDAY_9, TOKYO, True, utc(2027, 1, 11, 1)) == utc(2027, 1, 12)


def test_holiday_shift_skips_a_run_of_holidays() -> None:
    # 2026-09-21 敬老の日, 22 国民の休日, 23 秋分の日: Monday's digest moves to Thursday.
    slots = digest_slots(MONDAY_9, TOKYO, True, utc(2026, 9, 15), utc(2026, 9, 30))
    assert slots == [local(TOKYO, 2026, 9, 24, 9), local(TOKYO, 2026, 9, 28, 9)]


def test_holiday_shift_with_daily_cron_never_doubles_a_slot() -> None:
    # Daily at 09:00: the holiday Monday's slot lands on Tuesday 09:00, which is a slot already.
    slots = digest_slots("0 9 * * *", TOKYO, True, utc(2027, 1, 8, 12), utc(2027, 1, 13))
    assert [s.astimezone(TOKYO).date() for s in slots] == [
        dt.date(2027, 1, 9),
        dt.date(2027, 1, 10),
        dt.date(2027, 1, 12),
        dt.date(2027, 1, 13),
    ]


def test_reminder_is_15_00_on_the_working_day_before() -> None:
    monday = local(TOKYO, 2026, 11, 30, 9)
    assert reminder_slot(monday, TOKYO) == local(TOKYO, 2026, 11, 27, 15)
    wednesday = local(TOKYO, 2026, 12, 2, 9)
    assert reminder_slot(wednesday, TOKYO) == local(TOKYO, 2026, 12, 1, 15)
    # Shifted off 成人の日 to Tuesday 2027-01-12: the working day before is Friday (Monday is a holiday).
    assert reminder_slot(utc(2027, 1, 12), TOKYO, holiday_shift=True) == local(TOKYO, 2027, 1, 8, 15)
    # Without holiday_shift only weekends are skipped: Thursday 2026-11-26 → Wednesday,
    # and Tuesday 2026-11-24 → Monday 23 (勤労感謝の日, still a reminder day).
    assert reminder_slot(local(TOKYO, 2026, 11, 24, 9), TOKYO) == local(TOKYO, 2026, 11, 23, 15)
    assert reminder_slot(local(TOKYO, 2026, 11, 24, 9), TOKYO, True) == local(TOKYO, 2026, 11, 20, 15)


def test_reminder_in_new_york_is_local_15_00() -> None:
    digest = local(NEW_YORK, 2026, 11, 2, 9)  # first Monday after DST ends
    assert reminder_slot(digest, NEW_YORK) == utc(2026, 10, 30, 19)  # Friday 15:00 EDT


def test_reminder_slots_pair_each_reminder_with_its_digest() -> None:
    pairs = reminder_slots(MONDAY_9, TOKYO, True, utc(2027, 1, 1), utc(2027, 1, 16))
    assert pairs == [
        (local(TOKYO, 2027, 1, 8, 15), utc(2027, 1, 12)),
        (local(TOKYO, 2027, 1, 15, 15), utc(2027, 1, 18)),
    ]
    assert next_reminder(MONDAY_9, TOKYO, True, utc(2027, 1, 8, 6)) == pairs[1]
    # A daily cron: Saturday, Sunday and Monday digests share Friday's reminder, listed once.
    daily = reminder_slots("0 9 * * *", TOKYO, False, utc(2026, 11, 26, 12), utc(2026, 11, 30, 3))
    assert daily == [(local(TOKYO, 2026, 11, 27, 15), local(TOKYO, 2026, 11, 28, 9))]


def test_slot_key_is_the_local_date() -> None:
    assert slot_key(utc(2026, 11, 30), TOKYO) == "2026-11-30"
    assert slot_key(utc(2026, 11, 29, 15), TOKYO) == "2026-11-30"
    assert slot_key(utc(2026, 11, 2, 3), NEW_YORK) == "2026-11-01"


def test_trigger_fires_at_the_slots() -> None:
    trigger = digest_trigger(MONDAY_9, NEW_YORK, False)
    assert isinstance(trigger, SlotTrigger)
    first = trigger.get_next_fire_time(None, utc(2026, 10, 20))
    assert first == utc(2026, 10, 26, 13)
    assert trigger.get_next_fire_time(first, first) == utc(2026, 11, 2, 14)
    # A new job scheduled at the slot instant itself still fires it.
    assert trigger.get_next_fire_time(None, first) == first
    assert "America/New_York" in str(trigger)


def test_clock_jumping_back_fires_nothing_twice() -> None:
    trigger = digest_trigger(MONDAY_9, TOKYO, False)
    slot = utc(2026, 11, 30)
    fired = trigger.get_next_fire_time(None, slot - dt.timedelta(minutes=30))
    assert fired == slot
    # The clock moves back an hour after firing: the next fire is next week, not the same slot.
    back = slot - dt.timedelta(hours=1)
    assert trigger.get_next_fire_time(fired, back) == utc(2026, 12, 7)
    # Asking for the slots between the last check and the (earlier) current time: none, both times.
    last_check = slot + dt.timedelta(minutes=30)
    assert digest_slots(MONDAY_9, TOKYO, False, last_check, back) == []
    assert digest_slots(MONDAY_9, TOKYO, False, last_check, back + dt.timedelta(minutes=59)) == []


def test_reminder_trigger_fires_at_reminders() -> None:
    trigger = reminder_trigger(MONDAY_9, TOKYO, True)
    first = trigger.get_next_fire_time(None, utc(2027, 1, 1))
    assert first == local(TOKYO, 2027, 1, 8, 15)
    assert trigger.get_next_fire_time(first, first) == local(TOKYO, 2027, 1, 15, 15)


# -- pinned dates: DST in New York, the New Year holidays, months' first and last days -------------

DAILY_9 = "0 9 * * *"


@pytest.mark.parametrize(
    ("change", "utc_hour_before", "utc_hour_after"),
    [
        (dt.date(2027, 3, 14), 14, 13),  # spring forward: EST (UTC-5) to EDT (UTC-4)
        (dt.date(2026, 11, 1), 13, 14),  # fall back: EDT to EST
    ],
)
def test_new_york_09_00_shifts_its_utc_instant_at_dst_and_keeps_one_slot_a_day(
    change: dt.date, utc_hour_before: int, utc_hour_after: int
) -> None:
    days = [change + dt.timedelta(days=offset) for offset in range(-2, 3)]
    start = local(NEW_YORK, *days[0].timetuple()[:3]) - dt.timedelta(hours=1)
    end = local(NEW_YORK, *days[-1].timetuple()[:3], 23)
    slots = digest_slots(DAILY_9, NEW_YORK, False, start, end)
    assert [slot_key(slot, NEW_YORK) for slot in slots] == [day.isoformat() for day in days]
    assert all(slot.astimezone(NEW_YORK).time() == dt.time(9) for slot in slots)
    assert [slot.hour for slot in slots] == [utc_hour_before] * 2 + [utc_hour_after] * 3
    # The scheduler's trigger, one fire after another, meets the same slots: none lost, none twice.
    trigger = digest_trigger(DAILY_9, NEW_YORK, False)
    fired = [trigger.get_next_fire_time(None, start)]
    while len(fired) < len(slots):
        previous = fired[-1]
        assert previous is not None
        fired.append(trigger.get_next_fire_time(previous, previous))
    assert fired == slots


def test_new_york_monday_digest_and_its_reminder_across_the_spring_change() -> None:
    slots = digest_slots(MONDAY_9, NEW_YORK, False, utc(2027, 3, 1), utc(2027, 3, 23))
    assert slots == [utc(2027, 3, 1, 14), utc(2027, 3, 8, 14), utc(2027, 3, 15, 13), utc(2027, 3, 22, 13)]
    # Monday 15 March (EDT) is reminded on Friday 12 March at 15:00 EST.
    assert reminder_slot(slots[2], NEW_YORK) == utc(2027, 3, 12, 20)
    assert next_reminder(MONDAY_9, NEW_YORK, False, utc(2027, 3, 9)) == (utc(2027, 3, 12, 20), slots[2])
    # A Tuesday digest after the change is reminded on Monday 15 March at 15:00 EDT.
    assert reminder_slot(local(NEW_YORK, 2027, 3, 16, 9), NEW_YORK) == utc(2027, 3, 15, 19)


def test_jpholiday_new_year_is_only_1_january() -> None:
    # What the holiday shift relies on: 2 and 3 January are no public holidays (many firms close
    # them, but kpibot only knows the law's holidays); in 2027 they are a weekend anyway.
    holidays = [
        d for d in (dt.date(2026, 12, 28) + dt.timedelta(days=n) for n in range(8)) if jpholiday.is_holiday(d)
    ]
    assert holidays == [dt.date(2027, 1, 1)]
    assert is_working_day(dt.date(2026, 12, 31)) and is_working_day(dt.date(2027, 1, 4))
    assert not is_working_day(dt.date(2027, 1, 1))
    assert is_working_day(dt.date(2027, 1, 1), skip_holidays=False)


@pytest.mark.parametrize(
    ("cron", "holiday_shift", "dates"),
    [
        # Neither Monday of the holidays (28 Dec, 4 Jan) is a public holiday.
        (MONDAY_9, True, ["2026-12-28", "2027-01-04"]),
        # Friday 1 January moves to Monday 4 January.
        ("0 9 * * fri", True, ["2026-12-25", "2027-01-04"]),
        ("0 9 * * fri", False, ["2026-12-25", "2027-01-01"]),
        # Daily: 1 January lands on 4 January, a slot already; weekends are not shifted.
        (
            DAILY_9,
            True,
            ["2026-12-25", "2026-12-26", "2026-12-27", "2026-12-28", "2026-12-29", "2026-12-30", "2026-12-31"]
            + ["2027-01-02", "2027-01-03", "2027-01-04", "2027-01-05"],
        ),
    ],
)
def test_new_year_slots_in_tokyo(cron: str, holiday_shift: bool, dates: list[str]) -> None:
    start, end = local(TOKYO, 2026, 12, 25), local(TOKYO, 2027, 1, 5, 12)
    slots = digest_slots(cron, TOKYO, holiday_shift, start, end)
    assert [slot_key(slot, TOKYO) for slot in slots] == dates
    assert all(slot.astimezone(TOKYO).time() == dt.time(9) for slot in slots)


@pytest.mark.parametrize(
    ("digest", "holiday_shift", "reminder"),
    [
        # Monday 4 January: with holiday_shift the reminder skips New Year's Day to Thursday 31 Dec;
        # without it only the weekend is skipped, so it goes out on 1 January.
        (local(TOKYO, 2027, 1, 4, 9), True, local(TOKYO, 2026, 12, 31, 15)),
        (local(TOKYO, 2027, 1, 4, 9), False, local(TOKYO, 2027, 1, 1, 15)),
        (local(TOKYO, 2027, 1, 1, 9), False, local(TOKYO, 2026, 12, 31, 15)),
        (local(TOKYO, 2026, 12, 28, 9), True, local(TOKYO, 2026, 12, 25, 15)),
        # Monday 22 March 2027 is 春分の日 (振替休日): shifted to Tuesday, reminded the Friday before.
        (local(TOKYO, 2027, 3, 23, 9), True, local(TOKYO, 2027, 3, 19, 15)),
    ],
)
def test_reminders_around_holidays(digest: dt.datetime, holiday_shift: bool, reminder: dt.datetime) -> None:
    assert reminder_slot(digest, TOKYO, holiday_shift) == reminder


def test_substitute_holiday_in_march_moves_the_monday_digest() -> None:
    slots = digest_slots(MONDAY_9, TOKYO, True, local(TOKYO, 2027, 3, 20), local(TOKYO, 2027, 4, 6))
    assert [slot_key(slot, TOKYO) for slot in slots] == ["2027-03-23", "2027-03-29", "2027-04-05"]
    pairs = reminder_slots(MONDAY_9, TOKYO, True, local(TOKYO, 2027, 3, 18), local(TOKYO, 2027, 3, 27))
    assert pairs == [(local(TOKYO, 2027, 3, 19, 15), slots[0]), (local(TOKYO, 2027, 3, 26, 15), slots[1])]


@pytest.mark.parametrize(
    ("cron", "holiday_shift", "dates"),
    [
        ("0 9 1 * *", True, ["2026-12-01", "2027-01-04", "2027-02-01", "2027-03-01", "2027-04-01"]),
        ("0 9 1 * *", False, ["2026-12-01", "2027-01-01", "2027-02-01", "2027-03-01", "2027-04-01"]),
        # Only public holidays move a slot: Sunday 7 February and 7 March keep theirs.
        ("0 9 7 * *", True, ["2026-12-07", "2027-01-07", "2027-02-07", "2027-03-07", "2027-04-07"]),
        ("0 9 last * *", False, ["2026-12-31", "2027-01-31", "2027-02-28", "2027-03-31"]),
    ],
)
def test_monthly_digest_on_the_1st_7th_and_last_day(cron: str, holiday_shift: bool, dates: list[str]) -> None:
    start, end = local(TOKYO, 2026, 11, 30, 12), local(TOKYO, 2027, 4, 10)
    slots = digest_slots(cron, TOKYO, holiday_shift, start, end)
    assert [slot_key(slot, TOKYO) for slot in slots] == dates
