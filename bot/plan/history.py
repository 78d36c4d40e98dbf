"""What the plan checks need from the database (bot/plan/checks.py is pure): a KGI already stored,
each KPI's recent history, the funnel stored. A constant number of queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from decimal import Decimal
from pathlib import Path

from sqlmodel import Session, col, select

from bot.models import Actual, Goal, Kpi
from bot.plan.checks import Context, FunnelStep, check_plan
from bot.plan.file import read_plan
from bot.plan.specs import Plan, Problem

HISTORY_PERIODS = 12  # the latest periods a target is compared with


def check_context(
    session: Session, kpi_keys: Collection[str], funnel: list[FunnelStep] | None = None
) -> Context:
    rows = session.exec(
        select(Kpi.key, Actual.period, Actual.value)
        .join(Kpi, col(Kpi.id) == Actual.kpi_id)
        .where(col(Kpi.key).in_(list(kpi_keys)), col(Actual.superseded_at).is_(None))
    ).all()
    by_kpi: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for key, period, value in rows:
        by_kpi[key][period] = Decimal(value)
    history = {
        key: {period: values[period] for period in sorted(values)[-HISTORY_PERIODS:]}
        for key, values in by_kpi.items()
    }
    has_goal = session.exec(select(Goal.id).limit(1)).first() is not None
    return Context(has_stored_goal=has_goal, history=history, funnel=funnel or [])


def plan_warnings(session: Session, path: Path, plan: Plan) -> list[Problem]:
    """The design warnings of a validated plan file, against the database's history."""
    funnel = [FunnelStep(stage.kpi_key, stage.conversion_pct, stage.where) for stage in plan.funnel]
    return check_plan(read_plan(path), plan, check_context(session, [kpi.key for kpi in plan.kpis], funnel))
