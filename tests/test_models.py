"""The schema's own guarantees, on SQLite and PostgreSQL: keys, uniqueness, history, time zones."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.database import transaction
from bot.models import (
    Actual,
    AuditEvent,
    Department,
    Kpi,
    Post,
    PostKind,
    PostStatus,
    Source,
    Target,
)
from bot.reports.actuals import history, live_actual, record_actual
from tests.plans import count_kpi


def _plan(session: Session) -> Kpi:
    department = Department(key="sales", name_ja="営業部", name_en="Sales", channel_id="C0SALES")
    session.add(department)
    session.flush()
    kpi = count_kpi("new_approaches", department.id, name_ja="新規アプローチ数", name_en="New approaches")
    session.add(kpi)
    session.flush()
    return kpi


def test_kpi_keys_are_unique(engine: Engine) -> None:
    with transaction(engine) as session:
        kpi = _plan(session)
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(Kpi(**kpi.model_dump(exclude={"id"})))
    with transaction(engine) as session:
        assert len(session.exec(select(Kpi)).all()) == 1


def test_kpi_needs_an_existing_department(engine: Engine) -> None:
    with pytest.raises(IntegrityError), transaction(engine) as session:
        kpi = _plan(session)
        session.add(Kpi(**{**kpi.model_dump(exclude={"id"}), "key": "orphan", "department_id": 999}))


def test_one_live_actual_per_kpi_and_period(engine: Engine) -> None:
    with transaction(engine) as session:
        kpi = _plan(session)
        record_actual(
            session, kpi=kpi, period="2026-11", value=Decimal(80), reported_by="U1", source=Source.COMMAND
        )
    # Writing a second live row directly (bypassing record_actual) is refused by the database.
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(
            Actual(
                kpi_id=kpi.id, period="2026-11", value=Decimal(90), reported_by="U1", source=Source.COMMAND
            )
        )


def test_a_correction_supersedes_and_keeps_history(engine: Engine) -> None:
    with transaction(engine) as session:
        kpi = _plan(session)
        first = record_actual(
            session, kpi=kpi, period="2026-11", value=Decimal(80), reported_by="U1", source=Source.COMMAND
        )
    with transaction(engine) as session:
        second = record_actual(
            session,
            kpi=kpi,
            period="2026-11",
            value=Decimal("95.5"),
            reported_by="U2",
            source=Source.MODAL,
            note="CRM export was late",
        )
    assert not first.is_correction
    assert second.is_correction and second.changed
    with transaction(engine) as session:
        rows = history(session, kpi.id, "2026-11")
        assert [Decimal(r.value) for r in rows] == [Decimal(80), Decimal("95.5")]
        assert rows[0].superseded_at is not None and rows[0].superseded_by_id == rows[1].id
        live = live_actual(session, kpi.id, "2026-11")
        assert live is not None and live.id == rows[1].id and live.note == "CRM export was late"
        actions = session.exec(select(AuditEvent.action).order_by(col(AuditEvent.id))).all()
        assert actions == ["actual.reported", "actual.corrected"]


def test_timestamps_come_back_timezone_aware(engine: Engine) -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    reported = dt.datetime(2026, 11, 30, 9, 0, tzinfo=tokyo)
    with transaction(engine) as session:
        kpi = _plan(session)
        session.add(
            Actual(
                kpi_id=kpi.id,
                period="2026-11",
                value=Decimal(1),
                reported_by="U1",
                reported_at=reported,
                source=Source.CSV,
            )
        )
    with transaction(engine) as session:
        stored = session.exec(select(Actual)).one()
        assert stored.reported_at.tzinfo is not None
        assert stored.reported_at == reported  # same instant, now in UTC
        assert stored.reported_at.utcoffset() == dt.timedelta(0)


def test_naive_timestamps_are_refused(engine: Engine) -> None:
    with pytest.raises(Exception, match="naive datetime"), transaction(engine) as session:
        kpi = _plan(session)
        session.add(
            Actual(
                kpi_id=kpi.id,
                period="2026-11",
                value=Decimal(1),
                reported_by="U1",
                reported_at=dt.datetime(2026, 11, 30, 9, 0),
                source=Source.CSV,
            )
        )
        session.flush()


def test_one_post_per_department_kind_and_period(engine: Engine) -> None:
    def post(department_id: int, kind: PostKind, period: str) -> Post:
        return Post(department_id=department_id, kind=kind, period=period, status=PostStatus.CLAIMED)

    with transaction(engine) as session:
        kpi = _plan(session)
        session.add(post(kpi.department_id, PostKind.DIGEST, "2026-W48"))
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(post(kpi.department_id, PostKind.DIGEST, "2026-W48"))
    with transaction(engine) as session:
        # A different kind or period is a different post.
        session.add(post(kpi.department_id, PostKind.REMINDER, "2026-W48"))
        session.add(post(kpi.department_id, PostKind.DIGEST, "2026-W49"))
    with transaction(engine) as session:
        assert len(session.exec(select(Post)).all()) == 3


def test_a_target_is_a_value_or_a_range(engine: Engine) -> None:
    with transaction(engine) as session:
        kpi = _plan(session)
        session.add(Target(kpi_id=kpi.id, period="*", min_value=Decimal(15), max_value=Decimal(20)))
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(
            Target(
                kpi_id=kpi.id, period="2026-11", value=Decimal(1), min_value=Decimal(1), max_value=Decimal(2)
            )
        )
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(Target(kpi_id=kpi.id, period="2026-12", min_value=Decimal(20), max_value=Decimal(15)))


def test_enum_columns_refuse_unknown_values(engine: Engine) -> None:
    with transaction(engine) as session:
        _plan(session)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.exec_driver_sql("UPDATE kpi SET direction = 'sideways'")
