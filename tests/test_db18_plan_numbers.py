"""Numbers in YAML plan files mean what they say as written, as when typed in Slack: YAML 1.1's
integer forms (`017` as octal 15, `0x1F` as 31, `1_000`, `1:30` as 90) never turn into another
number; a leading zero is a decimal number, anything else that is not one is refused at its line.

The parsed file alone (no database) for the rules; one import on both databases for what is stored.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bot.models import Department, Kpi, Target
from bot.plan.file import read_plan
from bot.plan.specs import Existing, Plan, PlanInvalid
from bot.plan.validation import validate
from tests.plans import import_plan
from tests.unit.plan_files import MARK, SMALL, edited, found, marked_line

TARGET = "    thresholds: {amber: 110, red: 130}\n    target: 8000"  # cost_per_lead's
START_MONTH = "    digest_cron: 0 9 * * mon\n"  # the marketing department's last line


def with_target(tmp_path: Path, written: str) -> Path:
    return edited(
        tmp_path, SMALL, {TARGET: f"    thresholds: {{amber: 110, red: 130}}\n    target: {written}{MARK}"}
    )


def parsed(path: Path) -> Plan:
    return validate(read_plan(path), Existing())


def cost_per_lead_target(plan: Plan) -> Decimal:
    (spec,) = [t for t in plan.targets if t.kpi_key == "cost_per_lead"]
    return spec.target.low


@pytest.mark.parametrize(("written", "value"), [("017", 17), ("08", 8), ("0100", 100), ("+8000", 8000)])
def test_a_leading_zero_is_a_decimal_number_not_octal(tmp_path: Path, written: str, value: int) -> None:
    assert cost_per_lead_target(parsed(with_target(tmp_path, written))) == value


@pytest.mark.parametrize("written", ["0x1F", "0o17", "0b101", "1_000", "1:30", "0x_1F"])
def test_other_integer_forms_of_yaml_are_refused_at_their_line(tmp_path: Path, written: str) -> None:
    path = with_target(tmp_path, written)
    with pytest.raises(PlanInvalid) as raised:
        parsed(path)
    assert found(raised.value.problems) == [(marked_line(path), "target", "not_a_number")]
    (problem,) = raised.value.problems
    assert written in problem.describe("ja") and written in problem.describe("en")


def test_thresholds_and_whole_numbers_are_read_as_written_too(tmp_path: Path) -> None:
    path = edited(
        tmp_path,
        SMALL,
        {
            TARGET: "    thresholds: {amber: 0110, red: 0x82}\n    target: 8000",
            START_MONTH: START_MONTH + "    fiscal_year_start_month: 010\n",
        },
    )
    with pytest.raises(PlanInvalid) as raised:
        parsed(path)
    # 0x82 is refused; `010` is October (YAML 1.1 would have read it as August).
    assert [(field, code) for _, field, code in found(raised.value.problems)] == [
        ("thresholds", "not_a_number")
    ]

    fixed = edited(tmp_path, path, {"red: 0x82": "red: 0130"}, name="fixed.yaml")
    plan = parsed(fixed)
    (marketing,) = [d for d in plan.departments if d.key == "marketing"]
    assert marketing.fiscal_year_start_month == 10
    (cost,) = [k for k in plan.kpis if k.key == "cost_per_lead"]
    assert (cost.amber_pct, cost.red_pct) == (Decimal(110), Decimal(130))


def test_a_leading_zero_target_is_stored_as_its_decimal_value(engine: Engine, tmp_path: Path) -> None:
    import_plan(engine, with_target(tmp_path, "017"))
    with Session(engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "cost_per_lead")).one()
        (target,) = session.exec(select(Target).where(Target.kpi_id == kpi.id)).all()
        marketing = session.exec(select(Department).where(Department.key == "marketing")).one()
    assert Decimal(target.value) == 17
    assert marketing.fiscal_year_start_month == 4
