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
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.alerts import service as alerts
from bot.alerts.service import AlertView
from bot.clock import today, utcnow
from bot.countermeasures import service as countermeasures
from bot.countermeasures.service import Item
from bot.models import Alert, AlertStatus, Countermeasure, Department, HomeOpened, Kpi
from bot.periods import Period
from bot.reports.actuals import live_values
from bot.reports.periods_open import unreported
from bot.reports.service import all_kpis
from bot.scorecard import ScoreRow, all_departments, build_scorecards, current_period, targets_for
from bot.scoring import Status, TargetValue

WORST_SHOWN = 3
ALERTS_SHOWN = 5
# A change refreshes the tabs opened within this long. Slack sends `app_home_opened` each time a
# person opens the tab, and it is published afresh then: a publish to a tab nobody has had open
# for an hour would be work, and views.publish rate limit, spent on nothing.
WATCHED_FOR = dt.timedelta(hours=1)
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


def department_lines(session: Session, departments: Sequence[Department]) -> dict[int, DepartmentLine]:
    """Each department's line, by id: the same few statements for one department or all of them
    (a division head's tab shows every department, refreshed after each report): the scorecards
    per local day (bot.scorecard.build_scorecards), the open alerts in one read."""
    by_day: dict[dt.date, list[Department]] = defaultdict(list)
    for department in departments:
        by_day[_day_in(department)].append(department)
    cards = [
        card
        for day, group in by_day.items()
        for card in build_scorecards(session, group, day, history_length=1)
    ]
    ids = [department.id for department in departments if department.id is not None]
    open_alerts: dict[int, list[AlertView]] = defaultdict(list)
    if ids:
        for view in alerts.load(
            session,
            col(Kpi.department_id).in_(ids),
            col(Alert.status).in_([AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]),
        ):
            open_alerts[view.kpi.department_id].append(view)
    lines: dict[int, DepartmentLine] = {}
    for card in cards:
        department = card.department
        assert department.id is not None
        counts = {status: 0 for status in Status}
        for row in card.rows:
            counts[row.score.status] += 1
        bad = [row for row in card.rows if row.score.status in _BAD]
        bad.sort(
            key=lambda row: (row.score.status is not Status.RED, row.score.achievement_pct or Decimal(0))
        )
        shown = sorted(open_alerts[department.id], key=lambda view: view.sort_key)
        lines[department.id] = DepartmentLine(
            department, counts, bad[:WORST_SHOWN], shown[:ALERTS_SHOWN], len(shown)
        )
    return lines


def _member_departments(session: Session, user_id: str) -> list[Department]:
    """The departments the user heads or owns a KPI of (never the division's own), by id."""
    # Two index lookups (0012), as bot.reports.service.all_kpis finds what a user may report.
    owned = select(Kpi.department_id).where(col(Kpi.owner_user_id) == user_id)
    headed = select(Department.id).where(col(Department.head_user_id) == user_id)
    query = select(Department).where(
        sa.not_(col(Department.is_division)), col(Department.id).in_(sa.union(owned, headed))
    )
    return list(session.exec(query.order_by(col(Department.id))).all())


def _heads_the_division(session: Session, user_id: str) -> bool:
    query = select(Department.id).where(col(Department.is_division), col(Department.head_user_id) == user_id)
    return session.exec(query.limit(1)).first() is not None


def build_home(session: Session, user_id: str, is_admin: Callable[[], bool]) -> Home:
    # Every department is read only for a tab that lists them all (the division head's, an admin's
    # plan): an owner's or a department head's tab, refreshed after each of their reports, costs
    # what their own departments cost, whatever the size of the division.
    division_head = _heads_the_division(session, user_id)
    admin = is_admin()
    departments = all_departments(session) if division_head or admin else []
    mine = _member_departments(session, user_id)
    zone = mine[0].timezone if mine else _first_timezone(session)
    day = today(ZoneInfo(zone))
    home = Home(user_id=user_id, day=day, is_admin=admin, is_division_head=division_head)
    home.reports.extend(report_lines(session, user_id))
    home.countermeasures.extend(my_countermeasures(session, user_id, day))
    shown = [d for d in departments if not d.is_division] if division_head else mine
    lines = department_lines(session, shown)
    home.departments.extend(lines[d.id] for d in mine)
    if division_head:
        home.division.extend(line for d_id, line in lines.items() if d_id not in {d.id for d in mine})
    if admin:
        counts = dict(
            session.exec(select(Kpi.department_id, sa.func.count()).group_by(col(Kpi.department_id))).all()
        )
        home.plan.extend(PlanLine(d, counts.get(d.id or 0, 0)) for d in departments)
    return home


def _first_timezone(session: Session) -> str:
    """The first department's time zone: the day of a tab whose user is in no department."""
    query = select(Department.timezone).order_by(col(Department.id)).limit(1)
    return session.exec(query).first() or "Asia/Tokyo"


def watchers_of(session: Session, kpi_id: int) -> set[str]:
    kpi = session.get(Kpi, kpi_id)
    return set() if kpi is None else watchers(session, kpi)


def watchers(session: Session, kpi: Kpi) -> set[str]:
    """Whose Home shows this KPI: its owner, its department's head and the division heads."""
    department = session.get(Department, kpi.department_id)
    users = {kpi.owner_user_id, department.head_user_id if department else None}
    users |= set(session.exec(select(Department.head_user_id).where(col(Department.is_division))).all())
    return {user for user in users if user}


def record_opened(session: Session, user_id: str) -> None:
    """`user_id` opened their tab now (two opens at once, on two workers, both count once)."""
    now = utcnow()
    found = session.get(HomeOpened, user_id)
    if found is not None:
        found.opened_at = now
        session.add(found)
        return
    try:
        with session.begin_nested():
            session.add(HomeOpened(user_id=user_id, opened_at=now))
    except IntegrityError:  # another worker recorded the same open first: theirs is as recent
        return


def watching(session: Session, users: Iterable[str]) -> set[str]:
    """Those of `users` who opened their tab within WATCHED_FOR: the tabs a change refreshes."""
    wanted = sorted(set(users))
    if not wanted:
        return set()
    since = utcnow() - WATCHED_FOR
    return set(
        session.exec(
            select(HomeOpened.user_id).where(
                col(HomeOpened.user_id).in_(wanted), col(HomeOpened.opened_at) >= since
            )
        ).all()
    )
