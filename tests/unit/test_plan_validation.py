"""Plan files refused by the rules alone: every problem at its line (YAML) or row (CSV) and field,
in words in both languages. The file is read and validated as `kpibot import-plan` does
(`validate(read_plan(path), Existing.load(session))`), with what the database would hold given in
memory (tests/unit/plan_files.existing_after); no database. That a refused file writes nothing is
tests/test_plan_import.py's, on both databases.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bot.formulas
import bot.models
import bot.plan.file
import bot.plan.validation
import bot.scoring
from bot import render
from bot.plan.file import read_plan
from bot.plan.specs import Existing, PlanInvalid, Problem
from bot.plan.validation import validate
from tests.plans import EXAMPLE_PLAN
from tests.unit.plan_files import (
    BAD_YAML,
    CSV_CASES,
    SMALL,
    CsvCase,
    assert_describable,
    edited,
    existing_after,
    found,
    marked_line,
)


def problems_of(path: Path, existing: Existing | None = None) -> list[Problem]:
    with pytest.raises(PlanInvalid) as raised:
        validate(read_plan(path), existing or Existing())
    return raised.value.problems


def test_the_small_plan_itself_is_valid() -> None:
    # Guards the cases below: each problem comes from its edit, not from the base file.
    plan = validate(read_plan(SMALL), Existing())
    assert len(plan.kpis) == 5
    assert existing_after(SMALL).kpis.keys() == {"mqls", "sqls", "sql_rate", "visits", "cost_per_lead"}


@pytest.mark.parametrize("preloaded", [False, True], ids=["empty db", "plan already in db"])
@pytest.mark.parametrize(("edits", "field", "code"), BAD_YAML.values(), ids=BAD_YAML.keys())
def test_bad_yaml_is_refused_with_its_line(
    tmp_path: Path, preloaded: bool, edits: dict[str, str], field: str, code: str
) -> None:
    path = edited(tmp_path, SMALL, edits)

    problems = problems_of(path, existing_after(SMALL) if preloaded else None)

    assert (marked_line(path), field, code) in found(problems)
    assert_describable(problems)


@pytest.mark.parametrize("case", CSV_CASES.values(), ids=CSV_CASES.keys())
def test_bad_csv_is_refused_with_its_row(tmp_path: Path, case: CsvCase) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(case.text, encoding="utf-8")

    problems = problems_of(path, existing_after(EXAMPLE_PLAN))

    assert case.expected in found(problems)
    assert_describable(problems)


def test_a_broken_entry_is_reported_once(tmp_path: Path) -> None:
    # mqls has a bad unit and marketing a bad channel. Their KPIs, targets and formulas
    # still refer to keys the file writes, so they must not add "no KPI/department 'x'".
    path = edited(
        tmp_path,
        SMALL,
        {
            "owner: U0OWNER\n    unit: count": "owner: U0OWNER\n    unit: kg",
            "channel: C0MARKETING": "channel: marketing",
        },
    )

    problems = problems_of(path)

    assert [(p.field, p.code) for p in problems] == [("channel", "bad_channel"), ("unit", "unknown_unit")]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("plan.yaml", "", ("line 1", "", "yaml_not_mapping")),
        ("plan.yaml", "- just\n- a list\n", ("line 1", "", "yaml_not_mapping")),
        ("plan.txt", "kpi,period,target\n", ("", "", "unknown_file_type")),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, text: str, expected: tuple[str, str, str]) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    problems = problems_of(path)
    assert found(problems) == [expected]
    assert_describable(problems)


# ---------------------------------------------------------------- message catalogs


def _problem_codes() -> set[str]:
    """Every problem code bot/plan/validation.py and bot/plan/file.py can produce, read from their source."""
    plan_source = Path(bot.plan.validation.__file__).read_text(encoding="utf-8")
    file_source = Path(bot.plan.file.__file__).read_text(encoding="utf-8")
    codes: set[str] = set()
    # reader.problem(record, name, "code"), Problem(where, "field", "code"), slack_id(..., "code")
    codes.update(re.findall(r"\.problem\(\s*[\w.]+,\s*[\w\"]+,\s*\"(\w+)\"", plan_source))
    codes.update(re.findall(r"Problem\(\s*[\w.]+,\s*\"\w*\",\s*\"(\w+)\"", plan_source))
    codes.update(re.findall(r"slack_id\([^)]*\"(\w+)\"\)", plan_source))
    # document.problems.append((where, field, "code", params))
    codes.update(re.findall(r"problems\.append\(\s*\([^,]+,\s*[^,]+,\s*\"(\w+)\"", file_source))
    # Built codes: unknown_<enum> for each choice(), formula_<FormulaError code>, threshold codes.
    enums = re.findall(r"\.choice\(\s*record,\s*\"\w+\",\s*(\w+)", plan_source)
    codes.update(f"unknown_{getattr(bot.models, name).__name__.lower()}" for name in enums)
    formulas_source = Path(bot.formulas.__file__).read_text(encoding="utf-8")
    codes.update(f"formula_{code}" for code in re.findall(r"FormulaError\(\"(\w+)\"", formulas_source))
    scoring_source = Path(bot.scoring.__file__).read_text(encoding="utf-8")
    codes.update(re.findall(r"return \"(threshold_\w+)\"", scoring_source))
    return codes


def test_every_problem_code_has_a_message_in_both_languages() -> None:
    codes = _problem_codes()
    # If the patterns above stopped matching, the check below would pass vacuously.
    assert {
        "missing",
        "unknown_unit",
        "formula_cycle",
        "yaml_syntax",
        "threshold_order_lower",
        "bad_channel",
    } <= codes
    assert len(codes) >= 40
    for locale in ("ja", "en"):
        missing = {code for code in codes if f"plan.{code}" not in render.message_keys(locale)}
        assert not missing, f"templates/{locale}/messages.yaml lacks {sorted(missing)}"


def test_a_yaml_syntax_error_is_worded_as_pyyaml_words_it_at_its_line() -> None:
    # Plans are read with libyaml where PyYAML has it; its wording differs ("... in this
    # context"), so a refused plan is read again for the message users have always been shown.
    document = bot.plan.file.parse_yaml("goal:\n  key: g\n  owner: U0OWNER: boss\n", "plan.yaml")
    assert document.problems == [
        ("line 3", "", "yaml_syntax", {"reason": "mapping values are not allowed here"})
    ]


def test_libyaml_and_pure_python_read_the_example_plan_alike() -> None:
    import yaml

    text = (Path(__file__).resolve().parents[2] / "examples" / "b2b-plan.yaml").read_text(encoding="utf-8")

    def lines(node: object) -> object:  # every value, with the line of every mapping and key
        if isinstance(node, dict):
            return (node.line, node.key_lines, {key: lines(value) for key, value in node.items()})  # type: ignore[attr-defined]
        if isinstance(node, list):
            return [lines(item) for item in node]
        return node

    fast = yaml.load(text, Loader=bot.plan.file._FastLineLoader)  # noqa: S506
    pure = yaml.load(text, Loader=bot.plan.file._LineLoader)  # noqa: S506
    assert lines(fast) == lines(pure)
    assert bot.plan.file._FastLineLoader.__mro__[2] is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
