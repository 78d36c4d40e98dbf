"""Digests and alert scans built for many departments at once say what one department's build
says, with statements that do not grow with the number of departments (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import partial
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bench.common import counting_statements
from bench.generate import generate_division
from bot.alerts import flows as alert_flows
from bot.alerts import service as alerts
from bot.clock import set_clock
from bot.database import transaction
from bot.demo import prepare_demo
from bot.digests.service import build_digest, build_digests, goal_progress
from bot.models import (
    Actual,
    Alert,
    Countermeasure,
    CountermeasureStatus,
    Department,
    Kpi,
    Post,
    PostKind,
    PostStatus,
    Source,
)
from bot.reports.actuals import record_actual

DAY = dt.date(2026, 11, 30)


def departments(session: Session) -> list[Department]:
    found = session.exec(select(Department).order_by(col(Department.id))).all()
    return [department for department in found if not department.is_division]


def add_countermeasures(session: Session) -> None:
    """Open countermeasures in two departments, dated and undated (their order is the digest's)."""
    kpis = session.exec(select(Kpi).order_by(col(Kpi.department_id), col(Kpi.id))).all()
    first_of: dict[int, Kpi] = {}
    for kpi in kpis:
        first_of.setdefault(kpi.department_id, kpi)
    for n, kpi in enumerate(list(first_of.values())[:2]):
        for due in (None, DAY + dt.timedelta(days=7 - n), DAY + dt.timedelta(days=3)):
            session.add(
                Countermeasure(
                    kpi_id=kpi.id,
                    text=f"plan {n} {due}",
                    due_date=due,
                    status=CountermeasureStatus.DOING if due else CountermeasureStatus.PLANNED,
                    logged_by="U1",
                )  # fmt: skip
            )
    session.add(
        Countermeasure(kpi_id=kpis[0].id, text="done", status=CountermeasureStatus.DONE, logged_by="U1")
    )


def test_the_batched_digests_equal_one_department_builds(engine: Engine) -> None:
    prepare_demo(engine, today=DAY, locale="en")
    with transaction(engine) as session:
        add_countermeasures(session)
    with transaction(engine) as session:
        found = departments(session)
        goal = goal_progress(session, DAY)
        batched = build_digests(session, found, DAY, goal)
        alone = [build_digest(session, department, DAY, goal) for department in found]
    assert len(batched) == len(found) >= 4
    assert [digest.department.key for digest in batched] == [department.key for department in found]
    assert batched == alone
    # What is compared is not empty: values, open countermeasures and KFS are there to differ.
    assert sum(len(digest.countermeasures) for digest in batched) == 6
    assert all(digest.rows and digest.factors for digest in batched)
    assert any(row.score.actual is not None for digest in batched for row in digest.rows)


def test_the_batched_marks_tell_each_department_its_own_corrections(engine: Engine) -> None:
    """A correction is marked against the department's own last digest: the department with a
    digest before it shows what that digest showed; the one without shows no correction."""
    prepare_demo(engine, today=DAY, locale="en")
    with transaction(engine) as session:
        found = departments(session)
        first, second = found[0], found[1]
        rows = {d.department.id: d.rows for d in build_digests(session, [first, second], DAY, None)}
        latest = max(a.reported_at for a in session.exec(select(Actual)).all())
        digest_at = latest + dt.timedelta(minutes=1)
        session.add(
            Post(
                department_id=first.id,
                kind=PostKind.DIGEST,
                period="2026-W48",
                status=PostStatus.SENT,
                sent_at=digest_at,
            )  # fmt: skip
        )
    set_clock(lambda: digest_at + dt.timedelta(hours=1))
    was = {}
    with transaction(engine) as session:
        for department in (first, second):
            reviewed = next(row for row in rows[department.id] if row.score.actual is not None)
            was[department.id] = (reviewed.kpi.id, Decimal(reviewed.score.actual))
            record_actual(session, kpi=reviewed.kpi, period=reviewed.period.key, reported_by="U1",
                          value=Decimal(reviewed.score.actual) + 1, source=Source.COMMAND)  # fmt: skip
    with transaction(engine) as session:
        batched = build_digests(session, [first, second], DAY, None)
        alone = [build_digest(session, department, DAY, None) for department in (first, second)]
    assert batched == alone
    marked, unmarked = batched
    kpi_id, shown = was[first.id]
    assert marked.marks[kpi_id].corrected_from == shown
    assert not any(mark.corrected for mark in unmarked.marks.values())


def test_the_batched_scan_equals_one_department_scans(engine: Engine) -> None:
    prepare_demo(engine, today=DAY, locale="ja")
    with transaction(engine) as session:
        found = departments(session)
        planned = [(department, DAY) for department in found]
        batched = alerts.scan_departments(session, planned)
        alone = [alerts.scan_department(session, department, DAY) for department in found]
    assert batched == alone and any(batched)


def test_the_batched_check_stores_what_one_department_checks_store(engine: Engine) -> None:
    prepare_demo(engine, today=DAY, locale="ja")

    def stored() -> list[tuple[int, str, str, str]]:
        with transaction(engine) as session:
            rows = session.exec(select(Alert).order_by(col(Alert.kpi_id), col(Alert.period))).all()
            return [(a.kpi_id, a.period, a.severity.value, a.status.value) for a in rows]

    with transaction(engine) as session:
        found = departments(session)
    for department in found:
        with transaction(engine) as session:
            alerts.check_department(session, department, DAY)
    one_by_one = stored()
    with transaction(engine) as session:
        session.exec(select(Alert)).all()
        for alert in session.exec(select(Alert)).all():
            session.delete(alert)
    with transaction(engine) as session:
        outcomes = alerts.check_departments(session, [(department, DAY) for department in found])
    assert not [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert stored() == one_by_one and one_by_one


def test_a_scan_whose_batch_fails_scans_one_department_at_a_time(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_demo(engine, today=DAY, locale="ja")
    now = dt.datetime.combine(DAY, dt.time(10), ZoneInfo("Asia/Tokyo"))
    expected = alert_flows.scan_and_post(engine, None, None, now, dry_run=True)  # type: ignore[arg-type]

    def broken(*args: object) -> None:
        raise RuntimeError("the batch read failed")

    monkeypatch.setattr(alert_flows, "check_departments", broken)
    fallback = alert_flows.scan_and_post(engine, None, None, now, dry_run=True)  # type: ignore[arg-type]
    assert fallback.failed == [] and fallback.changes == expected.changes and expected.changes


def statements_of(engine: Engine, run: object, *, reads_only: bool = False) -> int:
    with counting_statements(engine) as statements:
        run()  # type: ignore[operator]
    return len([s for s in statements if not reads_only or s.lstrip().upper().startswith("SELECT")])


def test_statements_per_run_do_not_grow_with_departments(engine: Engine) -> None:
    generate_division(engine, departments=8, weeks=8, today=DAY)
    with transaction(engine) as session:
        every = departments(session)
    counts = {}
    for size in (2, 8):
        found = every[:size]
        with transaction(engine) as session:
            planned = [(department, DAY) for department in found]
            digests = statements_of(engine, partial(build_digests, session, found, DAY, None))
            scan = statements_of(engine, partial(alerts.scan_departments, session, planned))
            check = statements_of(
                engine, partial(alerts.check_departments, session, planned), reads_only=True
            )
            session.rollback()
        counts[size] = (digests, scan, check)
    # One set of reads per run, the provenance marks' included (bot/digests/provenance.py: they
    # were two statements per department); a check's writes are its alerts' (and a savepoint per
    # department).
    assert counts[2] == counts[8], counts
    assert counts[8][0] <= 8 and counts[8][1] <= 5, counts
