"""When digests and reminders fire: slot arithmetic on a department's cron, time zone and holidays.

Pure functions over aware datetimes (no database, no clock); every instant returned is in
UTC — an ambiguous local datetime never compares equal to another zone's, so local ones
would break `==` and sets around the DST change. A *slot* is the instant a
department's digest is due: the cron's fire time in the department's time zone, moved to
the next working day (same local time) when it falls on a Japanese public holiday and the
department asks for ``holiday_shift``. Its ledger period is its local date (`slot_key`).

DST: a cron time that does not exist locally (spring forward) fires once, at the instant
the clock skipped to; a time that exists twice (fall back) fires once, at its first
occurrence. The set of slots is fixed by the schedule alone, so asking again — after a
restart or a clock jump — never yields a slot twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from zoneinfo import ZoneInfo

import jpholiday
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

# The reminder goes out at this local time on the working day before the digest.
REMINDER_TIME = dt.time(15, 0)

# Longer than any run of Japanese holidays and weekends (Golden Week 2019 was 10 days).
_MAX_SHIFT = dt.timedelta(days=14)
_TICK = dt.timedelta(microseconds=1)

NextAfter = Callable[[dt.datetime | None, dt.datetime], dt.datetime | None]


def cron_trigger(cron: str, tz: ZoneInfo) -> CronTrigger:
    """The department's 5-field crontab in its own time zone; ValueError if malformed."""
    return CronTrigger.from_crontab(cron, timezone=tz)


def is_working_day(day: dt.date, *, skip_holidays: bool = True) -> bool:
    """Monday to Friday, and (with `skip_holidays`) not a Japanese public holiday."""
    if day.weekday() >= 5:
        return False
    return not (skip_holidays and jpholiday.is_holiday(day))


def digest_slots(
    cron: str, tz: ZoneInfo, holiday_shift: bool, start: dt.datetime, end: dt.datetime
) -> list[dt.datetime]:
    """Every digest slot in (start, end], in order; empty when end <= start (a clock jump back)."""
    if end <= start:
        return []
    trigger = cron_trigger(cron, tz)
    if not holiday_shift:
        return list(_takewhile_le(_cron_times(trigger, tz, start), end))
    slots: set[dt.datetime] = set()
    # A holiday slot moves later, never earlier: one from up to _MAX_SHIFT before `start` can land inside.
    for fire in _takewhile_le(_cron_times(trigger, tz, start - _MAX_SHIFT), end):
        slot = _shift(fire, tz)
        if start < slot <= end:
            slots.add(slot)
    return sorted(slots)


def next_digest_slot(cron: str, tz: ZoneInfo, holiday_shift: bool, after: dt.datetime) -> dt.datetime | None:
    """The first digest slot strictly after `after` (None for a cron that never fires again)."""
    return _next_digest_slot(cron_trigger(cron, tz), tz, holiday_shift, after)


def previous_digest_slot(
    cron: str, tz: ZoneInfo, holiday_shift: bool, at: dt.datetime, within: dt.timedelta
) -> dt.datetime | None:
    """The latest digest slot in (at - within, at], if any."""
    slots = digest_slots(cron, tz, holiday_shift, at - within, at)
    return slots[-1] if slots else None


def reminder_slot(digest_slot: dt.datetime, tz: ZoneInfo, holiday_shift: bool = False) -> dt.datetime:
    """15:00 local on the working day before the digest's local date.

    Weekends are always skipped; Japanese holidays only for departments with `holiday_shift`
    (the same ones whose digest moves off a holiday). A Tuesday digest shifted off a holiday
    Monday is reminded on the Friday before.
    """
    day = digest_slot.astimezone(tz).date() - dt.timedelta(days=1)
    while not is_working_day(day, skip_holidays=holiday_shift):
        day -= dt.timedelta(days=1)
    return _local(day, REMINDER_TIME, tz)


def reminder_slots(
    cron: str, tz: ZoneInfo, holiday_shift: bool, start: dt.datetime, end: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime]]:
    """(reminder, digest) pairs whose reminder is in (start, end], in order.

    When several digests share one reminder (a daily cron: Sat, Sun and Mon all remind on
    Friday), the reminder is listed once, for the earliest of them.
    """
    if end <= start:
        return []
    pairs: dict[dt.datetime, dt.datetime] = {}
    for digest in digest_slots(cron, tz, holiday_shift, start, end + _MAX_SHIFT + dt.timedelta(days=1)):
        reminder = reminder_slot(digest, tz, holiday_shift)
        if start < reminder <= end:
            pairs.setdefault(reminder, digest)
    return sorted(pairs.items())


def next_reminder(
    cron: str, tz: ZoneInfo, holiday_shift: bool, after: dt.datetime
) -> tuple[dt.datetime, dt.datetime] | None:
    """The first (reminder, digest) pair whose reminder is strictly after `after`."""
    trigger = cron_trigger(cron, tz)
    digest = after
    # Reminders never go backwards as digests move forward, so the first one after `after` wins.
    while (digest := _next_digest_slot(trigger, tz, holiday_shift, digest)) is not None:
        reminder = reminder_slot(digest, tz, holiday_shift)
        if reminder > after:
            return reminder, digest
    return None


def slot_key(slot: dt.datetime, tz: ZoneInfo) -> str:
    """The slot's local date, YYYY-MM-DD: the ledger period of a digest."""
    return slot.astimezone(tz).date().isoformat()


class SlotTrigger(BaseTrigger):
    """An APScheduler trigger that fires exactly at the instants `next_after` names.

    `next_after(previous, now)` gets the previous fire time (None for a new job) and now.
    A new job fires at the first instant at or after now; after that always strictly after
    the previous fire time, whatever `now` says — a clock jumping backwards never fires a
    slot twice (APScheduler's CronTrigger would, as it restarts from `now`).
    """

    __slots__ = ("_next_after", "description")

    def __init__(self, next_after: NextAfter, description: str = "slots") -> None:
        self._next_after = next_after
        self.description = description

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        return self._next_after(previous_fire_time, now)

    def __str__(self) -> str:
        return self.description

    def __repr__(self) -> str:
        return f"<SlotTrigger {self.description}>"


def digest_trigger(cron: str, tz: ZoneInfo, holiday_shift: bool) -> SlotTrigger:
    trigger = cron_trigger(cron, tz)

    def next_after(previous: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        return _next_digest_slot(trigger, tz, holiday_shift, _after(previous, now))

    return SlotTrigger(next_after, _describe("digest", cron, tz, holiday_shift))


def reminder_trigger(cron: str, tz: ZoneInfo, holiday_shift: bool) -> SlotTrigger:
    cron_trigger(cron, tz)  # fail now, not at the first fire, on a malformed cron

    def next_after(previous: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        pair = next_reminder(cron, tz, holiday_shift, _after(previous, now))
        return pair[0] if pair else None

    return SlotTrigger(next_after, _describe("reminder", cron, tz, holiday_shift))


def _after(previous: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    # A new job may fire at `now` itself; a running one strictly after its last fire.
    return previous if previous is not None else now - _TICK


def _describe(kind: str, cron: str, tz: ZoneInfo, holiday_shift: bool) -> str:
    shift = ", holiday shift" if holiday_shift else ""
    return f"{kind} slots of cron[{cron}] in {tz.key}{shift}"


def _next_digest_slot(
    trigger: CronTrigger, tz: ZoneInfo, holiday_shift: bool, after: dt.datetime
) -> dt.datetime | None:
    if not holiday_shift:
        return next(_cron_times(trigger, tz, after), None)
    best: dt.datetime | None = None
    for fire in _cron_times(trigger, tz, after - _MAX_SHIFT):
        if best is not None and fire >= best:
            break  # a shift only moves later: no later fire time can beat `best`
        slot = _shift(fire, tz)
        if slot > after and (best is None or slot < best):
            best = slot
    return best


def _cron_times(trigger: CronTrigger, tz: ZoneInfo, after: dt.datetime) -> Iterator[dt.datetime]:
    """The cron's fire times strictly after `after`, in UTC, the second of a repeated hour left out."""
    fire = trigger.get_next_fire_time(None, after + _TICK)
    while fire is not None:
        instant = fire.astimezone(dt.UTC)
        if instant > after and not _second_occurrence(instant.astimezone(tz)):
            yield instant
        fire = trigger.get_next_fire_time(fire, fire)


def _takewhile_le(times: Iterator[dt.datetime], end: dt.datetime) -> Iterator[dt.datetime]:
    for value in times:
        if value > end:
            return
        yield value


def _shift(slot: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The slot moved off a Japanese public holiday to the next working day, same local time."""
    local = slot.astimezone(tz)
    day = local.date()
    if not jpholiday.is_holiday(day):
        return slot
    while True:
        day += dt.timedelta(days=1)
        if is_working_day(day):
            return _local(day, local.time(), tz)


def _local(day: dt.date, time: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant of a local wall time; a nonexistent one becomes the instant the clock skipped to."""
    return dt.datetime.combine(day, time.replace(fold=0), tzinfo=tz).astimezone(dt.UTC)


def _second_occurrence(local: dt.datetime) -> bool:
    """True for the later of a wall time that happens twice (the hour repeated at DST end)."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
