"""`kpibot plan check FILE` and the same warnings at `kpibot import-plan`, in-process on SQLite and
PostgreSQL: warnings never block (exit 0, the plan imported), problems still do (exit 1, nothing
written); history in the database makes a target unrealistic, with the figures."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, Engine
from sqlmodel import Session, select

from bot.database import transaction
from bot.models import Kpi, Source
from bot.reports.actuals import record_actual
from handlers.cli import main
from tests.plans import EXAMPLE_PLAN, import_plan

PLAN = """\
goal:
  key: revenue
  name: Revenue
  target: 1000
  unit: JPY
  fiscal_year: 2026
success_factors:
  - key: leads
departments:
  - key: marketing
  - key: inside_sales
kpis:
  - key: mqls
    department: marketing
    success_factor: leads
    name: MQLs
    owner: U0MKT1
    unit: count
    direction: higher
    cadence: monthly
    kind: process
    target: 200
  - key: sql_conversion
    department: marketing
    success_factor: leads
    name: SQL conversion
    owner: U0MKT1
    unit: "%"
    direction: higher
    cadence: monthly
    kind: result
    formula: sqls / mqls * 100
    target: 30%
  - key: calls
    department: inside_sales
    success_factor: leads
    name: Calls
    owner: U0IS1
    unit: count
    direction: higher
    cadence: monthly
    kind: process
    target: 400
  - key: sqls
    department: inside_sales
    success_factor: leads
    name: SQLs
    unit: count
    direction: higher
    cadence: monthly
    kind: result
    target: 90
"""


@pytest.fixture
def db(
    engine: Engine, database_url: URL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Engine]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KPIBOT_LOCALE", raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    yield engine


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plan_file(tmp_path: Path, text: str = PLAN) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def kpi_count(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Kpi)).all())


def test_plan_check_lists_the_warnings_and_writes_nothing(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "plan", "check", str(plan_file(tmp_path)), "--locale", "en")
    assert (code, err) == (0, "")
    assert "2 warning(s) (they never block an import)" in out
    assert "line 44, `owner`: 'sqls' has no owner" in out
    # 200 MQLs × 30 % = 60 SQLs, not 90.
    assert "line 33, `target`: the targets do not add up" in out and "mqls 200, sqls 90" in out
    assert kpi_count(db) == 0


def test_plan_check_in_japanese(db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "check", str(plan_file(tmp_path)))
    assert code == 0
    assert (
        "警告 2件(インポートは止めません)" in out and "担当者がいません" in out and "辻褄が合いません" in out
    )


def test_a_plan_without_warnings_says_so(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed = PLAN.replace("    target: 90\n", "    target: 60\n").replace(
        "    name: SQLs\n", "    name: SQLs\n    owner: U0IS1\n"
    )
    code, out, _ = run(capsys, "plan", "check", str(plan_file(tmp_path, fixed)), "--locale", "en")
    assert code == 0 and "passes every check" in out


def test_import_prints_the_same_warnings_and_imports(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "import-plan", str(plan_file(tmp_path)), "--locale", "en")
    assert (code, err) == (0, "")
    assert "Imported" in out and "2 warning(s)" in out and "'sqls' has no owner" in out
    assert kpi_count(db) == 4


def test_problems_still_block_and_warnings_are_not_shown(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = PLAN.replace(
        "    direction: higher\n    cadence: monthly\n    kind: result\n    target: 90",
        "    direction: sideways\n    cadence: monthly\n    kind: result\n    target: 90",
    )
    for command in (("plan", "check"), ("import-plan",)):
        code, out, err = run(capsys, *command, str(plan_file(tmp_path, broken)), "--locale", "en")
        assert code == 1
        assert "nothing was imported" in err and "unknown direction 'sideways'" in err
        assert "warning" not in out
    assert kpi_count(db) == 0


def test_history_in_the_database_makes_a_target_unrealistic(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_plan(db, EXAMPLE_PLAN)
    with transaction(db) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        for month, value in zip(range(5, 11), (70, 72, 75, 80, 78, 74), strict=True):
            record_actual(
                session,
                kpi=kpi,
                period=f"2026-{month:02d}",
                value=Decimal(value),
                reported_by="U0TEST",
                source=Source.CSV,
            )
    raised = EXAMPLE_PLAN.read_text(encoding="utf-8").replace(
        "    kind: process\n    target: 100\n", "    kind: process\n    target: 150\n"
    )
    assert raised != EXAMPLE_PLAN.read_text(encoding="utf-8")
    code, out, _ = run(capsys, "plan", "check", str(plan_file(tmp_path, raised)), "--locale", "en")
    assert code == 0
    [line] = [line for line in out.splitlines() if "new_approaches" in line]
    assert (
        "the target 150 of 'new_approaches' is 88% above its best period (80 in 2026-08, of the last 6)"
        in line
    )
    # The example plan's own target, 100, is within 30 % of the best (80 × 1.3 = 104): realistic.
    code, out, _ = run(capsys, "plan", "check", str(EXAMPLE_PLAN), "--locale", "en")
    assert "new_approaches" not in out


def test_plan_check_of_a_missing_file_is_one_line(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "plan", "check", str(tmp_path / "nope.yaml"), "--locale", "en")
    assert code != 0 and "no such file" in err and "Traceback" not in err
