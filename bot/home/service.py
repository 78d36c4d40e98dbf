"""What belongs on a person's App Home, as plain data (rendered at the edge, handlers/home/).

- *My reports*: each KPI the person owns or heads, for the period in progress and every finished
  period still open for reports and unreported (bot.reports.periods_open), with target and value.
- *My countermeasures*: the open ones they own, overdue first, then by due date.
- *My departments*: the departments they head or own a KPI in: 🟢🟡🔴 counts of the period that
  last ended, the worst KPIs, the open alerts (with where their thread is).
- A division head sees every department's line; an admin the plan (departments, heads, channels).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from bot.alerts import service as alerts
from bot.alerts.service import AlertView
from bot.clock import today
from bot.countermeasures import service as countermeasures
from bot.countermeasures.service import Item
from bot.models import Alert, AlertStatus, Countermeasure, Department, Kpi
from bot.periods import Period
from bot.reports.actuals import live_values
from bot.reports.periods_open import unreported
from bot.reports.service import all_kpis
from bot.scorecard import ScoreRow, all_departments, build_scorecard, current_period, targets_for
from bot.scoring import Status, TargetValue

WORST_SHOWN = 3
ALERTS_SHOWN = 5
_BAD = (Status.RED, Status.AMBER)


@dataclass(frozen=True)
class ReportLine:
    kpi: Kpi
    department: Department
    period: Period
    target: TargetValue | None
    value: Decimal | None  # so far (in progress) or as reported
    finished: bool  # a finished period still unreported


@dataclass(frozen=True)
class DepartmentLine:
    department: Department
    counts: dict[Status, int]
    worst: list[ScoreRow]
    alerts: list[AlertView]
    alert_count: int


@dataclass(frozen=True)
class PlanLine:
    department: Department
    kpi_count: int


@dataclass(frozen=True)
class Home:
    user_id: str
    day: dt.date
    is_admin: bool
    is_division_head: bool
    reports: list[ReportLine] = field(default_factory=list)
    countermeasures: list[Item] = field(default_factory=list)
    departments: list[DepartmentLine] = field(default_factory=list)
    division: list[DepartmentLine] = field(default_factory=list)  # division heads: every department
    plan: list[PlanLine] = field(default_factory=list)  # admins


def _day_in(department: Department) -> dt.date:
    return today(ZoneInfo(department.timezone))


def report_lines(session: Session, user_id: str) -> list[ReportLine]:
    """The KPIs the user owns or heads (admins report through the form, not a list of everything):
    the period in progress of each, and the finished open periods still unreported, oldest first."""
    rows = [
        (kpi, dept)
        for kpi, dept in all_kpis(session, reported_by=user_id)
        if not kpi.formula and kpi.retired_at is None
    ]
    days = {kpi.id: _day_in(department) for kpi, department in rows}
    missing = unreported(session, [(kpi, days[kpi.id]) for kpi, _ in rows])
    wanted: list[tuple[Kpi, Department, Period, bool]] = []
    for kpi, department in rows:
        assert kpi.id is not None
        for period in missing.get(kpi.id, []):
            wanted.append((kpi, department, period, True))
        wanted.append((kpi, department, current_period(kpi.cadence, days[kpi.id]), False))
    ids = [kpi.id for kpi, _ in rows if kpi.id is not None]
    keys = {period.key for _, _, period, _ in wanted}
    values = live_values(session, ids, keys)
    targets = targets_for(session, ids, keys)
    lines = [
        ReportLine(
            kpi,
            department,
            period,
            targets.get((kpi.id or 0, period.key)),
            values.get((kpi.id or 0, period.key)),
            finished,
        )
        for kpi, department, period, finished in wanted
    ]
    # What is late comes first (oldest first), then the periods in progress in plan order.
    late = sorted((line for line in lines if line.finished), key=lambda line: line.period.start)
    return late + [line for line in lines if not line.finished]


def my_countermeasures(session: Session, user_id: str, day: dt.date) -> list[Item]:
    """Open countermeasures the user owns: overdue first, then by due date (undated last)."""
    items = countermeasures._items(  # the one query joining them with KPI and department
        session,
        col(Countermeasure.owner_user_id) == user_id,
        col(Countermeasure.status).in_(countermeasures.OPEN),
    )
    return sorted(items, key=lambda item: (not item.overdue(day),))


def department_line(session: Session, department: Department) -> DepartmentLine:
    assert department.id is not None
    card = build_scorecard(session, department, _day_in(department), history_length=1)
    counts = {status: 0 for status in Status}
    for row in card.rows:
        counts[row.score.status] += 1
    bad = [row for row in card.rows if row.score.status in _BAD]
    bad.sort(key=lambda row: (row.score.status is not Status.RED, row.score.achievement_pct or Decimal(0)))
    open_alerts = alerts.load(
        session,
        col(Kpi.department_id) == department.id,
        col(Alert.status).in_([AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]),
    )
    open_alerts.sort(key=lambda view: view.sort_key)
    return DepartmentLine(department, counts, bad[:WORST_SHOWN], open_alerts[:ALERTS_SHOWN], len(open_alerts))


def _member_departments(session: Session, user_id: str, departments: list[Department]) -> list[Department]:
    owned = set(session.exec(select(Kpi.department_id).where(Kpi.owner_user_id == user_id).distinct()).all())
    return [d for d in departments if not d.is_division and (d.head_user_id == user_id or d.id in owned)]


def build_home(session: Session, user_id: str, is_admin: Callable[[], bool]) -> Home:
    departments = all_departments(session)
    division_head = any(d.is_division and d.head_user_id == user_id for d in departments)
    admin = is_admin()
    mine = _member_departments(session, user_id, departments)
    zone = (mine or departments)[0].timezone if (mine or departments) else "Asia/Tokyo"
    day = today(ZoneInfo(zone))
    home = Home(user_id=user_id, day=day, is_admin=admin, is_division_head=division_head)
    home.reports.extend(report_lines(session, user_id))
    home.countermeasures.extend(my_countermeasures(session, user_id, day))
    shown = [d for d in (departments if division_head else mine) if not d.is_division]
    lines = {d.id: department_line(session, d) for d in shown}
    home.departments.extend(lines[d.id] for d in mine)
    if division_head:
        home.division.extend(line for d_id, line in lines.items() if d_id not in {d.id for d in mine})
    if admin:
        counts: dict[int, int] = {}
        for department_id in session.exec(select(Kpi.department_id)).all():
            counts[department_id] = counts.get(department_id, 0) + 1
        home.plan.extend(PlanLine(d, counts.get(d.id or 0, 0)) for d in departments)
    return home


def watchers_of(session: Session, kpi_id: int) -> set[str]:
    kpi = session.get(Kpi, kpi_id)
    return set() if kpi is None else watchers(session, kpi)


def watchers(session: Session, kpi: Kpi) -> set[str]:
    """Whose Home shows this KPI: its owner, its department's head and the division heads."""
    department = session.get(Department, kpi.department_id)
    users = {kpi.owner_user_id, department.head_user_id if department else None}
    users |= set(session.exec(select(Department.head_user_id).where(col(Department.is_division))).all())
    return {user for user in users if user}
