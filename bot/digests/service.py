"""What a weekly digest says, as plain data: scorecard, KGI progress, KFS, countermeasures, gaps.

A digest reviews the periods that last ended before its date (last week, last month).
Queries do not grow with history, and are per batch of departments (`build_digests`): the
scorecards' four, one for KFS names, one for countermeasures, the provenance marks' few
(bot/digests/provenance.py). The KGI roll-up is computed once per run and shared.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from bot.alerts.rules import below_streak, streak_length
from bot.digests.provenance import Mark, marks_of
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
from bot.scorecard import Scorecard, ScoreRow, all_departments, build_scorecards
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

    @property
    def status(self) -> Status:
        """The department's status in the division summary: its worst KPI's."""
        return worst([row.score.status for row in self.rows])

    @property
    def achievement_pct(self) -> Decimal | None:
        """The department's average 達成率: the mean of its KPIs' (each direction-aware, as scored);
        None when no KPI has both an actual and a target. The status beside it is the worst KPI's,
        so one KPI far over target never hides one far under."""
        known = [row.score.achievement_pct for row in self.rows if row.score.achievement_pct is not None]
        return sum(known, Decimal(0)) / len(known) if known else None


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
    (digest,) = build_digests(session, [department], day, goal)
    return digest


def build_digests(
    session: Session, departments: Sequence[Department], day: dt.date, goal: GoalProgress | None
) -> list[Digest]:
    """The digests of many departments on one day, in their order: the statements of one
    department's digest for all of them."""
    cards = build_scorecards(session, departments, day, history_length=CHART_PERIODS)
    rows = [row for card in cards for row in card.rows]
    factors = _factors(session, rows)
    countermeasures = _open_countermeasures(session, rows)
    marks = marks_of(
        session, {card.department.id: card.rows for card in cards if card.department.id is not None}
    )
    return [
        _digest_from(
            card,
            day,
            goal,
            factors,
            countermeasures.get(card.department.id or 0, []),
            marks.get(card.department.id or 0, {}),
        )
        for card in cards
    ]


def _factors(session: Session, rows: Sequence[ScoreRow]) -> dict[int, SuccessFactor]:
    ids = {row.kpi.success_factor_id for row in rows if row.kpi.success_factor_id is not None}
    if not ids:
        return {}
    found = session.exec(select(SuccessFactor).where(col(SuccessFactor.id).in_(ids))).all()
    return {factor.id: factor for factor in found if factor.id is not None}


def _open_countermeasures(session: Session, rows: Sequence[ScoreRow]) -> dict[int, list[OpenCountermeasure]]:
    """The rows' KPIs' planned and running countermeasures by department, each in digest order."""
    kpis_by_id = {row.kpi.id: row.kpi for row in rows}
    if not kpis_by_id:
        return {}
    open_statuses = [CountermeasureStatus.PLANNED, CountermeasureStatus.DOING]
    found = session.exec(
        select(Countermeasure)
        .where(
            col(Countermeasure.kpi_id).in_(list(kpis_by_id)), col(Countermeasure.status).in_(open_statuses)
        )
        # Undated ones last on both databases (SQLite sorts NULL first, PostgreSQL last).
        .order_by(
            col(Countermeasure.due_date).is_(None), col(Countermeasure.due_date), col(Countermeasure.id)
        )
    ).all()
    by_department: dict[int, list[OpenCountermeasure]] = defaultdict(list)
    for cm in found:
        kpi = kpis_by_id[cm.kpi_id]
        by_department[kpi.department_id].append(OpenCountermeasure(cm, kpi))
    return by_department


def _digest_from(
    card: Scorecard,
    day: dt.date,
    goal: GoalProgress | None,
    factors: dict[int, SuccessFactor],
    countermeasures: list[OpenCountermeasure],
    marks: dict[int, Mark],
) -> Digest:
    department = card.department
    rows = card.rows
    results = [row for row in rows if row.kpi.kind is KpiKind.RESULT]
    processes = [row for row in rows if row.kpi.kind is KpiKind.PROCESS]

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

    missing_by_owner: dict[str | None, list[Kpi]] = defaultdict(list)
    for row in rows:
        # A fetched KPI is its source's to deliver: a gap is shown as stale, not put to the owner.
        if row.score.actual is None and not row.kpi.formula and row.kpi.fetch_source is None:
            missing_by_owner[row.kpi.owner_user_id].append(row.kpi)
    missing = [MissingReports(owner, kpis) for owner, kpis in missing_by_owner.items()]

    return Digest(department, day, results, processes, progress, goal, countermeasures, missing, marks)


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
    departments = [department for department in all_departments(session) if not department.is_division]
    digests = build_digests(session, departments, day, goal)
    return DivisionSummary(division, day, digests, goal, build_funnel(session, day))
