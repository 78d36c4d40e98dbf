"""What saving reports costs, in statements (counts, never times), and that a batch stores
exactly what the same values saved one at a time would: rows, history, audit events, alerts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bench.common import counting_statements
from bot.clock import set_clock
from bot.database import transaction
from bot.models import Actual, Alert, AuditEvent, Cadence, Kpi, Source
from bot.reports.batch import Sender, Stored, ingest
from bot.reports.rows import Row
from bot.reports.service import CheckedReport, report, save_reports

NOW = dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC)  # Monday 10:00 in Tokyo
SENDER = Sender(reported_by="source:perf", source=Source.API, source_name="perf")


@pytest.fixture
def plan(example_plan: Engine) -> Iterator[Engine]:
    set_clock(lambda: NOW)
    yield example_plan


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The statements sent, but the alert rows' own writes: one per alert that moves."""
    with counting_statements(engine) as seen:
        yield seen
    seen[:] = [
        statement for statement in seen if not statement.startswith(("INSERT INTO alert ", "UPDATE alert "))
    ]


def monthly_keys(engine: Engine) -> list[str]:
    with Session(engine) as session:
        kpis = session.exec(
            select(Kpi)
            .where(col(Kpi.formula).is_(None), Kpi.cadence == Cadence.MONTHLY)
            .order_by(col(Kpi.id))
        ).all()
        return [kpi.key for kpi in kpis]


def months(count: int) -> list[str]:
    """2026-11 (in progress) and the months before it, newest first."""
    result, year, month = [], 2026, 11
    for _ in range(count):
        result.append(f"{year}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return result


def rows_for(keys: list[str], periods: list[str], value: str = "100") -> list[Row]:
    return [Row(kpi=key, value=value, period=period) for period in periods for key in keys]


def stored(engine: Engine, rows: list[Row]) -> Stored:
    with transaction(engine) as session:
        result = ingest(session, rows, sender=SENDER)
    assert isinstance(result, Stored), result
    return result


def test_a_batch_costs_the_same_statements_whatever_its_size(plan: Engine) -> None:
    keys = monthly_keys(plan)
    with statements(plan) as small:
        assert len(stored(plan, rows_for(keys, months(2))).saved) == 2 * len(keys)
    with statements(plan) as large:
        assert len(stored(plan, rows_for(keys, months(20)[2:])).saved) == 18 * len(keys)
    assert len(large) == len(small)
    # Corrections of every value: the supersede adds its statements once, not once per row.
    with statements(plan) as corrections:
        result = stored(plan, rows_for(keys, months(20)[2:], value="90"))
    assert result.corrected == 18 * len(keys)
    assert len(corrections) <= len(small) + 3


def test_one_report_reads_only_its_own_kpi(plan: Engine) -> None:
    """The alert check after a report scores the reported KPI, not its department's scorecard."""
    loaded: list[str] = []

    def on_load(target: Kpi, context: object) -> None:
        loaded.append(target.key)

    sa.event.listen(Kpi, "load", on_load)
    try:
        with statements(plan) as seen, transaction(plan) as session:
            reported = report(session, text="mqls 150", user_id="U0MKT1", is_admin=lambda: False)
    finally:
        sa.event.remove(Kpi, "load", on_load)
    assert reported.recorded.actual.value == Decimal(150)
    assert set(loaded) <= {"mqls", *derived_from(plan, "mqls")}
    assert len(seen) <= 18


def derived_from(engine: Engine, key: str) -> set[str]:
    with Session(engine) as session:
        formulas = session.exec(select(Kpi).where(col(Kpi.formula).is_not(None))).all()
        return {kpi.key for kpi in formulas if key in (kpi.formula or "")}


def snapshot(session: Session) -> dict[str, Any]:
    """What the database holds about reports, without ids and clocks."""
    kpis = {kpi.id: kpi.key for kpi in session.exec(select(Kpi)).all()}
    actuals = session.exec(
        select(Actual).order_by(col(Actual.kpi_id), col(Actual.period), col(Actual.id))
    ).all()
    by_id = {actual.id: actual for actual in actuals}

    def successor(actual: Actual) -> Decimal | None:
        after = by_id.get(actual.superseded_by_id)
        return None if after is None else Decimal(after.value)

    audit = session.exec(select(AuditEvent).where(AuditEvent.entity == "actual")).all()
    alerts = session.exec(select(Alert)).all()
    return {
        "actuals": [
            (
                kpis[a.kpi_id],
                a.period,
                Decimal(a.value),
                a.reported_by,
                a.source,
                a.superseded_at is not None,
                successor(a),
            )
            for a in actuals
        ],
        "audit": sorted(
            (e.actor, e.action, e.source, tuple(sorted((k, str(v)) for k, v in e.details.items())))
            for e in audit
        ),
        "alerts": sorted(
            (kpis[a.kpi_id], a.period, a.severity, a.status, a.reason, str(a.value), str(a.achievement_pct))
            for a in alerts
        ),
    }


def test_a_batch_stores_what_the_same_values_one_at_a_time_would(plan: Engine) -> None:
    keys = monthly_keys(plan)
    # Values already there: some will be corrected, some sent again unchanged.
    stored(plan, rows_for(keys[:6], months(4), value="100"))
    batch = [
        *rows_for(keys[:3], months(4), value="100"),  # unchanged
        *rows_for(keys[3:6], months(4), value="1"),  # corrections, far below target: alerts
        *rows_for(keys[6:], months(4), value="1"),  # new, far below target
        *rows_for(keys[6:], months(8)[4:], value="95"),  # new, older
    ]
    with Session(plan) as session:
        ingest(session, batch, sender=SENDER)
        session.flush()
        together = snapshot(session)
        session.rollback()
    with Session(plan) as session:
        checked_once = []
        for row in batch:
            result = ingest(session, [row], sender=SENDER)
            assert isinstance(result, Stored)
            checked_once += result.saved
        session.flush()
        one_by_one = snapshot(session)
        session.rollback()
    assert together["actuals"] == one_by_one["actuals"]
    assert together["audit"] == one_by_one["audit"]
    assert together["alerts"] == one_by_one["alerts"]
    assert any(alert[3] == "open" for alert in together["alerts"])
    assert len(checked_once) == len(batch) - 3 * 4


def test_a_slot_sent_twice_in_one_save_is_stored_twice(plan: Engine) -> None:
    """Two reports of one KPI and period in one call: the second supersedes the first, as two
    reports one after the other would (the form and the API never send that; save_reports allows it)."""
    with transaction(plan) as session:
        checked = ingest(session, [Row(kpi="mqls", value="150", period="2026-10")], sender=SENDER)
        assert isinstance(checked, Stored)
        first = checked.saved[0]
        again = [
            CheckedReport(first.kpi, first.department, first.period, Decimal(160)),
            CheckedReport(first.kpi, first.department, first.period, Decimal(170)),
        ]
        result = save_reports(session, again, user_id="U0MKT1", source=Source.COMMAND)
    assert [item.recorded.actual.value for item in result.saved] == [Decimal(160), Decimal(170)]
    with Session(plan) as session:
        rows = session.exec(select(Actual).where(Actual.period == "2026-10").order_by(col(Actual.id))).all()
    assert [(Decimal(row.value), row.superseded_at is None) for row in rows] == [
        (Decimal(150), False),
        (Decimal(160), False),
        (Decimal(170), True),
    ]
