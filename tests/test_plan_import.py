"""Plan import: the example plan lands as written, re-imports change nothing, and a bad file is
refused with each problem at its line/row and field — leaving the database untouched.

Every test runs on SQLite and PostgreSQL (the `engine` fixture). Each bad file's problems, on the
parsed file alone, are tests/unit/test_plan_validation.py's.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from bot.models import Aggregation, Cadence, Department, Direction, Goal, Kpi, SuccessFactor, Target, Unit
from bot.plan.specs import Existing, PlanInvalid, Problem
from tests.plans import EXAMPLE_PLAN, import_plan, outcomes
from tests.unit.plan_files import (
    BAD_YAML,
    CSV_CASES,
    FIXTURES,
    MARK,
    SMALL,
    assert_describable,
    edited,
    existing_after,
    found,
    marked_line,
)

# ---------------------------------------------------------------- helpers


def import_invalid(engine: Engine, path: Path) -> list[Problem]:
    with pytest.raises(PlanInvalid) as raised:
        import_plan(engine, path)
    return raised.value.problems


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in SQLModel.metadata.sorted_tables
        }


def snapshot(engine: Engine, *, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, so "nothing was written" can be checked exactly."""
    with engine.connect() as connection:
        return {
            table.name: [
                tuple(row)
                for row in connection.execute(sa.select(table).order_by(*table.primary_key.columns))
            ]
            for table in SQLModel.metadata.sorted_tables
            if table.name not in skip
        }


def one(engine: Engine, model: type[Any], key: str) -> Any:
    with Session(engine) as session:
        return session.exec(select(model).where(model.key == key)).one()


def targets_of(
    engine: Engine, kpi_key: str
) -> dict[str, tuple[Decimal | None, Decimal | None, Decimal | None]]:
    """A KPI's targets by period, as (value, min, max)."""
    with Session(engine) as session:
        rows = session.exec(select(Target).join(Kpi).where(Kpi.key == kpi_key)).all()
        return {t.period: (t.value, t.min_value, t.max_value) for t in rows}


# ---------------------------------------------------------------- the example plan


def test_example_plan_creates_every_row(engine: Engine) -> None:
    result = import_plan(engine, EXAMPLE_PLAN)

    assert outcomes(result) == {
        "goal": {"created": 1},
        "department": {"created": 5},  # 4 departments + the division's channel
        "success_factor": {"created": 12},
        "kpi": {"created": 16},
        "target": {"created": 18},  # 16 KPI defaults + 2 period-specific
    }
    counts = table_counts(engine)
    assert {name: counts[name] for name in ("goal", "department", "success_factor", "kpi", "target")} == {
        "goal": 1,
        "department": 5,
        "success_factor": 12,
        "kpi": 16,
        "target": 18,
    }
    assert counts["actual"] == 0
    assert counts["audit_event"] == 1


def test_example_plan_values(engine: Engine) -> None:
    import_plan(engine, EXAMPLE_PLAN)

    goal = one(engine, Goal, "revenue_fy2026")
    assert goal.target_value == 1_000_000_000  # written as 10億
    assert (goal.unit, goal.fiscal_year, goal.name_ja) == (Unit.JPY, 2026, "年間売上 10 億円")

    marketing = one(engine, Department, "marketing")
    assert (marketing.name_ja, marketing.name_en) == ("マーケティング部", "Marketing")
    assert (marketing.channel_id, marketing.head_user_id) == ("C0MARKETING", "U0MKTHEAD")
    assert one(engine, Department, "customer_success").locale == "en"
    assert one(engine, Department, "division").is_division
    assert not marketing.is_division and not marketing.holiday_shift
    assert one(engine, Department, "sales").holiday_shift
    # The KGI is measured by a KPI the same file creates.
    assert goal.kpi_id == one(engine, Kpi, "revenue").id

    # Thresholds as written for a lower-is-better KPI; defaults for a higher-is-better one.
    cost = one(engine, Kpi, "cost_per_lead")
    assert (cost.direction, cost.amber_pct, cost.red_pct) == (Direction.LOWER, 110, 130)
    mqls = one(engine, Kpi, "mqls")
    assert (mqls.amber_pct, mqls.red_pct) == (90, 70)
    assert (mqls.name_ja, mqls.name_en, mqls.owner_user_id) == ("MQL 数", "MQLs", "U0MKT1")
    assert (mqls.cadence, mqls.aggregation) == (Cadence.MONTHLY, Aggregation.SUM)

    conversion = one(engine, Kpi, "sql_conversion")
    assert conversion.formula == "sqls / mqls * 100"
    assert (conversion.unit, conversion.aggregation) == (Unit.PERCENT, Aggregation.AVERAGE)

    # Each KPI hangs off its department and KFS, and each KFS off the one goal.
    factor = one(engine, SuccessFactor, "lead_nurturing")
    assert (mqls.department_id, mqls.success_factor_id) == (marketing.id, factor.id)
    assert factor.goal_id == goal.id

    assert targets_of(engine, "close_rate") == {"*": (None, 15, 20)}  # "15-20" is a range
    assert targets_of(engine, "retention_rate") == {"*": (95, None, None)}  # "95%"
    assert targets_of(engine, "average_deal_size") == {"*": (3_000_000, None, None)}  # "300万"
    assert targets_of(engine, "new_approaches") == {"*": (100, None, None), "2026-12": (80, None, None)}


# A YAML float went through float on its way in: 12345678901234.123456 was stored as
# 12345678901234.123 (and "updated" on every re-import), 99999999999999.999999 refused as 10^14.
@pytest.mark.parametrize("written", ["0.1", "12345678901234.123456", "99999999999999.999999", "-0.000001"])
def test_a_yaml_float_target_is_stored_exactly_as_written(
    engine: Engine, tmp_path: Path, written: str
) -> None:
    path = edited(
        tmp_path,
        SMALL,
        {
            "    thresholds: {amber: 110, red: 130}\n    target: 8000": (
                f"    thresholds: {{amber: 110.5, red: 130.000001}}\n    target: {written}"
            )
        },
    )
    import_plan(engine, path)

    assert targets_of(engine, "cost_per_lead") == {"*": (Decimal(written), None, None)}
    cost = one(engine, Kpi, "cost_per_lead")
    assert (cost.amber_pct, cost.red_pct) == (Decimal("110.5"), Decimal("130.000001"))
    before = snapshot(engine, skip=("audit_event",))
    assert outcomes(import_plan(engine, path))["target"] == {"unchanged": 6}
    assert snapshot(engine, skip=("audit_event",)) == before


def test_reimport_changes_nothing(engine: Engine) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    before = snapshot(engine)

    result = import_plan(engine, EXAMPLE_PLAN)

    assert not result.changed
    assert all(set(counter) == {"unchanged"} for counter in result.counts.values()), outcomes(result)
    assert outcomes(result)["kpi"] == {"unchanged": 16}
    # The goal too: linking it to the KPI that measures it is no change the second time.
    assert outcomes(result)["goal"] == {"unchanged": 1}
    assert outcomes(result)["department"] == {"unchanged": 5}
    # Not even updated_at moves, and the audit trail gets no second "plan.imported".
    assert table_counts(engine)["audit_event"] == 1
    assert snapshot(engine) == before


def test_modified_plan_updates_in_place(engine: Engine, tmp_path: Path) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    counts = table_counts(engine)
    changed = edited(
        tmp_path,
        EXAMPLE_PLAN,
        {
            "name: {ja: MQL 数, en: MQLs}": "name: {ja: MQL 件数, en: Marketing-qualified leads}",
            "target: 15-20": "target: 18-22",
            "target: 80      # December": "target: 75      # December",
        },
    )

    result = import_plan(engine, changed)

    assert outcomes(result)["kpi"] == {"updated": 1, "unchanged": 15}
    assert outcomes(result)["target"] == {"updated": 2, "unchanged": 16}
    mqls = one(engine, Kpi, "mqls")
    assert (mqls.name_ja, mqls.name_en) == ("MQL 件数", "Marketing-qualified leads")
    assert targets_of(engine, "close_rate") == {"*": (None, 18, 22)}
    assert targets_of(engine, "new_approaches")["2026-12"] == (75, None, None)
    assert {k: v for k, v in table_counts(engine).items() if k != "audit_event"} == {
        k: v for k, v in counts.items() if k != "audit_event"
    }


def test_range_target_becomes_a_single_value(engine: Engine, tmp_path: Path) -> None:
    # The check constraint allows a value or a range, never both: the update must clear min/max.
    import_plan(engine, EXAMPLE_PLAN)
    import_plan(engine, edited(tmp_path, EXAMPLE_PLAN, {"target: 15-20": "target: 17%"}))
    assert targets_of(engine, "close_rate") == {"*": (17, None, None)}


def test_partial_file_with_only_targets(engine: Engine, tmp_path: Path) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    partial = tmp_path / "targets.yaml"
    partial.write_text(
        "targets:\n"
        "  - kpi: mqls\n    period: 2026-11\n    target: 210\n"
        "  - kpi: website_visits\n    period: 2026-W50\n    target: {min: 4000, max: 4500}\n",
        encoding="utf-8",
    )

    result = import_plan(engine, partial)

    assert outcomes(result) == {"target": {"created": 2}}
    assert targets_of(engine, "mqls")["2026-11"] == (210, None, None)
    assert targets_of(engine, "website_visits")["2026-W50"] == (None, 4000, 4500)
    assert table_counts(engine)["kpi"] == 16


def test_long_file_name_is_audited(engine: Engine, tmp_path: Path) -> None:
    # The audit row keeps the file name in a 64-character column; a longer name must not
    # make the whole import fail (PostgreSQL refuses over-long strings).
    long_name = tmp_path / (
        "2026年度_マーケティング部_インサイドセールス部_営業部_カスタマーサクセス部_" * 2 + ".yaml"
    )
    long_name.write_text(EXAMPLE_PLAN.read_text(encoding="utf-8"), encoding="utf-8")
    assert import_plan(engine, long_name).changed
    assert table_counts(engine)["audit_event"] == 1


# ---------------------------------------------------------------- department flags, the goal's measure

# How a yes/no may be written in YAML: as a YAML boolean, or quoted as text.
FLAGS = {"yes": True, "no": False, "true": True, "false": False, "'yes'": True, "'false'": False}


@pytest.mark.parametrize(("written", "value"), FLAGS.items(), ids=FLAGS.keys())
def test_department_flags_from_yaml(engine: Engine, tmp_path: Path, written: str, value: bool) -> None:
    # The KPI CSV has no division/holiday_shift columns (a division has no KPIs): YAML only.
    flags = f"digest_cron: 0 9 * * mon\n    division: {written}\n    holiday_shift: {written}"
    import_plan(engine, edited(tmp_path, SMALL, {"digest_cron: 0 9 * * mon": flags}))
    marketing = one(engine, Department, "marketing")
    assert (marketing.is_division, marketing.holiday_shift) == (value, value)

    # Flipping both is one department updated; leaving them out keeps them off by default.
    flipped = f"digest_cron: 0 9 * * mon\n    division: {not value}\n    holiday_shift: {not value}"
    result = import_plan(engine, edited(tmp_path, SMALL, {"digest_cron: 0 9 * * mon": flipped}))
    assert outcomes(result)["department"] == {"updated": 1}
    marketing = one(engine, Department, "marketing")
    assert (marketing.is_division, marketing.holiday_shift) == (not value, not value)


def test_departments_are_no_division_and_no_holiday_shift_by_default(engine: Engine) -> None:
    import_plan(engine, SMALL)
    marketing = one(engine, Department, "marketing")
    assert (marketing.is_division, marketing.holiday_shift) == (False, False)


def test_goal_measure_links_the_goal_to_its_kpi(engine: Engine, tmp_path: Path) -> None:
    measured = edited(tmp_path, SMALL, {"fiscal_year: 2026": "fiscal_year: 2026\n  measure: mqls"})
    first = import_plan(engine, measured)
    assert outcomes(first)["goal"] == {"created": 1}  # created and linked: counted once
    assert one(engine, Goal, "revenue").kpi_id == one(engine, Kpi, "mqls").id
    assert outcomes(import_plan(engine, measured))["goal"] == {"unchanged": 1}

    # A goal-only file may name a KPI that is already in the database.
    goal_only = tmp_path / "goal.yaml"
    goal_only.write_text(
        "goal:\n  key: revenue\n  name: {ja: 年間売上, en: Annual revenue}\n"
        "  target: 1億\n  unit: JPY\n  fiscal_year: 2026\n  measure: sqls\n",
        encoding="utf-8",
    )
    assert outcomes(import_plan(engine, goal_only)) == {"goal": {"updated": 1}}
    assert one(engine, Goal, "revenue").kpi_id == one(engine, Kpi, "sqls").id


# ---------------------------------------------------------------- CSV


def test_kpi_table_csv(engine: Engine) -> None:
    import_plan(engine, EXAMPLE_PLAN)

    result = import_plan(engine, FIXTURES / "kpis.csv")

    assert outcomes(result) == {
        "department": {"created": 2},
        "success_factor": {"created": 2},
        "kpi": {"created": 4},
        "target": {"created": 4},
    }
    support = one(engine, Department, "support")
    assert (support.name_ja, support.name_en, support.channel_id) == ("サポート部", "Support", "C0SUPPORT")
    assert (support.locale, support.timezone) == ("en", "America/New_York")
    response = one(engine, Kpi, "first_response")
    assert (response.unit, response.direction, response.cadence) == (
        Unit.HOURS,
        Direction.LOWER,
        Cadence.WEEKLY,
    )
    assert (response.amber_pct, response.red_pct, response.aggregation) == (120, 150, Aggregation.AVERAGE)
    assert response.success_factor_id == one(engine, SuccessFactor, "speed").id
    assert one(engine, Kpi, "tickets").unit is Unit.COUNT  # written as 件
    per_agent = one(engine, Kpi, "tickets_per_agent")
    assert (per_agent.formula, per_agent.success_factor_id) == ("tickets / 5", None)
    assert targets_of(engine, "tickets_per_agent") == {"*": (None, 40, 60)}
    assert (one(engine, Kpi, "partner_deals").amber_pct, one(engine, Kpi, "partner_deals").red_pct) == (
        85,
        60,
    )
    # The database's only goal is the KFS's goal.
    assert one(engine, SuccessFactor, "speed").goal_id == one(engine, Goal, "revenue_fy2026").id

    again = import_plan(engine, FIXTURES / "kpis.csv")
    assert not again.changed


def test_kpi_table_csv_on_an_empty_database(engine: Engine) -> None:
    assert import_plan(engine, FIXTURES / "kpis.csv").changed
    assert table_counts(engine)["kpi"] == 4
    assert one(engine, SuccessFactor, "speed").goal_id is None


def test_kpi_csv_naming_a_department_by_key_keeps_its_details(engine: Engine, tmp_path: Path) -> None:
    # Regression: a KPI table that names an existing department and KFS by key alone used
    # to reset their names to the key and clear the department's channel and head.
    import_plan(engine, EXAMPLE_PLAN)
    table = tmp_path / "webinars.csv"
    table.write_text(
        "department,kfs,key,name_ja,name_en,unit,direction,cadence,target\n"
        "marketing,awareness,webinars,ウェビナー数,Webinars,count,higher,monthly,4\n",
        encoding="utf-8",
    )

    result = import_plan(engine, table)

    assert outcomes(result)["department"] == {"unchanged": 1}
    assert outcomes(result)["success_factor"] == {"unchanged": 1}
    marketing = one(engine, Department, "marketing")
    assert (marketing.name_ja, marketing.channel_id, marketing.head_user_id) == (
        "マーケティング部",
        "C0MARKETING",
        "U0MKTHEAD",
    )
    awareness = one(engine, SuccessFactor, "awareness")
    assert (awareness.name_ja, awareness.goal_id) == ("認知度の向上", one(engine, Goal, "revenue_fy2026").id)
    assert one(engine, Kpi, "webinars").success_factor_id == awareness.id


def test_targets_csv(engine: Engine) -> None:
    import_plan(engine, EXAMPLE_PLAN)

    result = import_plan(engine, FIXTURES / "targets.csv")

    assert outcomes(result) == {"target": {"created": 3}}
    assert targets_of(engine, "mqls")["2026-11"] == (210, None, None)
    assert targets_of(engine, "close_rate")["2026-11"] == (None, 16, 21)
    assert targets_of(engine, "website_visits")["2026-W50"] == (4500, None, None)


def test_a_refused_csv_file_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    # Every bad CSV's row and field: tests/unit/test_plan_validation.py. Here one that is refused
    # for what the database holds (no KPI `mqlz` in it) leaves every row as it was.
    import_plan(engine, EXAMPLE_PLAN)
    before = snapshot(engine)
    case = CSV_CASES["unknown KPI"]
    path = tmp_path / "bad.csv"
    path.write_text(case.text, encoding="utf-8")

    problems = import_invalid(engine, path)

    assert case.expected in found(problems)
    assert_describable(problems)
    assert snapshot(engine) == before


# ---------------------------------------------------------------- bad YAML plans

# Every bad YAML plan's line and field: tests/unit/test_plan_validation.py. Here a problem in an
# entry and a file that is not YAML at all, into an empty database and over a plan already in it.
STORED_CASES = ["KPI names an unknown department", "malformed YAML: bad indentation"]


@pytest.mark.parametrize("preloaded", [False, True], ids=["empty db", "plan already in db"])
@pytest.mark.parametrize("case", STORED_CASES)
def test_a_refused_yaml_file_writes_nothing(
    engine: Engine, tmp_path: Path, preloaded: bool, case: str
) -> None:
    edits, field, code = BAD_YAML[case]
    if preloaded:
        import_plan(engine, SMALL)
    before = snapshot(engine)
    path = edited(tmp_path, SMALL, edits)

    problems = import_invalid(engine, path)

    assert (marked_line(path), field, code) in found(problems)
    assert_describable(problems)
    assert snapshot(engine) == before


@pytest.mark.parametrize("path", [SMALL, EXAMPLE_PLAN], ids=["small plan", "example plan"])
def test_the_unit_specs_are_given_what_the_database_holds(engine: Engine, path: Path) -> None:
    # tests/unit/test_plan_validation.py validates "over a plan already in the database" with
    # existing_after(path) in place of Existing.load: the same keys, cadences and formulas.
    import_plan(engine, path)
    with Session(engine) as session:
        assert Existing.load(session) == existing_after(path)


def test_small_plan_itself_is_valid(engine: Engine) -> None:
    # Guards the cases above: each problem comes from its edit, not from the base file.
    result = import_plan(engine, SMALL)
    assert outcomes(result)["kpi"] == {"created": 5}
    assert targets_of(engine, "visits") == {"*": (None, 1000, 1500)}


def test_every_problem_is_reported_at_once(engine: Engine, tmp_path: Path) -> None:
    import_plan(engine, EXAMPLE_PLAN)
    before = snapshot(engine)
    path = edited(
        tmp_path,
        SMALL,
        {
            "owner: U0OWNER\n    unit: count": "owner: U0OWNER\n    unit: kg",
            "channel: C0MARKETING": "channel: marketing",
            "timezone: Asia/Tokyo": "timezone: Asia/Tokio",
            "- kpi: mqls": "- kpi: nosuch",
            "formula: sqls / mqls * 100": "formula: sqls / 0",
        },
    )

    problems = import_invalid(engine, path)

    codes = {p.code for p in problems}
    assert {
        "unknown_unit",
        "bad_channel",
        "unknown_timezone",
        "unknown_kpi",
        "formula_division_by_zero",
    } <= codes
    assert len({p.where for p in problems}) >= 5
    assert snapshot(engine) == before


def test_changing_the_cadence_of_a_formulas_input_is_refused(engine: Engine, tmp_path: Path) -> None:
    # sql_rate (monthly, stored) is calculated from mqls: a file making mqls weekly would leave
    # sql_rate without a value ever, so the problem is shown at mqls's cadence.
    import_plan(engine, SMALL)
    before = snapshot(engine)
    path = tmp_path / "mqls.yaml"
    path.write_text(
        "kpis:\n  - key: mqls\n    department: marketing\n    name: {ja: MQL 数, en: MQLs}\n"
        "    unit: count\n    direction: higher\n    cadence: weekly" + MARK + "\n",
        encoding="utf-8",
    )

    problems = import_invalid(engine, path)

    assert found(problems) == [(marked_line(path), "cadence", "formula_cadence")]
    assert "sql_rate" in problems[0].describe("en") and "月次" in problems[0].describe("ja")
    assert_describable(problems)
    assert snapshot(engine) == before
