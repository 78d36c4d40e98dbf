"""The floor for the digest and the alert scan: one hand-written SQL aggregate query.

For every KPI of every department it returns what the digest (or the scan) shows as numbers:
the live value of each period in the window (the reviewed or current period and the ones
before it) and the target. One statement, one row per KPI, no ORM, nothing rendered: as
little as any implementation could do to produce those numbers.

The generated plans (bench/generate.py) give every KPI one default target (period `*`),
so the floor joins that one; the check in `verify_*` proves the numbers are the same.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.models import Cadence
from bot.scorecard import current_period, reviewed_period

# kpi id -> (department id, target, values oldest first)
Window = dict[int, tuple[int, Decimal | None, list[Decimal | None]]]


def window_keys(day: dt.date, length: int, current: bool) -> list[tuple[str, str]]:
    """(week key, month key) for each position of the window, oldest first."""
    period_for = current_period if current else reviewed_period
    weeks = period_for(Cadence.WEEKLY, day).last(length)
    months = period_for(Cadence.MONTHLY, day).last(length)
    return [(week.key, month.key) for week, month in zip(weeks, months, strict=True)]


def aggregate_query(day: dt.date, length: int, current: bool) -> tuple[sa.TextClause, dict[str, str]]:
    keys = window_keys(day, length, current)
    params: dict[str, str] = {}
    columns = []
    for index, (week, month) in enumerate(keys):
        params[f"w{index}"], params[f"m{index}"] = week, month
        # Week and month keys never collide, and a KPI has one cadence: the pair picks its period.
        columns.append(f"MAX(CASE WHEN a.period IN (:w{index}, :m{index}) THEN a.value END) AS v{index}")
    period_list = ", ".join(f":w{i}, :m{i}" for i in range(len(keys)))
    sql = f"""
        SELECT k.department_id, k.id, t.value AS target, {", ".join(columns)}
        FROM kpi k
        LEFT JOIN target t ON t.kpi_id = k.id AND t.period = '*'
        LEFT JOIN actual a ON a.kpi_id = k.id AND a.superseded_at IS NULL AND a.period IN ({period_list})
        GROUP BY k.department_id, k.id, k.position, t.value
        ORDER BY k.department_id, k.position, k.id
    """
    return sa.text(sql), params


def run_floor(engine: Engine, day: dt.date, length: int, current: bool) -> Window:
    query, params = aggregate_query(day, length, current)
    with engine.connect() as connection:
        rows = connection.execute(query, params).all()
    return {row[1]: (row[0], _decimal(row[2]), [_decimal(value) for value in row[3:]]) for row in rows}


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))
