"""CSV export: live actuals as plain numbers, history on request, and targets that re-import
unchanged. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bot.clock import set_clock
from bot.database import transaction
from bot.export import ACTUAL_COLUMNS, export_actuals, export_plan, export_targets
from bot.models import Department, FunnelStage, Goal, Kpi, Source, SuccessFactor, Target
from bot.plan.edit import retire_kpi
from bot.plan.specs import PlanInvalid
from bot.reports.actuals import record_actual
from tests.plans import EXAMPLE_PLAN, import_plan, outcomes

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOKYO = ZoneInfo("Asia/Tokyo")


def record(engine: Engine, kpi_key: str, period: str, value: str, note: str | None = None) -> None:
    with transaction(engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == kpi_key)).one()
        record_actual(
            session,
            kpi=kpi,
            period=period,
            value=Decimal(value),
            reported_by="U0MKT1",
            source=Source.COMMAND,
            note=note,
        )


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def exported_actuals(engine: Engine, *, history: bool = False) -> tuple[int, list[dict[str, str]]]:
    out = io.StringIO()
    with Session(engine) as session:
        count = export_actuals(session, out, include_history=history)
    return count, read_csv(out.getvalue())


def with_actuals(engine: Engine) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    record(engine, "mqls", "2026-10", "1200", note="from CRM")
    record(engine, "mqls", "2026-10", "1250", note="CRM re-sync")  # a correction
    record(engine, "mqls", "2026-09", "180")
    record(engine, "close_rate", "2026-10", "17.5")
    record(engine, "cost_per_lead", "2026-10", "9800")


def test_export_writes_live_actuals_as_plain_numbers(engine: Engine) -> None:
    with_actuals(engine)

    count, rows = exported_actuals(engine)

    assert count == len(rows) == 4
    assert [(r["department"], r["kpi"], r["period"], r["value"]) for r in rows] == [
        # Ordered by department key, then the plan's KPI order, then period.
        ("marketing", "mqls", "2026-09", "180"),
        ("marketing", "mqls", "2026-10", "1250"),
        ("marketing", "cost_per_lead", "2026-10", "9800"),
        ("sales", "close_rate", "2026-10", "17.5"),
    ]
    live = rows[1]
    assert (live["unit"], live["reported_by"], live["source"], live["note"]) == (
        "count",
        "U0MKT1",
        "command",
        "CRM re-sync",
    )
    assert dt.datetime.fromisoformat(live["reported_at"]).tzinfo is not None
    assert all(r["superseded_at"] == "" for r in rows)


def test_export_history_includes_the_superseded_value(engine: Engine) -> None:
    with_actuals(engine)

    count, rows = exported_actuals(engine, history=True)

    assert count == 5
    october = [r for r in rows if (r["kpi"], r["period"]) == ("mqls", "2026-10")]
    # Oldest first; only the replaced row says when it was superseded.
    assert [(r["value"], r["note"]) for r in october] == [("1200", "from CRM"), ("1250", "CRM re-sync")]
    assert dt.datetime.fromisoformat(october[0]["superseded_at"]) >= dt.datetime.fromisoformat(
        october[0]["reported_at"]
    )
    assert october[1]["superseded_at"] == ""


def test_export_of_an_empty_database_is_just_the_header(engine: Engine) -> None:
    out = io.StringIO()
    with Session(engine) as session:
        assert export_actuals(session, out) == 0
    assert out.getvalue().splitlines() == [",".join(ACTUAL_COLUMNS)]


def test_exported_targets_reimport_unchanged(engine: Engine, tmp_path: Path) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    # Values that a careless formatter would break: decimals, a negative, decimal ranges.
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "targets:\n"
        "  - {kpi: close_rate, period: 2026-11, target: 16.25-21.5}\n"
        "  - {kpi: nps, period: 2026-11, target: -5}\n"
        "  - {kpi: retention_rate, period: 2026-11, target: 96.125}\n"
        "  - {kpi: nps, period: 2026-12, target: {min: -10, max: -2.5}}\n",
        encoding="utf-8",
    )
    import_plan(engine, extra)
    exported = tmp_path / "targets.csv"
    with Session(engine) as session, exported.open("w", newline="", encoding="utf-8") as out:
        count = export_targets(session, out)

    lines = exported.read_text(encoding="utf-8").splitlines()
    assert count == len(lines) - 1 == 22
    assert lines[0] == "kpi,period,target"
    for line in (
        "close_rate,*,15-20",
        "close_rate,2026-11,16.25-21.5",
        "average_deal_size,*,3000000",
        "revenue,*,84000000",
        "new_approaches,2026-12,80",
        "nps,2026-11,-5",
        "nps,2026-12,-10--2.5",
        "retention_rate,2026-11,96.125",
    ):
        assert line in lines

    assert outcomes(import_plan(engine, exported)) == {"target": {"unchanged": 22}}


# -- the plan as YAML ------------------------------------------------------------------------------


def plan_text(engine: Engine) -> str:
    with transaction(engine) as session:
        out = io.StringIO()
        export_plan(session, out)
        return out.getvalue()


def stored_plan(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every plan row as stored, without ids and timestamps: what a round trip must keep. A
    retirement is kept as its day in Tokyo (the plan file says the day, not the moment)."""
    skip = {"id", "created_at", "updated_at", "department_id", "success_factor_id", "goal_id", "kpi_id"}
    tables: dict[str, list[tuple[object, ...]]] = {}
    with transaction(engine) as session:
        for model in (Department, Goal, SuccessFactor, Kpi, Target, FunnelStage):
            rows = []
            for row in session.exec(select(model)).all():
                values = row.model_dump()
                if values.get("retired_at") is not None:
                    values["retired_at"] = values["retired_at"].astimezone(TOKYO).date()
                rows.append(tuple(str(v) for k, v in sorted(values.items()) if k not in skip))
            tables[model.__tablename__] = sorted(rows)
    return tables


def test_the_plan_exported_imports_back_unchanged(engine: Engine, tmp_path: Path) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    text = plan_text(engine)
    assert text.startswith("# The plan as kpibot holds it")
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")

    again = import_plan(engine, path)  # into the database it came from: nothing to do
    assert not again.changed, outcomes(again)
    assert plan_text(engine) == text


def test_the_plan_exported_rebuilds_the_same_plan_in_an_empty_database(
    engine: Engine, tmp_path: Path
) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    with transaction(engine) as session:  # a plan changed since the file: a range, an owner, a threshold
        kpi = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        kpi.owner_user_id, kpi.amber_pct = "U0NEW", Decimal("85.5")
        session.add(
            Target(kpi_id=kpi.id or 0, period="2027-01", min_value=Decimal(90), max_value=Decimal(110))
        )
    retire(engine, "website_visits", dt.datetime(2026, 11, 30, 14, 5, tzinfo=TOKYO))  # and a KPI retired
    before = stored_plan(engine)
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text(engine), encoding="utf-8")
    with transaction(engine) as session:  # an empty database (goal → KPI closes a cycle: cut it first)
        for goal in session.exec(select(Goal)).all():
            goal.kpi_id = None
            session.add(goal)
        session.flush()
        for model in (FunnelStage, Target, Kpi, SuccessFactor, Goal, Department):
            for row in session.exec(select(model)).all():
                session.delete(row)
            session.flush()

    import_plan(engine, path)
    assert stored_plan(engine) == before


# -- retired KPIs ----------------------------------------------------------------------------------


def retire(engine: Engine, key: str, at: dt.datetime) -> None:
    """`/kpi retire <key>` by an admin at `at`."""
    set_clock(lambda: at.astimezone(dt.UTC))
    try:
        with transaction(engine) as session:
            retire_kpi(session, text=key, user_id="U0ADMIN", is_admin=lambda: True)
    finally:
        set_clock(None)


def retired_at(engine: Engine, key: str) -> dt.datetime | None:
    with transaction(engine) as session:
        return session.exec(select(Kpi).where(Kpi.key == key)).one().retired_at


def test_a_retired_kpi_is_exported_with_its_day_and_imports_back_retired_with_its_history(
    engine: Engine, tmp_path: Path
) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    record(engine, "website_visits", "2026-W47", "5200")
    # Retired at 00:30 on 1 December in Tokyo: still 30 November in UTC, 1 December in the file.
    retire(engine, "website_visits", dt.datetime(2026, 12, 1, 0, 30, tzinfo=TOKYO))
    stored = retired_at(engine, "website_visits")
    assert stored is not None

    text = plan_text(engine)
    entry = text[text.index("- key: website_visits") :].split("\n- key:")[0]
    assert "  retired: 2026-12-01" in entry.splitlines()
    assert text.count("retired:") == 1  # the KPIs in use say nothing
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")

    again = import_plan(engine, path)
    assert not again.changed, outcomes(again)
    assert retired_at(engine, "website_visits") == stored  # the moment kept, not the day's start
    assert plan_text(engine) == text
    # The plan file written before the KPI was retired does not bring it back.
    import_plan(engine, EXAMPLE_PLAN)
    assert retired_at(engine, "website_visits") == stored
    _, rows = exported_actuals(engine)
    assert [(r["kpi"], r["period"], r["value"]) for r in rows] == [("website_visits", "2026-W47", "5200")]


def test_retired_in_a_plan_file_retires_the_kpi_from_that_day_and_keeps_its_history(
    engine: Engine, tmp_path: Path
) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    record(engine, "mqls", "2026-10", "180")
    text = plan_text(engine).replace(
        "- key: cost_per_lead\n", "- key: cost_per_lead\n  retired: 2026-11-30\n"
    )
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")

    assert outcomes(import_plan(engine, path))["kpi"]["updated"] == 1  # that KPI, nothing else
    assert retired_at(engine, "cost_per_lead") == dt.datetime(2026, 11, 30, tzinfo=TOKYO)
    assert retired_at(engine, "mqls") is None
    assert "retired: 2026-11-30" in plan_text(engine)
    _, rows = exported_actuals(engine)
    assert [(r["kpi"], r["value"]) for r in rows] == [("mqls", "180")]


def test_a_retired_that_is_not_a_day_is_refused_at_its_line(engine: Engine, tmp_path: Path) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text(engine).replace("- key: nps\n", "- key: nps\n  retired: someday\n"), "utf-8")
    with pytest.raises(PlanInvalid) as raised:
        import_plan(engine, path)
    (problem,) = raised.value.problems
    assert problem.field == "retired"
    assert "someday" in problem.describe("en") and "2026-11-30" in problem.describe("en")
    assert "日付ではありません" in problem.describe("ja")
    assert retired_at(engine, "nps") is None  # nothing written
