"""The KPI plan: validate a plan file completely, then write it in one transaction.

Import is idempotent: departments, goals, KFS and KPIs are matched by key and targets by
(KPI, period), so importing the same file twice changes nothing the second time, not even the
audit trail (an import is audited only when it changed something). Counts are by table name.
Nothing is ever deleted by an import; KPIs carry history.
"""

from __future__ import annotations

from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from sqlmodel import Session, col, select

from bot.clock import utcnow
from bot.models import (
    AuditEvent,
    Department,
    FunnelStage,
    Goal,
    Kpi,
    SuccessFactor,
    Target,
)
from bot.plan.file import read_plan
from bot.plan.retired import retire_as_written
from bot.plan.specs import DepartmentSpec, Existing, FunnelSpec, ImportResult, Plan
from bot.plan.validation import validate
from bot.scoring import TargetValue


def load_plan(path: Path, session: Session) -> Plan:
    return validate(read_plan(path), Existing.load(session))


def apply_plan(session: Session, plan: Plan, *, actor: str = "cli") -> ImportResult:
    """Write a validated plan. The caller owns the transaction: all of it lands, or none."""
    result = ImportResult()
    goals = _upsert_all(
        session,
        result,
        Goal,
        plan.goals,
        lambda s: {
            "name_ja": s.name_ja,
            "name_en": s.name_en,
            "target_value": s.target_value,
            "unit": s.unit,
            "fiscal_year": s.fiscal_year,
        },
    )
    departments = _upsert_all(
        session,
        result,
        Department,
        plan.departments,
        lambda s: {f.name: getattr(s, f.name) for f in fields(DepartmentSpec) if f.name != "key"},
    )
    goal_ids = _ids(session, Goal, goals)
    factors = _upsert_all(
        session,
        result,
        SuccessFactor,
        plan.factors,
        lambda s: {
            "name_ja": s.name_ja,
            "name_en": s.name_en,
            "goal_id": goal_ids.get(s.goal_key),
        },
    )
    department_ids = _ids(session, Department, departments)
    factor_ids = _ids(session, SuccessFactor, factors)
    kpis = _upsert_all(
        session,
        result,
        Kpi,
        plan.kpis,
        lambda s: {
            "name_ja": s.name_ja,
            "name_en": s.name_en,
            "department_id": department_ids[s.department_key],
            "success_factor_id": factor_ids.get(s.factor_key),
            "owner_user_id": s.owner_user_id,
            "unit": s.unit,
            "direction": s.direction,
            "cadence": s.cadence,
            "kind": s.kind,
            "aggregation": s.aggregation,
            "amber_pct": s.amber_pct,
            "red_pct": s.red_pct,
            "formula": s.formula,
            "position": s.position,
            "streak": s.streak,
            "playbooks": s.playbooks,
            "fetch_source": s.fetch.source if s.fetch else None,
            "fetch_every_s": s.fetch.every_s if s.fetch else None,
            "fetch_max_age_s": s.fetch.max_age_s if s.fetch else None,
        },
    )
    retire_as_written(session, plan.kpis, kpis, result.count)
    kpi_ids = _ids(session, Kpi, kpis)
    # A goal's measure may be a KPI created just now, so goals are linked once KPIs have ids.
    for spec in plan.goals:
        if _update(goals[spec.key], {"kpi_id": kpi_ids.get(spec.measure_key)}):
            result.count("goal", "updated", spec.key)
    existing_targets = {
        (t.kpi_id, t.period): t
        for t in session.exec(select(Target).where(Target.kpi_id.in_(set(kpi_ids.values())))).all()  # type: ignore[attr-defined]
    }
    entity = Target.__tablename__
    for spec in plan.targets:
        values = _target_columns(spec.target)
        row = existing_targets.get((kpi_ids[spec.kpi_key], spec.period))
        if row is None:
            session.add(Target(kpi_id=kpi_ids[spec.kpi_key], period=spec.period, **values))
            result.count(entity, "created")
        elif _update(row, values):
            result.count(entity, "updated")
        else:
            result.count(entity, "unchanged")
    _write_funnel(session, result, plan.funnel, kpi_ids)
    if result.changed:  # a re-import that changes nothing leaves no trace
        session.add(
            AuditEvent(
                actor=actor,
                action="plan.imported",
                entity="plan",
                entity_id=plan.source[:64],  # the column's length; a file name may be longer
                source="import",
                details={entity: dict(counter) for entity, counter in result.counts.items()},
            )
        )
    session.flush()
    return result


def _write_funnel(
    session: Session, result: ImportResult, funnel: list[FunnelSpec], kpi_ids: dict[str | None, int]
) -> None:
    """A file with a funnel replaces the stored one (stages are a definition, not history); a file
    without one leaves it as it is."""
    if not funnel:
        return
    wanted = [
        (position, kpi_ids[spec.kpi_key], spec.conversion_pct, spec.leak_pct)
        for position, spec in enumerate(funnel)
    ]
    stored = session.exec(select(FunnelStage).order_by(col(FunnelStage.position))).all()
    current = [
        (
            row.position,
            row.kpi_id,
            None if row.conversion_pct is None else Decimal(row.conversion_pct),
            Decimal(row.leak_pct),
        )
        for row in stored
    ]
    if current == wanted:
        result.count("funnel_stage", "unchanged")
        return
    for row in stored:
        session.delete(row)
    session.flush()
    for position, kpi_id, conversion, leak in wanted:
        session.add(FunnelStage(position=position, kpi_id=kpi_id, conversion_pct=conversion, leak_pct=leak))
    result.count("funnel_stage", "updated" if stored else "created")


def _target_columns(target: TargetValue) -> dict[str, Decimal | None]:
    if target.is_range:
        return {"value": None, "min_value": target.low, "max_value": target.high}
    return {"value": target.low, "min_value": None, "max_value": None}


ModelT = TypeVar("ModelT", Department, Goal, SuccessFactor, Kpi)


def _upsert_all(
    session: Session, result: ImportResult, model: type[ModelT], specs: list[Any], columns: Any
) -> dict[str, ModelT]:
    keys = [spec.key for spec in specs]
    rows = {row.key: row for row in session.exec(select(model).where(model.key.in_(keys))).all()}  # type: ignore[attr-defined]
    entity = model.__tablename__
    for spec in specs:
        values = columns(spec)
        row = rows.get(spec.key)
        if row is None:
            row = model(key=spec.key, **values)
            session.add(row)
            rows[spec.key] = row
            result.count(entity, "created", spec.key)
            continue
        given = getattr(spec, "given", None)
        if given is not None:
            values = {name: value for name, value in values.items() if name in given}
        result.count(entity, "updated" if _update(row, values) else "unchanged", spec.key)
    session.flush()
    return rows


def _ids(session: Session, model: type[ModelT], rows: dict[str, ModelT]) -> dict[str | None, int]:
    """Ids by key for rows just written plus every row already stored (partial plans refer to them)."""
    ids: dict[str | None, int] = {
        key: row_id for key, row_id in session.exec(select(model.key, model.id)).all()
    }  # type: ignore[arg-type]
    ids.update({key: row.id for key, row in rows.items() if row.id is not None})
    return ids


def _update(row: Any, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        current = getattr(row, name)
        if isinstance(value, Decimal) and current is not None:
            same = Decimal(current) == value
        else:
            same = current == value
        if not same:
            setattr(row, name, value)
            changed = True
    if changed and hasattr(row, "updated_at"):
        row.updated_at = utcnow()
    return changed
