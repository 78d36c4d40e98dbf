"""Plan files for tests: the small plan, edits that mark the line a problem must be reported at,
the bad files' cases, and what a database holding a plan tells the validation (`Existing`).

tests/unit/test_plan_validation.py checks every bad file on the parsed file alone (no database);
tests/test_plan_import.py imports a few of them to show that a refused file writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.plan.file import read_plan
from bot.plan.specs import Existing, KnownKpi, Problem, place_text
from bot.plan.validation import validate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SMALL = FIXTURES / "small-plan.yaml"
# Marks, in an edited plan, the line where the problem must be reported.
MARK = "  #!"


def edited(tmp_path: Path, source: Path, edits: dict[str, str], name: str = "plan.yaml") -> Path:
    text = source.read_text(encoding="utf-8")
    for old, new in edits.items():
        assert text.count(old) == 1, f"edit target not unique in {source.name}: {old!r}"
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def marked_line(path: Path) -> str:
    lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if MARK in line]
    assert len(lines) == 1, "exactly one line of an edited plan carries the mark"
    return f"line {lines[0]}"


def found(problems: list[Problem]) -> list[tuple[str, str, str]]:
    return [(p.where, p.field, p.code) for p in problems]


def assert_describable(problems: list[Problem]) -> None:
    """Each problem reads as a sentence in both languages, after its place (「31 行目」 / "line 31")."""
    for problem in problems:
        for locale in ("ja", "en"):
            text = problem.describe(locale)
            assert text.startswith(place_text(problem.where, locale))
            assert "{{" not in text and "plan." not in text, text


def existing_after(path: Path) -> Existing:
    """What `Existing.load` reads from a database into which only `path` was imported."""
    plan = validate(read_plan(path), Existing())
    return Existing(
        departments={d.key for d in plan.departments},
        goals={g.key for g in plan.goals},
        factors={f.key for f in plan.factors},
        kpis={k.key: KnownKpi(k.cadence, k.formula) for k in plan.kpis},
    )


# ---------------------------------------------------------------- bad CSV files (over the example plan)


@dataclass(frozen=True)
class CsvCase:
    text: str
    expected: tuple[str, str, str]  # where, field, code


CSV_CASES = {
    "wrong number of cells": CsvCase(
        "kpi,period,target\nmqls,2026-11,210\nsqls,2026-11\n", ("row 3", "", "csv_columns")
    ),
    "neither KPI nor targets header": CsvCase("name,value\nmqls,210\n", ("row 1", "", "csv_header")),
    "unknown column": CsvCase(
        "kpi,period,target,colour\nmqls,2026-11,210,red\n", ("row 1", "colour", "unknown_field")
    ),
    "unknown KPI": CsvCase(
        "kpi,period,target\nmqls,2026-11,210\nmqlz,2026-11,5\n", ("row 3", "kpi", "unknown_kpi")
    ),
    "period of the wrong cadence": CsvCase(
        "kpi,period,target\nmqls,2026-W48,210\n", ("row 2", "period", "period_cadence")
    ),
    "duplicate target": CsvCase(
        "kpi,period,target\nmqls,2026-11,210\nmqls,2026-11,220\n", ("row 3", "period", "duplicate_target")
    ),
    "unknown unit": CsvCase(
        "department,key,name,unit,direction,cadence\nmarketing,a,A,count,higher,weekly\nmarketing,b,B,kg,higher,weekly\n",
        ("row 3", "unit", "unknown_unit"),
    ),
    "duplicate KPI key": CsvCase(
        "department,key,name,unit,direction,cadence\nmarketing,a,A,count,higher,weekly\nmarketing,a,A2,count,higher,weekly\n",
        ("row 3", "key", "duplicate_key"),
    ),
    "lower-is-better thresholds reversed": CsvCase(
        "department,key,name,unit,direction,cadence,amber,red\nmarketing,cpl,CPL,JPY,lower,monthly,90,70\n",
        ("row 2", "thresholds", "threshold_order_lower"),
    ),
    "department described two ways": CsvCase(
        "department,channel,key,name,unit,direction,cadence\n"
        "sales,C0SALES,a,A,count,higher,weekly\nsales,C0OTHER,b,B,count,higher,weekly\n",
        ("row 3", "channel", "csv_conflict"),
    ),
    "empty file": CsvCase("", ("row 1", "", "csv_empty")),
}


# ---------------------------------------------------------------- bad YAML plans

# Each case edits tests/fixtures/small-plan.yaml (old text → new text); the new text marks
# with MARK the line where the problem must be reported. Value: (edits, field, code).
FACTORS_LIST = "success_factors:\n  - key: leads\n    name: {ja: リード獲得, en: Lead generation}\n"
FACTORS_AS_TEXT = "success_factors: leads" + MARK + "\n"
CRON_TOO_LONG = ",".join(str(minute) for minute in range(24)) + " 9 * * mon"
BAD_YAML: dict[str, tuple[dict[str, str], str, str]] = {
    "target names an unknown KPI": ({"- kpi: mqls": "- kpi: nosuch" + MARK}, "kpi", "unknown_kpi"),
    "KPI names an unknown department": (
        {"- key: sqls\n    department: marketing": "- key: sqls\n    department: sales" + MARK},
        "department",
        "unknown_department",
    ),
    "duplicate KPI key": ({"- key: visits": "- key: mqls" + MARK}, "key", "duplicate_key"),
    "lower-is-better KPI with higher-is-better thresholds": (
        {"thresholds: {amber: 110, red: 130}": "thresholds: {amber: 90, red: 70}" + MARK},
        "thresholds",
        "threshold_order_lower",
    ),
    "higher-is-better KPI with thresholds reversed": (
        {"    target: 200\n": "    target: 200\n    thresholds: {amber: 70, red: 90}" + MARK + "\n"},
        "thresholds",
        "threshold_order_higher",
    ),
    "zero threshold": (
        {"thresholds: {amber: 110, red: 130}": "thresholds: {amber: 110, red: 0}" + MARK},
        "thresholds",
        "threshold_not_positive",
    ),
    "thresholds with an unknown colour": (
        {"thresholds: {amber: 110, red: 130}": "thresholds: {yellow: 110, red: 130}" + MARK},
        "thresholds",
        "thresholds_shape",
    ),
    "unknown unit": (
        {"owner: U0OWNER\n    unit: count": "owner: U0OWNER\n    unit: kg" + MARK},
        "unit",
        "unknown_unit",
    ),
    "unknown direction": (
        {"direction: lower": "direction: sideways" + MARK},
        "direction",
        "unknown_direction",
    ),
    "unknown cadence": ({"cadence: weekly": "cadence: daily" + MARK}, "cadence", "unknown_cadence"),
    "unknown aggregation": (
        {"direction: lower\n": "direction: lower\n    aggregation: median" + MARK + "\n"},
        "aggregation",
        "unknown_aggregation",
    ),
    "missing cadence": (
        {"  - key: visits\n": "  - key: visits" + MARK + "\n", "    cadence: weekly\n": ""},
        "cadence",
        "missing",
    ),
    "formula names a missing KPI": (
        {"formula: sqls / mqls * 100": "formula: sqls / leads * 100" + MARK},
        "formula",
        "formula_unknown_kpi",
    ),
    "formula divides by a constant zero": (
        {"formula: sqls / mqls * 100": "formula: sqls / (2 - 2) * 100" + MARK},
        "formula",
        "formula_division_by_zero",
    ),
    "formula syntax": (
        {"formula: sqls / mqls * 100": "formula: sqls / * 100" + MARK},
        "formula",
        "formula_syntax",
    ),
    "formula calls a function": (
        {"formula: sqls / mqls * 100": "formula: max(sqls, mqls)" + MARK},
        "formula",
        "formula_unsupported",
    ),
    "formula mixes cadences": (
        {"formula: sqls / mqls * 100": "formula: sqls / visits * 100" + MARK},
        "formula",
        "formula_cadence",
    ),
    "formula cycle": (
        {"- key: sqls\n": "- key: sqls\n    formula: sql_rate * 2" + MARK + "\n"},
        "formula",
        "formula_cycle",
    ),
    "range reversed": ({"target: 1000-1500": "target: 1500-1000" + MARK}, "target", "range_order"),
    "target is not a number": ({"target: 200": "target: lots" + MARK}, "target", "not_a_number"),
    "target too large to store": ({"target: 200": "target: 1000兆" + MARK}, "target", "number_unstorable"),
    "target too precise to store": (
        {"target: 200": "target: 0.1234567" + MARK},
        "target",
        "number_unstorable",
    ),
    "target of 10^14, as digits": (
        {"target: 200": "target: 100000000000000" + MARK},
        "target",
        "number_unstorable",
    ),
    # YAML reads 1e14 as text (its floats need a point), and kpibot's numbers have no exponents.
    "target of 10^14, as an exponent": ({"target: 200": "target: 1e14" + MARK}, "target", "not_a_number"),
    "target a YAML float beyond the range": (
        {"target: 200": "target: 1.0e+14" + MARK},
        "target",
        "not_a_number",
    ),
    "target a YAML float too precise to store": (
        {"target: 200": "target: 99999999999999.9999999" + MARK},
        "target",
        "number_unstorable",
    ),
    "name with a NUL": (
        {"name: {ja: MQL 数, en: MQLs}": 'name: {ja: "MQL\\0 数", en: MQLs}' + MARK},
        "name",
        "control_characters",
    ),
    "Slack user ID with a control character": (
        {"head: U0HEAD": 'head: "U0HEAD\\x1b"' + MARK},
        "head",
        "control_characters",
    ),
    "period of the wrong cadence": (
        {"period: 2026-12": "period: 2026-W50" + MARK},
        "period",
        "period_cadence",
    ),
    "period that is no period": ({"period: 2026-12": "period: 2026-13" + MARK}, "period", "bad_period"),
    "duplicate target": (
        {
            "    target: 180\n": "    target: 180\n  - kpi: mqls"
            + MARK
            + "\n    period: 2026-12\n    target: 190\n"
        },
        "period",
        "duplicate_target",
    ),
    "bad Slack channel ID": ({"channel: C0MARKETING": "channel: marketing" + MARK}, "channel", "bad_channel"),
    "bad Slack user ID": ({"owner: U0OWNER": "owner: taro" + MARK}, "owner", "bad_user"),
    "unknown timezone": (
        {"timezone: Asia/Tokyo": "timezone: Asia/Tokio" + MARK},
        "timezone",
        "unknown_timezone",
    ),
    "unknown locale": ({"locale: ja": "locale: fr" + MARK}, "locale", "unknown_locale"),
    "bad cron": ({"digest_cron: 0 9 * * mon": "digest_cron: 0 25 * * mon" + MARK}, "digest_cron", "bad_cron"),
    "cron longer than its column": (
        {"digest_cron: 0 9 * * mon": f"digest_cron: {CRON_TOO_LONG}" + MARK},
        "digest_cron",
        "too_long",
    ),
    "bad key": ({"- key: visits": "- key: Visits" + MARK}, "key", "bad_key"),
    "unknown KFS": (
        {"success_factor: leads": "success_factor: lead" + MARK},
        "success_factor",
        "unknown_factor",
    ),
    "KFS names an unknown goal": (
        {"en: Lead generation}\n": "en: Lead generation}\n    goal: profit" + MARK + "\n"},
        "goal",
        "unknown_goal",
    ),
    "fiscal year out of range": (
        {"fiscal_year: 2026": "fiscal_year: 1999" + MARK},
        "fiscal_year",
        "out_of_range",
    ),
    "misspelt field": (
        {"thresholds: {amber: 110, red: 130}": "tresholds: {amber: 110, red: 130}" + MARK},
        "tresholds",
        "unknown_field",
    ),
    "flag that is neither yes nor no": (
        {"digest_cron: 0 9 * * mon": "digest_cron: 0 9 * * mon\n    division: maybe" + MARK},
        "division",
        "not_a_flag",
    ),
    "holiday shift that is neither yes nor no": (
        {"digest_cron: 0 9 * * mon": "digest_cron: 0 9 * * mon\n    holiday_shift: sometimes" + MARK},
        "holiday_shift",
        "not_a_flag",
    ),
    "goal measured by an unknown KPI": (
        {"fiscal_year: 2026": "fiscal_year: 2026\n  measure: nosuch" + MARK},
        "measure",
        "unknown_kpi",
    ),
    "unknown section": (
        {"version: 1\n": "version: 1\nbudgets: []" + MARK + "\n"},
        "budgets",
        "unknown_section",
    ),
    "section that is not a list": (
        {FACTORS_LIST: FACTORS_AS_TEXT},
        "success_factors",
        "section_not_list",
    ),
    "malformed YAML: mapping in a value": (
        {"owner: U0OWNER": "owner: U0OWNER: boss" + MARK},
        "",
        "yaml_syntax",
    ),
    "malformed YAML: bad indentation": (
        {"    owner: U0OWNER\n": "   owner: U0OWNER" + MARK + "\n"},
        "",
        "yaml_syntax",
    ),
}
