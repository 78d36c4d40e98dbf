"""The plan checks (bot/plan/checks.py), pure: a plan file read and validated in memory, the
checklist's warnings with their lines and figures, in Japanese and English. No database."""

from __future__ import annotations

from decimal import Decimal

from bot.plan.checks import Context, FunnelStep, check_plan
from bot.plan.file import parse_yaml, read_plan
from bot.plan.specs import Existing, Problem
from bot.plan.validation import validate
from tests.plans import EXAMPLE_PLAN

BASE = """\
goal:
  key: revenue
  name: Revenue
  target: 1000
  unit: JPY
  fiscal_year: 2026
success_factors:
  - key: leads
  - key: deals
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
    success_factor: deals
    name: Calls
    owner: U0IS1
    unit: count
    direction: higher
    cadence: monthly
    kind: process
    target: 400
  - key: sqls
    department: inside_sales
    success_factor: deals
    name: SQLs
    owner: U0IS1
    unit: count
    direction: higher
    cadence: monthly
    kind: result
    target: 60
"""


def warnings(text: str, context: Context | None = None) -> list[Problem]:
    document = parse_yaml(text, "plan.yaml")
    return check_plan(document, validate(document, Existing()), context)


CALLS = "    owner: U0IS1\n    unit: count\n    direction: higher\n    cadence: monthly\n    kind: process\n"


def codes(found: list[Problem]) -> list[str]:
    return [warning.code for warning in found]


def test_a_plan_that_follows_the_checklist_has_no_warning() -> None:
    assert warnings(BASE) == []


def test_the_example_plan_is_checked_in_both_languages() -> None:
    document = read_plan(EXAMPLE_PLAN)
    found = check_plan(document, validate(document, Existing()))
    # The seed's Customer Success measures results only (design §1): called out, nothing else.
    assert codes(found) == ["warn_department_without_process"]
    assert "customer_success" in found[0].describe("en") and "プロセス KPI" in found[0].describe("ja")


def test_no_kgi_is_called_out_unless_the_database_has_one() -> None:
    text = "success_factors:" + BASE.split("success_factors:", 1)[1]
    assert "warn_no_kgi" in codes(warnings(text))
    assert "warn_no_kgi" not in codes(warnings(text, Context(has_stored_goal=True)))


def test_a_kfs_without_a_kpi_is_called_out_at_its_line() -> None:
    text = BASE.replace("  - key: deals\n", "  - key: deals\n  - key: awareness\n")
    [found] = warnings(text)
    assert (found.code, found.where) == ("warn_factor_without_kpi", "line 10")
    assert "awareness" in found.describe("en") and "KPI がありません" in found.describe("ja")


def test_a_department_needs_process_and_result_kpis() -> None:
    text = BASE.replace("    kind: process\n    target: 400", "    kind: result\n    target: 400")
    [found] = warnings(text)
    assert (found.code, found.where, found.params) == (
        "warn_department_without_process",
        "line 12",
        {"department": "inside_sales"},
    )


def test_no_cross_department_kpi_and_no_funnel_is_called_out() -> None:
    text = BASE.replace("formula: sqls / mqls * 100", "formula: mqls / mqls * 30")
    assert codes(warnings(text)) == ["warn_no_cross_department"]
    funnel = [FunnelStep("mqls", None), FunnelStep("sqls", Decimal(30))]
    assert codes(warnings(text, Context(funnel=funnel))) == []


def test_every_kpi_needs_an_owner_and_a_target() -> None:
    text = BASE.replace(CALLS + "    target: 400\n", CALLS.replace("    owner: U0IS1\n", ""))
    found = warnings(text)
    assert codes(found) == ["warn_kpi_without_owner", "warn_kpi_without_target"]
    assert {w.where for w in found} == {"line 35"}
    assert [w.field for w in found] == ["owner", "target"]


def test_targets_that_do_not_add_up_are_called_out_with_the_figures() -> None:
    # 200 MQLs × 30 % = 60 SQLs: an SQL target of 90 does not fit the 30 % conversion target.
    found = warnings(BASE.replace("    target: 60\n", "    target: 90\n"))
    [warning] = found
    assert (warning.code, warning.where, warning.field) == ("warn_formula_target", "line 34", "target")
    english = warning.describe("en")
    assert "mqls 200, sqls 90" in english and "gives 45" in english and "is 30" in english
    assert "45" in warning.describe("ja") and "辻褄" in warning.describe("ja")


def test_a_funnel_stage_against_the_stage_before_times_its_conversion() -> None:
    funnel = [FunnelStep("mqls", None, "line 80"), FunnelStep("sqls", Decimal(30), "line 82")]
    assert warnings(BASE, Context(funnel=funnel)) == []
    [warning] = warnings(BASE.replace("    target: 60\n", "    target: 90\n"), Context(funnel=funnel))[1:]
    assert (warning.code, warning.where) == ("warn_funnel_target", "line 82")
    assert "mqls 200 × 30% = 60 expected" in warning.describe("en")
    assert "sqls" in warning.describe("en") and "90" in warning.describe("en")


def test_a_target_far_beyond_the_best_period_is_unrealistic() -> None:
    past = {f"2026-0{month}": Decimal(100 + month) for month in range(1, 6)}  # best: 105 in 2026-05
    found = warnings(BASE.replace("    target: 400\n", "    target: 150\n"), Context(history={"calls": past}))
    [warning] = found
    assert (warning.code, warning.where) == ("warn_unrealistic_higher", "line 44")
    english = warning.describe("en")
    assert (
        "150" in english and "105 in 2026-05" in english and "43%" in english and "of the last 5" in english
    )
    assert "過去最高" in warning.describe("ja")
    # Within the margin (30 % over 105 is 136.5): realistic.
    assert (
        warnings(BASE.replace("    target: 400\n", "    target: 136\n"), Context(history={"calls": past}))
        == []
    )


def test_fewer_than_five_periods_are_no_history_to_judge_by() -> None:
    past = {f"2026-0{month}": Decimal(100) for month in range(1, 5)}
    assert (
        warnings(BASE.replace("    target: 400\n", "    target: 900\n"), Context(history={"calls": past}))
        == []
    )


def test_lower_is_better_is_unrealistic_below_the_best() -> None:
    text = BASE + (
        "  - key: cost_per_lead\n    department: marketing\n    success_factor: leads\n    name: CPL\n"
        "    owner: U0MKT1\n    unit: JPY\n    direction: lower\n    cadence: monthly\n    kind: result\n"
        "    target: 5000\n"
    )
    past = {f"2026-0{month}": Decimal(9000 - month * 100) for month in range(1, 7)}  # best: 8,400 in 2026-06
    [warning] = warnings(text, Context(history={"cost_per_lead": past}))
    assert warning.code == "warn_unrealistic_lower"
    assert "8400 in 2026-06" in warning.describe("en") and "40% below" in warning.describe("en")
