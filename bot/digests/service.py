"""What a weekly digest says, as plain data: scorecard, KGI progress, KFS, countermeasures, gaps.

A digest reviews the periods that last ended before its date (last week, last month).
Queries are per department and do not grow with history: the scorecard's four, one for
KFS names, one for countermeasures. The KGI roll-up is computed once per run and shared.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from bot.alerts.rules import below_streak, streak_length
from bot.digests.provenance import Mark, marks
from bot.funnel.service import Funnel, build_funnel
from bot.models import (
    Countermeasure,
    CountermeasureStatus,
    Department,
    Goal,
    Kpi,
    KpiKind,
    SuccessFactor,
)
from bot.periods import fiscal_year, fiscal_year_bounds, fiscal_year_periods
from bot.reports.actuals import live_values
from bot.scorecard import Scorecard, ScoreRow, all_departments, build_scorecard
from bot.scoring import HUNDRED, Status

if TYPE_CHECKING:  # matplotlib stays out of processes that draw no chart (the web workers)
    from bot.digests.charts import ChartSeries

CHART_PERIODS = 13
SPARKLINE_PERIODS = 6
_STATUS_ORDER = {Status.RED: 0, Status.AMBER: 1, Status.GREEN: 2, Status.NO_TARGET: 3, Status.NO_DATA: 4}


@dataclass(frozen=True)
class GoalProgress:
    goal: Goal
    measure: Kpi | None
    actual: Decimal | None  # fiscal year to date
    expected: Decimal  # where the plan should be (target × share of the year the actual covers)

    @property
    def pct_of_target(self) -> Decimal | None:
        if self.actual is None or self.goal.target_value == 0:
            return None
        return self.actual / Decimal(self.goal.target_value) * HUNDRED

    @property
    def pct_of_plan(self) -> Decimal | None:
        if self.actual is None or self.expected == 0:
            return None
        return self.actual / self.expected * HUNDRED

    @property
    def behind_plan(self) -> bool:
        return self.actual is not None and self.actual < self.expected


@dataclass(frozen=True)
class FactorProgress:
    factor: SuccessFactor | None  # None: KPIs not tied to a KFS
    status: Status
    slipping: list[ScoreRow]


@dataclass(frozen=True)
class OpenCountermeasure:
    countermeasure: Countermeasure
    kpi: Kpi


@dataclass(frozen=True)
class MissingReports:
    owner_user_id: str | None
    kpis: list[Kpi]


@dataclass
class Digest:
    department: Department
    day: dt.date
    results: list[ScoreRow]
    processes: list[ScoreRow]
    factors: list[FactorProgress]
    goal: GoalProgress | None
    countermeasures: list[OpenCountermeasure]
    missing: list[MissingReports]
    # By KPI id: a value from a system, or corrected since the last digest (bot/digests/provenance.py).
    marks: dict[int, Mark] = field(default_factory=dict)

    @property
    def rows(self) -> list[ScoreRow]:
        return self.results + self.processes

    def count(self, status: Status | str) -> int:
        return sum(1 for row in self.rows if row.score.status == status)


@dataclass
class DivisionSummary:
    division: Department
    day: dt.date
    digests: list[Digest]
    goal: GoalProgress | None
    funnel: Funnel | None = None  # the funnel across departments, its leaking hand-off marked


def worst(statuses: list[Status]) -> Status:
    return min(statuses, key=_STATUS_ORDER.__getitem__) if statuses else Status.NO_DATA


def sparkline(values: list[Decimal | None]) -> str:
    """▁▂▃▄▅▆▇█ over the values' own range; a gap for a period not reported."""
    bars = "▁▂▃▄▅▆▇█"
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    return "".join(
        "·" if v is None else bars[0 if span == 0 else int((v - low) / span * (len(bars) - 1))]
        for v in values
    )


def on_streak(row: ScoreRow) -> bool:
    """Whether the reviewed period ends the KPI's streak of periods under amber (the digest's mark;
    the same rule as the streak alert, over the digest's history)."""
    return below_streak(row.kpi, row.history, row.targets) >= streak_length(row.kpi)


def trend(row: ScoreRow) -> str | None:
    """ "up", "down" or "flat" against the previous period (raw values; direction is the reader's)."""
    current, previous = row.score.actual, row.previous
    if current is None or previous is None:
        return None
    if current == previous:
        return "flat"
    return "up" if current > previous else "down"


def goal_progress(session: Session, day: dt.date, start_month: int = 4) -> GoalProgress | None:
    """The current fiscal year's KGI and how far its measure KPI has come, or None without a KGI."""
    year = fiscal_year(day, start_month)
    goal = session.exec(select(Goal).where(Goal.fiscal_year == year).order_by(col(Goal.id))).first()
    if goal is None:
        return None
    start, end = fiscal_year_bounds(year, start_month)
    # The plan's share is taken over the same days as the actual: the periods that have ended.
    # (Up to `day` instead, a monthly measure would look a month behind plan until the 1st.)
    through = day - dt.timedelta(days=1)
    measure = session.get(Kpi, goal.kpi_id) if goal.kpi_id is not None else None
    actual = None
    if measure is not None and measure.id is not None:
        ended = [p for p in fiscal_year_periods(year, measure.cadence, start_month) if p.end < day]
        through = ended[-1].end if ended else start - dt.timedelta(days=1)
        values = live_values(session, [measure.id], [p.key for p in ended])
        actual = sum(values.values(), Decimal(0)) if values else None
    year_days = (end - start).days + 1
    elapsed = Decimal(min(max((through - start).days + 1, 0), year_days)) / Decimal(year_days)
    expected = Decimal(goal.target_value) * elapsed
    return GoalProgress(goal, measure, actual, expected)


def build_digest(session: Session, department: Department, day: dt.date, goal: GoalProgress | None) -> Digest:
    card = build_scorecard(session, department, day, history_length=CHART_PERIODS)
    return _digest_from(session, card, day, goal)


def _digest_from(session: Session, card: Scorecard, day: dt.date, goal: GoalProgress | None) -> Digest:
    department = card.department
    rows = card.rows
    results = [row for row in rows if row.kpi.kind is KpiKind.RESULT]
    processes = [row for row in rows if row.kpi.kind is KpiKind.PROCESS]

    factor_ids = {row.kpi.success_factor_id for row in rows if row.kpi.success_factor_id is not None}
    factors = (
        {
            factor.id: factor
            for factor in session.exec(
                select(SuccessFactor).where(col(SuccessFactor.id).in_(factor_ids))
            ).all()
        }
        if factor_ids
        else {}
    )
    by_factor: dict[int | None, list[ScoreRow]] = defaultdict(list)
    for row in rows:
        by_factor[row.kpi.success_factor_id].append(row)
    progress = [
        FactorProgress(
            factors.get(factor_id) if factor_id is not None else None,
            worst([r.score.status for r in factor_rows if r.score.status not in (Status.NO_TARGET,)]),
            [r for r in factor_rows if r.score.status in (Status.RED, Status.AMBER)],
        )
        for factor_id, factor_rows in by_factor.items()
    ]
    progress.sort(key=lambda p: _STATUS_ORDER[p.status])

    kpis_by_id = {row.kpi.id: row.kpi for row in rows}
    open_statuses = [CountermeasureStatus.PLANNED, CountermeasureStatus.DOING]
    countermeasures = (
        [
            OpenCountermeasure(cm, kpis_by_id[cm.kpi_id])
            for cm in session.exec(
                select(Countermeasure)
                .where(
                    col(Countermeasure.kpi_id).in_(list(kpis_by_id)),
                    col(Countermeasure.status).in_(open_statuses),
                )
                # Undated ones last on both databases (SQLite sorts NULL first, PostgreSQL last).
                .order_by(
                    col(Countermeasure.due_date).is_(None),
                    col(Countermeasure.due_date),
                    col(Countermeasure.id),
                )
            ).all()
        ]
        if kpis_by_id
        else []
    )

    missing_by_owner: dict[str | None, list[Kpi]] = defaultdict(list)
    for row in rows:
        if row.score.actual is None and not row.kpi.formula:
            missing_by_owner[row.kpi.owner_user_id].append(row.kpi)
    missing = [MissingReports(owner, kpis) for owner, kpis in missing_by_owner.items()]

    assert department.id is not None
    return Digest(
        department, day, results, processes, progress, goal, countermeasures, missing,
        marks(session, department.id, rows),
    )  # fmt: skip


def chart_series(digest: Digest, locale: str) -> list[ChartSeries]:
    """Each KPI's actuals and targets over the digest's history window, for the trend chart."""
    from bot.digests.charts import ChartSeries

    return [
        ChartSeries(
            name=row.kpi.name(locale),
            unit=row.kpi.unit.value,
            periods=[p.key for p in row.period.last(len(row.history))],
            actuals=list(row.history),
            targets=[None if t is None else (t.low, t.high) for t in row.targets],
        )
        for row in digest.rows
    ]


def build_division_summary(session: Session, division: Department, day: dt.date) -> DivisionSummary:
    goal = goal_progress(session, day, division.fiscal_year_start_month)
    digests = [
        build_digest(session, department, day, goal)
        for department in all_departments(session)
        if not department.is_division
    ]
    return DivisionSummary(division, day, digests, goal, build_funnel(session, day))
