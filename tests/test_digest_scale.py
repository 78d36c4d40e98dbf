"""Digests at division scale: the number of SQL statements per department is constant —
it grows neither with the length of the history nor with the number of departments."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bench.common import counting_statements
from bench.generate import generate_division
from bot.digests.service import build_digest, goal_progress
from bot.models import Department
from handlers.digests.messages import digest_messages

DAY = dt.date(2026, 11, 30)


def statements_per_department(engine: Engine) -> list[int]:
    with Session(engine) as session:
        departments = session.exec(select(Department).order_by(col(Department.id))).all()
        goal = goal_progress(session, DAY)
        counts = []
        for department in departments:
            with counting_statements(engine) as statements:
                digest = build_digest(session, department, DAY, goal)
            assert len(digest.rows) == 20
            digest_messages(digest, department.locale)  # rendering must not query either
            counts.append(len(statements))
        return counts


def test_statements_do_not_grow_with_history_or_departments(engine: Engine) -> None:
    generate_division(engine, departments=2, weeks=8, today=DAY)
    short = statements_per_department(engine)
    with engine.begin() as connection:
        for table in ("actual", "target", "kpi", "department"):
            connection.execute(sa.text(f"DELETE FROM {table}"))
    generate_division(engine, departments=5, weeks=104, today=DAY)
    long = statements_per_department(engine)
    # One count for every department, whatever its history or the division's size.
    assert len(set(short)) == 1 and set(long) == set(short), (short, long)
    assert short[0] <= 6
