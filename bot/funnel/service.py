"""The funnel across departments (MQL → SQL → deal → won → upsell), as plain data for a period.

Each stage is a KPI of some department; each hand-off converts the stage before into this one. Its
planned conversion is the plan's `conversion` (else the stages' targets: target ÷ target before),
and it leaks when the actual conversion is under `leak_pct` % of that plan. The hand-off that leaks
most (the lowest actual ÷ planned) is the one the division digest marks. Three queries.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlmodel import Session, col, select

from bot.models import Department, FunnelStage, Kpi
from bot.periods import Period
from bot.reports.actuals import live_values
from bot.scorecard import reviewed_period, targets_for
from bot.scoring import HUNDRED, TargetValue


@dataclass(frozen=True)
class Stage:
    kpi: Kpi
    department: Department
    actual: Decimal | None
    target: TargetValue | None


@dataclass(frozen=True)
class HandOff:
    """From stage `before` into stage `after`: conversions in % of the stage before."""

    before: Stage
    after: Stage
    planned_pct: Decimal | None
    actual_pct: Decimal | None
    leak_pct: Decimal

    @property
    def vs_plan_pct(self) -> Decimal | None:
        """The actual conversion in % of the planned one (100 = as planned)."""
        if self.planned_pct is None or self.actual_pct is None or self.planned_pct == 0:
            return None
        return self.actual_pct / self.planned_pct * HUNDRED

    @property
    def leaking(self) -> bool:
        return self.vs_plan_pct is not None and self.vs_plan_pct < self.leak_pct


@dataclass(frozen=True)
class Funnel:
    period: Period
    stages: list[Stage]
    hand_offs: list[HandOff]

    @property
    def worst(self) -> HandOff | None:
        """The hand-off that leaks most, if any leaks."""
        leaking = [hand_off for hand_off in self.hand_offs if hand_off.leaking]
        return min(leaking, key=lambda h: h.vs_plan_pct or Decimal(0)) if leaking else None


def _pct(numerator: Decimal | None, denominator: Decimal | None) -> Decimal | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator * HUNDRED


def build_funnel(session: Session, day: dt.date, period: Period | None = None) -> Funnel | None:
    """The stored funnel for `period` (default: the one its stages last finished before `day`), or
    None without one."""
    rows = session.exec(
        select(FunnelStage, Kpi, Department)
        .join(Kpi, col(Kpi.id) == FunnelStage.kpi_id)
        .join(Department, col(Department.id) == Kpi.department_id)
        .order_by(col(FunnelStage.position))
    ).all()
    if len(rows) < 2:
        return None
    period = period or reviewed_period(rows[0][1].cadence, day)
    ids = [kpi.id for _, kpi, _ in rows if kpi.id is not None]
    values = live_values(session, ids, [period.key])
    targets = targets_for(session, ids, {period.key})
    stages = [
        Stage(kpi, department, values.get((kpi.id, period.key)), targets.get((kpi.id, period.key)))  # type: ignore[arg-type]
        for _, kpi, department in rows
    ]
    hand_offs = []
    for (row, _, _), before, after in zip(rows[1:], stages, stages[1:], strict=False):
        planned = (
            Decimal(row.conversion_pct)
            if row.conversion_pct is not None
            else _pct(
                None if after.target is None else after.target.low,
                None if before.target is None else before.target.low,
            )
        )
        hand_offs.append(
            HandOff(before, after, planned, _pct(after.actual, before.actual), Decimal(row.leak_pct))
        )
    return Funnel(period, stages, hand_offs)
