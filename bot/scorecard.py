"""A department's scorecard: every KPI's value, target and status for a period, as plain data.

Queries are per batch of departments, not per department or KPI: the KPIs, their targets and
the values they need (derived KPIs included) are each loaded with one statement for up to
`CHUNK` departments (`build_scorecards`); one department's scorecard is a batch of one.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Sequence
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
# Departments read per statement: 250 × 20 KPIs stays far below SQLite's 32,766 bound parameters.
CHUNK = 250


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


def targets_for(
    session: Session, kpi_ids: list[int], periods: set[str]
) -> dict[tuple[int, str], TargetValue]:
    """Targets by (KPI id, period); a period without its own target falls back to the KPI's default."""
    found = _stored_targets(session, kpi_ids, periods)
    result: dict[tuple[int, str], TargetValue] = {}
    for kpi_id in kpi_ids:
        for period in periods:
            target = found.get((kpi_id, period)) or found.get((kpi_id, EVERY_PERIOD))
            if target is not None:
                result[(kpi_id, period)] = target
    return result


def _stored_targets(
    session: Session, kpi_ids: Collection[int], periods: Collection[str]
) -> dict[tuple[int, str], TargetValue]:
    """The Target rows of these KPIs for these periods and their defaults, as stored (one statement)."""
    if not kpi_ids:
        return {}
    table = Target.__table__.c  # type: ignore[attr-defined]
    if session.autoflush:
        session.flush()  # as the ORM's own queries would: pending rows are read too
    # Core, not ORM: plain values, read for every KPI of every digest.
    rows = session.connection().execute(
        sa.select(table.kpi_id, table.period, table.value, table.min_value, table.max_value).where(
            table.kpi_id.in_(list(kpi_ids)), table.period.in_([*periods, EVERY_PERIOD])
        )
    )
    return {(row.kpi_id, row.period): _target_value(row) for row in rows}


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
    (card,) = build_scorecards(session, [department], today, history_length, current=current, kpi_ids=kpi_ids)
    return card


def build_scorecards(
    session: Session,
    departments: Sequence[Department],
    today: dt.date,
    history_length: int = HISTORY_LENGTH,
    *,
    current: bool = False,
    kpi_ids: Collection[int] | None = None,
) -> list[Scorecard]:
    """`build_scorecard` for many departments on the same day, in their order: the same
    statements (KPIs, formula inputs, values, targets) for every `CHUNK` of them."""
    cards: list[Scorecard] = []
    for start in range(0, len(departments), CHUNK):
        cards += _scorecards(
            session, departments[start : start + CHUNK], today, history_length, current, kpi_ids
        )
    return cards


def _scorecards(
    session: Session,
    departments: Sequence[Department],
    today: dt.date,
    history_length: int,
    current: bool,
    kpi_ids: Collection[int] | None,
) -> list[Scorecard]:
    ids = [department.id for department in departments if department.id is not None]
    by_department: dict[int, list[Kpi]] = defaultdict(list)
    for kpi in departments_kpis(session, ids, kpi_ids):
        by_department[kpi.department_id].append(kpi)
    kpis = [kpi for kpis in by_department.values() for kpi in kpis]
    period_for = current_period if current else reviewed_period
    # One window per cadence, not per KPI: its periods and their keys are computed once per batch.
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

    scored = [kpi.id for kpi in kpis if kpi.id is not None]
    values = live_values(session, {*scored, *inputs_by_key.values()}, period_keys)
    targets = _targets_by_cadence(session, kpis, keys_of)

    def series_of(kpi_id: int, keys: list[str]) -> list[Decimal | None]:
        formula = formulas.get(kpi_id)
        if formula is None:
            return [values.get((kpi_id, key)) for key in keys]
        return [
            formula.evaluate({name: values.get((input_id, key)) for name, input_id in inputs_by_key.items()})
            for key in keys
        ]

    def row_of(kpi: Kpi) -> ScoreRow:
        # Each attribute read once: an ORM attribute costs a descriptor call, and rows are thousands.
        kpi_id, cadence = kpi.id, kpi.cadence
        assert kpi_id is not None
        window, keys = by_cadence[cadence], keys_of[cadence]
        series = series_of(kpi_id, keys)
        target_series = [targets.get((kpi_id, key)) for key in keys]
        kpi_score = score(
            series[-1], target_series[-1], kpi.direction, Decimal(kpi.amber_pct), Decimal(kpi.red_pct)
        )
        previous = series[-2] if len(series) > 1 else None
        return ScoreRow(kpi, window[-1], kpi_score, previous, series, target_series)

    return [
        Scorecard(department, [row_of(kpi) for kpi in by_department.get(department.id or 0, [])])
        for department in departments
    ]


def departments_kpis(
    session: Session, department_ids: Collection[int], kpi_ids: Collection[int] | None = None
) -> list[Kpi]:
    """The departments' KPIs (only `kpi_ids` of them, if given), by department, each in plan order."""
    if not department_ids:
        return []
    # A retired KPI (bot/plan/edit.py) keeps its history but is no longer scored.
    query = select(Kpi).where(
        col(Kpi.department_id).in_(sorted(department_ids)), col(Kpi.retired_at).is_(None)
    )
    if kpi_ids is not None:
        query = query.where(col(Kpi.id).in_(sorted(kpi_ids)))
    order = (col(Kpi.department_id), col(Kpi.position), col(Kpi.id))
    return list(session.exec(query.order_by(*order)).all())


def _targets_by_cadence(
    session: Session, kpis: Sequence[Kpi], keys_of: dict[Cadence, list[str]]
) -> dict[tuple[int, str], TargetValue]:
    """`targets_for` with each KPI's fallback resolved over its own cadence's keys only."""
    ids = [kpi.id for kpi in kpis if kpi.id is not None]
    found = _stored_targets(session, ids, {key for keys in keys_of.values() for key in keys})
    result: dict[tuple[int, str], TargetValue] = {}
    for kpi in kpis:
        kpi_id = kpi.id  # read once (see row_of)
        assert kpi_id is not None
        default = found.get((kpi_id, EVERY_PERIOD))
        for key in keys_of[kpi.cadence]:
            target = found.get((kpi_id, key)) or default
            if target is not None:
                result[(kpi_id, key)] = target
    return result


def all_departments(session: Session) -> list[Department]:
    return list(session.exec(select(Department).order_by(col(Department.id))).all())
