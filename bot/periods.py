"""Reporting periods and fiscal years, as plain values.

A period is named by a short key stored in the database: ``2026-11`` for a month,
``2026-W48`` for an ISO week (Monday to Sunday).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import total_ordering

from bot.models import Cadence

_MONTH_KEY = re.compile(r"^(\d{4})-(\d{1,2})$")
_WEEK_KEY = re.compile(r"^(\d{4})-?W(\d{1,2})$", re.IGNORECASE)


class PeriodError(ValueError):
    """A period key or phrase that cannot be read; `code` says why."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text!r}")
        self.code = code
        self.text = text


@total_ordering
@dataclass(frozen=True)
class Period:
    cadence: Cadence
    year: int
    number: int  # month 1–12, or ISO week 1–53

    @property
    def key(self) -> str:
        if self.cadence is Cadence.MONTHLY:
            return f"{self.year:04d}-{self.number:02d}"
        return f"{self.year:04d}-W{self.number:02d}"

    def __str__(self) -> str:
        return self.key

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Period) or other.cadence is not self.cadence:
            return NotImplemented
        return (self.year, self.number) < (other.year, other.number)

    @property
    def start(self) -> dt.date:
        if self.cadence is Cadence.MONTHLY:
            return dt.date(self.year, self.number, 1)
        return dt.date.fromisocalendar(self.year, self.number, 1)

    @property
    def end(self) -> dt.date:
        """The last day of the period (inclusive)."""
        return self.next().start - dt.timedelta(days=1)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def contains(self, day: dt.date) -> bool:
        return self.start <= day <= self.end

    def shift(self, steps: int) -> Period:
        if self.cadence is Cadence.MONTHLY:
            index = self.year * 12 + (self.number - 1) + steps
            return Period(Cadence.MONTHLY, index // 12, index % 12 + 1)
        return period_of(self.start + dt.timedelta(weeks=steps), Cadence.WEEKLY)

    def next(self) -> Period:
        return self.shift(1)

    def previous(self) -> Period:
        return self.shift(-1)

    def last(self, count: int) -> list[Period]:
        """The `count` periods ending with this one, oldest first."""
        return [self.shift(-offset) for offset in range(count - 1, -1, -1)]

    def month(self) -> Period:
        """The month this period belongs to; a week belongs to the month of its Thursday (as ISO weeks do)."""
        if self.cadence is Cadence.MONTHLY:
            return self
        return period_of(self.start + dt.timedelta(days=3), Cadence.MONTHLY)


def period_of(day: dt.date, cadence: Cadence) -> Period:
    if cadence is Cadence.MONTHLY:
        return Period(Cadence.MONTHLY, day.year, day.month)
    year, week, _ = day.isocalendar()
    return Period(Cadence.WEEKLY, year, week)


def parse_key(key: str) -> Period:
    """Read a stored or typed period key (``2026-11``, ``2026-W48``, ``2026W48``)."""
    text = key.strip()
    if match := _MONTH_KEY.match(text):
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise PeriodError("bad_month", key)
        return Period(Cadence.MONTHLY, year, month)
    if match := _WEEK_KEY.match(text):
        year, week = int(match[1]), int(match[2])
        try:
            dt.date.fromisocalendar(year, week, 1)
        except ValueError:
            raise PeriodError("bad_week", key) from None
        return Period(Cadence.WEEKLY, year, week)
    raise PeriodError("malformed", key)


def weeks_in_month(month: Period) -> list[Period]:
    """The ISO weeks that belong to a month (by their Thursday)."""
    first = period_of(month.start, Cadence.WEEKLY)
    if first.month() != month:
        first = first.next()
    weeks = []
    week = first
    while week.month() == month:
        weeks.append(week)
        week = week.next()
    return weeks


# Fiscal years are named by the calendar year they start in (2026年度 = April 2026 – March 2027).
def fiscal_year(day: dt.date, start_month: int = 4) -> int:
    return day.year if day.month >= start_month else day.year - 1


def fiscal_year_bounds(year: int, start_month: int = 4) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of fiscal year `year`."""
    start = dt.date(year, start_month, 1)
    end = dt.date(year + 1, start_month, 1) if start_month > 1 else dt.date(year + 1, 1, 1)
    return start, end - dt.timedelta(days=1)


def fiscal_quarter(day: dt.date, start_month: int = 4) -> int:
    return (day.month - start_month) % 12 // 3 + 1


def fiscal_year_periods(year: int, cadence: Cadence, start_month: int = 4) -> list[Period]:
    start, end = fiscal_year_bounds(year, start_month)
    if cadence is Cadence.MONTHLY:
        return [period_of(start, Cadence.MONTHLY).shift(i) for i in range(12)]
    # Weeks whose Thursday falls inside the fiscal year, so no week counts twice.
    weeks = []
    week = period_of(start, Cadence.WEEKLY)
    while week.start <= end:
        if start <= week.start + dt.timedelta(days=3) <= end:
            weeks.append(week)
        week = week.next()
    return weeks


# Relative periods people type, by how many periods back they point.
_RELATIVE = {
    Cadence.WEEKLY: {"今週": 0, "this week": 0, "先週": -1, "last week": -1, "先々週": -2},
    Cadence.MONTHLY: {"今月": 0, "this month": 0, "先月": -1, "last month": -1, "先々月": -2},
}
_LOOKS_LIKE_PERIOD = re.compile(r"^\d{4}\s*[-/年]?\s*(w\s*)?\d{1,2}\s*(月|週)?$", re.IGNORECASE)
_JA_MONTH = re.compile(r"^(\d{4})\s*年\s*(\d{1,2})\s*月$")


def parse_period(text: str, cadence: Cadence, today: dt.date) -> Period:
    """A period as a user types it, for a KPI of `cadence`.

    Accepts keys (``2026-11``, ``2026-W48``), ``2026年11月``, and relative phrases
    (``今週``/``this week``, ``先週``/``last week``, ``今月``, ``先月``/``last month``).
    Raises PeriodError with code ``malformed``, ``bad_month``/``bad_week``,
    ``wrong_cadence`` (a month for a weekly KPI) or ``future``.
    """
    normalized = " ".join(text.strip().lower().split())
    for phrase_cadence, phrases in _RELATIVE.items():
        if normalized in phrases:
            if phrase_cadence is not cadence:
                raise PeriodError("wrong_cadence", text)
            return period_of(today, cadence).shift(phrases[normalized])
    if match := _JA_MONTH.match(normalized):
        normalized = f"{match[1]}-{match[2]}"
    period = parse_key(normalized.replace("/", "-"))
    if period.cadence is not cadence:
        raise PeriodError("wrong_cadence", text)
    if period.start > today:
        raise PeriodError("future", text)
    return period


def looks_like_period(text: str) -> bool:
    """Whether a word was meant as a period (so a typo in it is reported, not taken as a note)."""
    normalized = " ".join(text.strip().lower().split())
    if any(normalized in phrases for phrases in _RELATIVE.values()):
        return True
    return bool(_LOOKS_LIKE_PERIOD.match(normalized) or _JA_MONTH.match(normalized))
