"""The plan as stored, written back as a plan file (YAML) that `kpibot import-plan` reads as is:
importing it into the database it came from changes nothing, and importing it into an empty
one gives the same plan. Fields at their defaults are left out, as a person would write it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import yaml
from sqlmodel import Session, col, select

from bot.alerts.rules import STREAK_DEFAULT
from bot.models import EVERY_PERIOD, Department, FunnelStage, Goal, Kpi, SuccessFactor, Target
from bot.plan.retired import FIELD as RETIRED
from bot.plan.retired import retired_day
from bot.scoring import default_thresholds
from bot.sources.freshness import format_duration

HEADER = "# The plan as kpibot holds it (kpibot export plan). Import it with: kpibot import-plan FILE\n"
_DEPARTMENT_DEFAULTS = {"locale": "ja", "timezone": "Asia/Tokyo", "digest_cron": "0 9 * * mon"}


def _number(value: Any) -> int | str:
    """Whole numbers as YAML integers, others as their exact text (never a float)."""
    amount = Decimal(value).normalize()
    if amount == amount.to_integral_value():
        return int(amount)
    return format(amount, "f")


def _target(row: Target) -> int | str:
    if row.value is not None:
        return _number(row.value)
    return f"{_number(row.min_value)}-{_number(row.max_value)}"


def _names(row: Department | Goal | SuccessFactor | Kpi) -> dict[str, str]:
    return {"ja": row.name_ja, "en": row.name_en}


def plan_document(session: Session) -> dict[str, Any]:
    departments = list(session.exec(select(Department).order_by(col(Department.id))).all())
    goals = list(session.exec(select(Goal).order_by(col(Goal.id))).all())
    factors = list(session.exec(select(SuccessFactor).order_by(col(SuccessFactor.id))).all())
    # Retired KPIs too, with the day (bot/plan/retired.py): re-imported, they stay retired.
    kpis = list(session.exec(select(Kpi).order_by(col(Kpi.position), col(Kpi.id))).all())
    targets = list(session.exec(select(Target).order_by(col(Target.kpi_id), col(Target.period))).all())
    stages = [
        stage
        for stage in session.exec(select(FunnelStage).order_by(col(FunnelStage.position))).all()
        if stage.kpi_id in {kpi.id for kpi in kpis}
    ]
    department_keys = {d.id: d.key for d in departments}
    goal_keys = {g.id: g.key for g in goals}
    factor_keys = {f.id: f.key for f in factors}
    kpi_keys = {k.id: k.key for k in kpis}

    document: dict[str, Any] = {"version": 1}
    document["goals"] = [
        {
            "key": goal.key,
            "name": _names(goal),
            "target": _number(goal.target_value),
            "unit": goal.unit.value,
            "fiscal_year": goal.fiscal_year,
            **({"measure": kpi_keys[goal.kpi_id]} if goal.kpi_id in kpi_keys else {}),
        }
        for goal in goals
    ]
    document["success_factors"] = [
        {
            "key": f.key,
            "name": _names(f),
            **({"goal": goal_keys[f.goal_id]} if f.goal_id in goal_keys else {}),
        }
        for f in factors
    ]
    document["departments"] = [_department(d) for d in departments]
    defaults = {row.kpi_id: row for row in targets if row.period == EVERY_PERIOD}
    document["kpis"] = [_kpi(kpi, department_keys, factor_keys, defaults.get(kpi.id)) for kpi in kpis]
    by_id = {d.id: d for d in departments}
    for entry, kpi in zip(document["kpis"], kpis, strict=True):
        if (day := retired_day(kpi, by_id[kpi.department_id])) is not None:
            entry[RETIRED] = day
    targets = [row for row in targets if row.kpi_id in kpi_keys]
    document["targets"] = [
        {"kpi": kpi_keys[row.kpi_id], "period": row.period, "target": _target(row)}
        for row in targets
        if row.period != EVERY_PERIOD and row.kpi_id in kpi_keys
    ]
    if stages:
        document["funnel"] = [_stage(stage, kpi_keys) for stage in stages]
    return {name: value for name, value in document.items() if value != []}


def _department(d: Department) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": d.key, "name": _names(d)}
    if d.channel_id:
        entry["channel"] = d.channel_id
    if d.head_user_id:
        entry["head"] = d.head_user_id
    for name, default in _DEPARTMENT_DEFAULTS.items():
        if getattr(d, name) != default:
            entry[name] = getattr(d, name)
    if d.fiscal_year_start_month != 4:
        entry["fiscal_year_start_month"] = d.fiscal_year_start_month
    if d.holiday_shift:
        entry["holiday_shift"] = True
    if d.is_division:
        entry["division"] = True
    return entry


def _kpi(
    kpi: Kpi, departments: dict[Any, str], factors: dict[Any, str], default: Target | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": kpi.key, "department": departments[kpi.department_id]}
    if kpi.success_factor_id in factors:
        entry["success_factor"] = factors[kpi.success_factor_id]
    entry["name"] = _names(kpi)
    if kpi.owner_user_id:
        entry["owner"] = kpi.owner_user_id
    entry.update(
        unit=kpi.unit.value,
        direction=kpi.direction.value,
        cadence=kpi.cadence.value,
        kind=kpi.kind.value,
        aggregation=kpi.aggregation.value,
    )
    amber, red = Decimal(kpi.amber_pct), Decimal(kpi.red_pct)
    if (amber, red) != default_thresholds(kpi.direction):
        entry["thresholds"] = {"amber": _number(amber), "red": _number(red)}
    if kpi.formula:
        entry["formula"] = kpi.formula
    if default is not None:
        entry["target"] = _target(default)
    if kpi.streak != STREAK_DEFAULT:
        entry["streak"] = kpi.streak
    if kpi.playbooks:
        entry["playbook"] = [{k: v for k, v in item.items() if v is not None} for item in kpi.playbooks]
    if kpi.fetch_source is not None:  # where it is fetched from, as the plan wrote it (bot/sources/)
        entry["source"] = kpi.fetch_source
        for name, seconds in (("every", kpi.fetch_every_s), ("max_age", kpi.fetch_max_age_s)):
            if seconds is not None:
                entry[name] = format_duration(seconds)
    return entry


def _stage(stage: FunnelStage, kpis: dict[Any, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"kpi": kpis[stage.kpi_id]}
    if stage.conversion_pct is not None:
        entry["conversion"] = _number(stage.conversion_pct)
    entry["leak_below"] = _number(stage.leak_pct)
    return entry


def plan_yaml(session: Session) -> str:
    body = yaml.safe_dump(plan_document(session), allow_unicode=True, sort_keys=False, width=120)
    return HEADER + body
