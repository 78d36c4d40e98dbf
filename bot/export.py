"""Export of what is stored: live actuals or targets as CSV (in the import format), or the whole
plan as a YAML plan file (bot/plan/export.py) that imports back unchanged."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import TextIO

from sqlmodel import Session, col, select

from bot.models import Actual, Department, Kpi, Target

ACTUAL_COLUMNS = [
    "department",
    "kpi",
    "period",
    "value",
    "unit",
    "reported_by",
    "reported_at",
    "source",
    "note",
    # Empty for the live value; set on rows a correction replaced (only with --history).
    "superseded_at",
]
TARGET_COLUMNS = ["kpi", "period", "target"]


def _plain(value: object) -> str:
    # Decimal's str keeps the column scale (1200.000000); a spreadsheet wants 1200.
    text = f"{value:f}" if value is not None else ""
    return text.rstrip("0").rstrip(".") if "." in text else text


def export_actuals(session: Session, out: TextIO, *, include_history: bool = False) -> int:
    query = (
        select(Actual, Kpi.key, Kpi.unit, Department.key)
        .join(Kpi, col(Kpi.id) == Actual.kpi_id)
        .join(Department, col(Department.id) == Kpi.department_id)
        .order_by(col(Department.key), col(Kpi.position), col(Actual.period), col(Actual.id))
    )
    if not include_history:
        query = query.where(col(Actual.superseded_at).is_(None))
    rows = (
        [
            dept,
            kpi_key,
            a.period,
            _plain(a.value),
            unit.value,
            a.reported_by,
            a.reported_at.isoformat(),
            a.source.value,
            a.note or "",
            a.superseded_at.isoformat() if a.superseded_at else "",
        ]
        for a, kpi_key, unit, dept in session.exec(query).all()
    )
    return _write(out, ACTUAL_COLUMNS, rows)


def export_targets(session: Session, out: TextIO) -> int:
    query = (
        select(Target, Kpi.key)
        .join(Kpi, col(Kpi.id) == Target.kpi_id)
        .order_by(col(Kpi.key), col(Target.period))
    )
    rows = (
        [
            key,
            t.period,
            _plain(t.value) if t.value is not None else f"{_plain(t.min_value)}-{_plain(t.max_value)}",
        ]
        for t, key in session.exec(query).all()
    )
    return _write(out, TARGET_COLUMNS, rows)


def export_plan(session: Session, out: TextIO) -> int:
    """The plan as a YAML plan file; returns how many KPIs it holds."""
    from bot.plan.export import plan_document, plan_yaml

    out.write(plan_yaml(session))
    return len(plan_document(session).get("kpis", []))


def _write(out: TextIO, header: list[str], rows: Iterable[list[str]]) -> int:
    writer = csv.writer(out)
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
