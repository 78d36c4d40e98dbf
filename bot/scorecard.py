"""A department's scorecard: every KPI's value, target and status for a period, as plain data.

Queries are per department, not per KPI: the KPIs, their targets and the values they
need (derived KPIs included) are each loaded with one statement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.formulas import parse_formula
from bot.models import EVERY_PERIOD, Cadence, Department, Kpi, Target
from bot.periods import Period, period_of
from bot.reports.actuals import live_values
from bot.scoring import Score, TargetValue, score

HISTORY_LENGTH = 6


@dataclass(frozen=True)
class ScoreRow:
    kpi: Kpi
    period: Period
    score: Score
    previous: Decimal | None
    history: list[Decimal | None]  # oldest first, ending with `period`
    targets: list[TargetValue | None]  # the target of each period in `history`


@dataclass(frozen=True)
class Scorecard:
    department: Department
    rows: list[ScoreRow]


def reviewed_period(cadence: Cadence, today: dt.date) -> Period:
    """The period a review looks at: the one that last ended (last week, last month)."""
    return period_of(today, cadence).previous()


def current_period(cadence: Cadence, today: dt.date) -> Period:
    """The period in progress (this week, this month): where reports go by default."""
    return period_of(today, cadence)


def department_kpis(
    session: Session, department_id: int, kpi_ids: Collection[int] | None = None
) -> list[Kpi]:
    """A department's KPIs in plan order (only `kpi_ids` of them, if given)."""
    # A retired KPI (bot/plan/edit.py) keeps its history but is no longer scored.
    query = select(Kpi).where(Kpi.department_id == department_id, col(Kpi.retired_at).is_(None))
    if kpi_ids is not None:
        query = query.where(col(Kpi.id).in_(sorted(kpi_ids)))
    return list(session.exec(query.order_by(col(Kpi.position), col(Kpi.id))).all())


def targets_for(
    session: Session, kpi_ids: list[int], periods: set[str]
) -> dict[tuple[int, str], TargetValue]:
    """Targets by (KPI id, period); a period without its own target falls back to the KPI's default."""
    if not kpi_ids:
        return {}
    table = Target.__table__.c  # type: ignore[attr-defined]
    if session.autoflush:
        session.flush()  # as the ORM's own queries would: pending rows are read too
    # Core, not ORM: plain values, read for every KPI of every digest.
    rows = session.connection().execute(
        sa.select(table.kpi_id, table.period, table.value, table.min_value, table.max_value).where(
            table.kpi_id.in_(kpi_ids), table.period.in_([*periods, EVERY_PERIOD])
        )
    )
    found = {(row.kpi_id, row.period): _target_value(row) for row in rows}
    result: dict[tuple[int, str], TargetValue] = {}
    for kpi_id in kpi_ids:
        for period in periods:
            target = found.get((kpi_id, period)) or found.get((kpi_id, EVERY_PERIOD))
            if target is not None:
                result[(kpi_id, period)] = target
    return result


def _target_value(row: Any) -> TargetValue:
    if row.value is not None:
        return TargetValue.exact(Decimal(row.value))
    assert row.min_value is not None and row.max_value is not None
    return TargetValue(Decimal(row.min_value), Decimal(row.max_value))


def build_scorecard(
    session: Session,
    department: Department,
    today: dt.date,
    history_length: int = HISTORY_LENGTH,
    *,
    current: bool = False,
    kpi_ids: Collection[int] | None = None,
) -> Scorecard:
    """Score every KPI of a department (or only `kpi_ids` of them: what one report moves) for
    the period that last ended (a review), or with `current=True` for the period in progress
    (`/kpi status`); `previous` is the one before."""
    assert department.id is not None
    kpis = department_kpis(session, department.id, kpi_ids)
    period_for = current_period if current else reviewed_period
    # One window per cadence, not per KPI: its periods and their keys are computed once.
    by_cadence = {
        cadence: period_for(cadence, today).last(history_length) for cadence in {k.cadence for k in kpis}
    }
    keys_of = {cadence: [period.key for period in window] for cadence, window in by_cadence.items()}
    period_keys = {key for keys in keys_of.values() for key in keys}

    formulas = {kpi.id: parse_formula(kpi.formula) for kpi in kpis if kpi.formula}
    inputs_by_key: dict[str, int] = {}
    needed = {name for formula in formulas.values() for name in formula.names}
    if needed:
        for key, kpi_id in session.exec(select(Kpi.key, Kpi.id).where(col(Kpi.key).in_(needed))).all():
            assert kpi_id is not None
            inputs_by_key[key] = kpi_id

    kpi_ids = [kpi.id for kpi in kpis if kpi.id is not None]
    values = live_values(session, {*kpi_ids, *inputs_by_key.values()}, period_keys)
    targets = targets_for(session, kpi_ids, period_keys)

    def value_of(kpi_id: int, key: str) -> Decimal | None:
        formula = formulas.get(kpi_id)
        if formula is None:
            return values.get((kpi_id, key))
        return formula.evaluate(
            {name: values.get((input_id, key)) for name, input_id in inputs_by_key.items()}
        )

    rows = []
    for kpi in kpis:
        assert kpi.id is not None
        window, keys = by_cadence[kpi.cadence], keys_of[kpi.cadence]
        series = [value_of(kpi.id, key) for key in keys]
        target_series = [targets.get((kpi.id, key)) for key in keys]
        kpi_score = score(
            series[-1], target_series[-1], kpi.direction, Decimal(kpi.amber_pct), Decimal(kpi.red_pct)
        )
        previous = series[-2] if len(series) > 1 else None
        rows.append(ScoreRow(kpi, window[-1], kpi_score, previous, series, target_series))
    return Scorecard(department, rows)


def all_departments(session: Session) -> list[Department]:
    return list(session.exec(select(Department).order_by(col(Department.id))).all())
