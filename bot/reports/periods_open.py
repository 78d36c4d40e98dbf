"""Which periods are open for reports: the one in progress and the last few that ended.

A finished period stays open for a while so an owner can still report the month (or week) the
review looks at; older ones are history (the text command still takes them by name).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlmodel import Session

from bot.clock import today
from bot.models import Cadence, Department, Kpi
from bot.periods import Period, period_of
from bot.reports.actuals import live_values
from bot.reports.service import ReportableKpi, all_kpis
from bot.scorecard import targets_for

# How many finished periods stay open for reports, by cadence (two months, four weeks).
FINISHED_OPEN = {Cadence.MONTHLY: 2, Cadence.WEEKLY: 4}


def open_periods(cadence: Cadence, today: dt.date) -> list[Period]:
    """The periods open for reports, the one in progress first, then back in time."""
    current = period_of(today, cadence)
    return [current.shift(-steps) for steps in range(FINISHED_OPEN[cadence] + 1)]


def finished_open(cadence: Cadence, today: dt.date) -> list[Period]:
    """The finished periods still open for reports, oldest first."""
    return list(reversed(open_periods(cadence, today)[1:]))


def is_open(period: Period, today: dt.date) -> bool:
    return period in open_periods(period.cadence, today)


def unreported(session: Session, kpis: Sequence[tuple[Kpi, dt.date]]) -> dict[int, list[Period]]:
    """For each KPI (with the day it is today in its department), the finished open periods
    without a live value, oldest first; derived KPIs are never reported, so never listed."""
    wanted: dict[int, list[Period]] = {}
    for kpi, day in kpis:
        if kpi.formula or kpi.id is None:
            continue
        wanted[kpi.id] = finished_open(kpi.cadence, day)
    keys = {period.key for periods in wanted.values() for period in periods}
    values = live_values(session, list(wanted), keys)
    return {
        kpi_id: [period for period in periods if (kpi_id, period.key) not in values]
        for kpi_id, periods in wanted.items()
    }


def oldest(periods: Iterable[Period]) -> Period | None:
    """The period that started first (months and weeks compared by their first day)."""
    return min(periods, key=lambda period: (period.start, period.cadence.value), default=None)


# -- the report form on one period ---------------------------------------------------------------


def reportable_in(
    session: Session, *, user_id: str, is_admin: Callable[[], bool], period: Period
) -> list[ReportableKpi]:
    """The KPIs `user_id` may report for `period` (those of its cadence, derived ones left out),
    with the live value and target of that period."""
    rows = all_kpis(session) if is_admin() else all_kpis(session, reported_by=user_id)
    rows = [
        (kpi, dept)
        for kpi, dept in rows
        if kpi.cadence is period.cadence and not kpi.formula and kpi.retired_at is None
    ]
    ids = [kpi.id for kpi, _ in rows if kpi.id is not None]
    values = live_values(session, ids, {period.key})
    targets = targets_for(session, ids, {period.key})
    return [
        ReportableKpi(
            kpi, dept, period, values.get((kpi.id or 0, period.key)), targets.get((kpi.id or 0, period.key))
        )
        for kpi, dept in rows
    ]


@dataclass(frozen=True)
class PeriodChoice:
    period: Period
    unreported: int  # of the user's KPIs


def finished_choices(session: Session, kpis: Sequence[ReportableKpi]) -> list[PeriodChoice]:
    """The finished periods open for reports for these KPIs (their cadences), oldest first,
    each with how many of them are unreported there."""
    missing = unreported(session, [(item.kpi, _today_in(item.department)) for item in kpis])
    periods: dict[str, Period] = {}
    for item in kpis:
        for period in finished_open(item.kpi.cadence, _today_in(item.department)):
            periods.setdefault(period.key, period)
    counts: dict[str, int] = {}
    for late in missing.values():
        for period in late:
            counts[period.key] = counts.get(period.key, 0) + 1
    ordered = sorted(periods.values(), key=lambda period: (period.start, period.cadence.value))
    return [PeriodChoice(period, counts.get(period.key, 0)) for period in ordered]


def first_unreported(choices: Sequence[PeriodChoice]) -> Period | None:
    """The period the report form opens on by default: the oldest one with something unreported
    (the month under review before the month in progress); None when all are reported."""
    return next((choice.period for choice in choices if choice.unreported > 0), None)


def _today_in(department: Department) -> dt.date:
    return today(ZoneInfo(department.timezone))
