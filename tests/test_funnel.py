"""The funnel across departments: declared in the plan (`funnel:` stages of departments' KPIs, with a
planned conversion or one derived from targets), refused with the line when it names an unknown KPI,
a stage twice (a cycle) or mixed cadences; the division digest shows each stage, the conversion
against plan, and marks the hand-off that leaks most. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bot.database import transaction
from bot.digests.service import build_division_summary
from bot.funnel.service import build_funnel
from bot.models import Department, FunnelStage, Kpi, Source
from bot.plan.service import load_plan
from bot.plan.specs import PlanInvalid
from bot.reports.actuals import record_actual
from handlers.digests.messages import as_text, division_messages
from tests.plans import EXAMPLE_PLAN, import_plan

FUNNEL = """\
funnel:
  - kpi: mqls
  - kpi: sqls
    conversion: 30%
  - kpi: new_approaches
    leak_below: 80
"""
REVIEW_DAY = dt.date(2026, 12, 7)  # reviews November


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "funnel.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def planned(engine: Engine, tmp_path: Path) -> Engine:
    import_plan(engine, EXAMPLE_PLAN)
    import_plan(engine, write(tmp_path, FUNNEL))
    return engine


def report(engine: Engine, values: dict[str, str], period: str = "2026-11") -> None:
    with transaction(engine) as session:
        for key, value in values.items():
            kpi = session.exec(select(Kpi).where(Kpi.key == key)).one()
            record_actual(
                session, kpi=kpi, period=period, value=Decimal(value), reported_by="U0TEST", source=Source.CSV
            )


def test_the_funnel_is_stored_in_order_and_reimported_unchanged(planned: Engine, tmp_path: Path) -> None:
    with Session(planned) as session:
        stages = session.exec(
            select(FunnelStage.position, Kpi.key, FunnelStage.conversion_pct, FunnelStage.leak_pct)
            .join(Kpi, col(Kpi.id) == FunnelStage.kpi_id)
            .order_by(col(FunnelStage.position))
        ).all()
    assert [(p, k, c and Decimal(c), Decimal(leak)) for p, k, c, leak in stages] == [
        (0, "mqls", None, Decimal(90)),
        (1, "sqls", Decimal(30), Decimal(90)),
        (2, "new_approaches", None, Decimal(80)),
    ]
    again = import_plan(planned, write(tmp_path, FUNNEL))
    assert not again.changed


@pytest.mark.parametrize(
    ("text", "where", "code"),
    [
        ("funnel:\n  - kpi: mqls\n  - kpi: deals_won\n", "line 3", "unknown_kpi"),
        ("funnel:\n  - kpi: mqls\n  - kpi: sqls\n  - kpi: mqls\n", "line 4", "funnel_cycle"),
        ("funnel:\n  - kpi: mqls\n  - kpi: appointments\n", "line 3", "funnel_cadence"),
        ("funnel:\n  - kpi: mqls\n    conversion: 30%\n  - kpi: sqls\n", "line 3", "funnel_first_conversion"),
        ("funnel:\n  - kpi: mqls\n", "line 2", "funnel_too_short"),
    ],
)
def test_a_bad_funnel_is_refused_with_its_line(
    planned: Engine, tmp_path: Path, text: str, where: str, code: str
) -> None:
    with Session(planned) as session, pytest.raises(PlanInvalid) as refused:
        load_plan(write(tmp_path, text), session)
    [problem] = refused.value.problems
    assert (problem.where, problem.code) == (where, code)
    assert problem.describe("ja") and problem.describe("en")


def test_conversion_against_plan_and_the_leak(planned: Engine) -> None:
    # 200 MQLs → 40 SQLs (20 % against a planned 30 %: 67 % of plan, a leak);
    # 40 SQLs → 38 approaches (95 %; planned from targets 100 / 60 = 167 %: 57 % of plan, leaks most).
    report(planned, {"mqls": "200", "sqls": "40", "new_approaches": "38"})
    with Session(planned) as session:
        funnel = build_funnel(session, REVIEW_DAY)
    assert funnel is not None and funnel.period.key == "2026-11"
    first, second = funnel.hand_offs
    assert (first.actual_pct, first.planned_pct) == (Decimal(20), Decimal(30))
    assert first.leaking and second.leaking
    assert round(second.planned_pct or 0, 1) == Decimal("166.7")
    assert funnel.worst is second


def test_the_division_digest_shows_the_funnel_and_marks_the_leaking_hand_off(planned: Engine) -> None:
    report(planned, {"mqls": "200", "sqls": "40", "new_approaches": "70"})
    with Session(planned) as session:
        division = session.exec(select(Department).where(col(Department.is_division))).one()
        summary = build_division_summary(session, division, REVIEW_DAY)
    ja = as_text(division_messages(summary, "ja"))
    assert "ファネル" in ja and "MQL 数" in ja and "SQL 数" in ja
    assert ":twisted_rightwards_arrows: *ファネル* ・ 2026年11月" in ja
    assert "転換率 20%(計画 30%、計画比 67%)" in ja
    assert "最も漏れている引き継ぎ: マーケティング部 → インサイドセールス部" in ja
    en = as_text(division_messages(summary, "en"))
    assert "leaks most: Marketing → Inside Sales" in en
    assert ":twisted_rightwards_arrows: *Funnel* · Nov 2026" in en
    assert "↓ 20% converted (plan 30%, 67% of plan)" in en


def test_no_funnel_no_section(engine: Engine) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    with Session(engine) as session:
        division = session.exec(select(Department).where(col(Department.is_division))).one()
        summary = build_division_summary(session, division, REVIEW_DAY)
    assert summary.funnel is None
    assert "ファネル" not in as_text(division_messages(summary, "ja"))
