"""Reading plan files (YAML or CSV) into plain records that remember where they came from.

Nothing here validates meaning; `bot.plan.validation` does. Each record is a dict of raw field
values plus the line or row it was read from, so every problem can point at its place.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("goals", "success_factors", "departments", "kpis", "targets", "funnel")

# The fields each section accepts: anything else is reported, so a typo such as
# `treshold` cannot silently leave a KPI on its defaults.
_NAME_FIELDS = ("key", "name", "name_ja", "name_en")
FIELDS: dict[str, frozenset[str]] = {
    "goals": frozenset({*_NAME_FIELDS, "target", "unit", "fiscal_year", "measure"}),
    "success_factors": frozenset({*_NAME_FIELDS, "goal"}),
    "departments": frozenset(
        {
            *_NAME_FIELDS,
            *("channel", "head", "locale", "timezone", "digest_cron", "fiscal_year_start_month"),
            *("holiday_shift", "division"),
        }
    ),
    "kpis": frozenset(
        {
            *_NAME_FIELDS,
            *("department", "success_factor", "owner", "unit", "direction", "cadence", "kind"),
            *("aggregation", "thresholds", "formula", "target", "streak", "playbook"),
            "retired",  # the day it was retired (bot/plan/retired.py)
            # Where its value is fetched from, how often, and how old it may get (bot/sources/).
            *("source", "every", "max_age"),
        }
    ),
    "targets": frozenset({"kpi", "period", "target", "value", "min", "max"}),
    # The division's funnel, stage by stage in order (bot/funnel/): each a KPI of some department.
    "funnel": frozenset({"kpi", "conversion", "leak_below"}),
}


@dataclass
class Record:
    """One entry of a plan section: its fields and where each one was written."""

    where: str
    fields: dict[str, Any]
    field_where: dict[str, str] = field(default_factory=dict)

    def at(self, name: str) -> str:
        return self.field_where.get(name, self.where)


@dataclass
class PlanDocument:
    source: str
    sections: dict[str, list[Record]] = field(default_factory=lambda: {name: [] for name in SECTIONS})
    # Problems found while reading (bad syntax, wrong shapes): (where, field, code, params).
    problems: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)


class _LineDict(dict[str, Any]):
    line: int
    key_lines: dict[str, int]


class _LineMappings:
    """A loader whose mappings know the line of each key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _LineDict:
        mapping = _LineDict(super().construct_mapping(node, deep=deep))  # type: ignore[misc]
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {str(key_node.value): key_node.start_mark.line + 1 for key_node, _ in node.value}
        return mapping


class _LineLoader(_LineMappings, yaml.SafeLoader):
    """Pure Python: what a plan with a syntax error is read with, for PyYAML's own wording of it."""


# libyaml's parser where PyYAML has it, ~10x faster on a plan; the same constructors and resolver,
# so what a plan means is the same. Its error messages are worded differently: a plan it refuses
# is read again with _LineLoader, whose message the user is shown.
_FastLineLoader: type = type(
    "_FastLineLoader", (_LineMappings, getattr(yaml, "CSafeLoader", yaml.SafeLoader)), {}
)

for _loader in (_LineLoader, _FastLineLoader):
    # Every mapping, including the top one, is built by construct_mapping (SafeLoader's default
    # builds an empty dict first and fills it later, losing our subclass).
    _loader.add_constructor(
        "tag:yaml.org,2002:map", lambda loader, node: loader.construct_mapping(node, deep=True)
    )
    # A float is kept as the text written: `0.1` or `99999999999999.99` through float would be a
    # different number (0.1000000000000000055…, 99999999999999.98), and `bot.plan.validation`
    # parses the text exactly, with the storable range, like any typed number.
    _loader.add_constructor("tag:yaml.org,2002:float", lambda loader, node: loader.construct_scalar(node))
    # An integer too, so it means what it means when typed in Slack: YAML 1.1 reads `017` as octal
    # 15, `0x1F` as 31, `1_000` as 1000 and `1:30` as 90; as text, `017` is 17 and the others are
    # refused at their line as not a number.
    _loader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: loader.construct_scalar(node))


def read_plan(path: Path) -> PlanDocument:
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return parse_yaml(text, path.name)
    if suffix == ".csv":
        return parse_csv(text, path.name)
    document = PlanDocument(path.name)
    document.problems.append(("", "", "unknown_file_type", {"suffix": path.suffix or "(none)"}))
    return document


def _load(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_FastLineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        # Raised again by the pure-Python loader, in the words users have always been shown.
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_yaml(text: str, source: str) -> PlanDocument:
    document = PlanDocument(source)
    try:
        data = _load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        document.problems.append((where, "", "yaml_syntax", {"reason": reason}))
        return document
    if not isinstance(data, dict):
        document.problems.append(("line 1", "", "yaml_not_mapping", {}))
        return document
    for key in data:
        if key not in (*SECTIONS, "goal", "version"):
            document.problems.append((f"line {data.key_lines[key]}", key, "unknown_section", {}))
    if "goal" in data:
        data.setdefault("goals", [])
        data["goals"] = [data["goal"], *data["goals"]]
    for section in SECTIONS:
        entries = data.get(section) or []
        section_line = data.key_lines.get(section) or data.key_lines.get("goal", 1)
        if not isinstance(entries, list):
            document.problems.append((f"line {section_line}", section, "section_not_list", {}))
            continue
        for entry in entries:
            if not isinstance(entry, _LineDict):
                document.problems.append((f"line {section_line}", section, "entry_not_mapping", {}))
                continue
            record = Record(
                where=f"line {entry.line}",
                fields=dict(entry),
                field_where={key: f"line {line}" for key, line in entry.key_lines.items()},
            )
            for name in entry:
                if name not in FIELDS[section]:
                    document.problems.append(
                        (record.at(name), name, "unknown_field", _allowed(FIELDS[section]))
                    )
            document.sections[section].append(record)
    return document


# A CSV holds either the KPI table of design §1 (one row per KPI, with its department
# and KFS) or a targets table (kpi, period, target). The header says which.
_KPI_COLUMNS = {"department", "key", "unit", "direction"}
_TARGET_COLUMNS = {"kpi", "period", "target"}
_DEPARTMENT_COLUMNS = {
    "department": "key",
    "department_name_ja": "name_ja",
    "department_name_en": "name_en",
    "channel": "channel",
    "head": "head",
    "locale": "locale",
    "timezone": "timezone",
}
_FACTOR_COLUMNS = {"kfs": "key", "kfs_name_ja": "name_ja", "kfs_name_en": "name_en"}
_CSV_COLUMNS = {
    "kpis": FIELDS["kpis"] | _DEPARTMENT_COLUMNS.keys() | _FACTOR_COLUMNS.keys() | {"amber", "red"},
    "targets": FIELDS["targets"],
}


def _allowed(names: frozenset[str] | set[str]) -> dict[str, str]:
    return {"allowed": tuple(sorted(names))}


def parse_csv(text: str, source: str) -> PlanDocument:
    document = PlanDocument(source)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        document.problems.append(("", "", "csv_syntax", {"reason": str(exc)}))
        return document
    if not rows:
        document.problems.append(("row 1", "", "csv_empty", {}))
        return document
    header = [name.strip().lower() for name in rows[0]]
    if set(header) >= _KPI_COLUMNS:
        kind = "kpis"
    elif set(header) >= _TARGET_COLUMNS:
        kind = "targets"
    else:
        document.problems.append(("row 1", "", "csv_header", {"columns": tuple(header)}))
        return document
    for name in header:
        if name not in _CSV_COLUMNS[kind]:
            document.problems.append(("row 1", name, "unknown_field", _allowed(_CSV_COLUMNS[kind])))
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"row {number}"
        if len(row) != len(header):
            document.problems.append((where, "", "csv_columns", {"expected": len(header), "found": len(row)}))
            continue
        values = {name: cell.strip() for name, cell in zip(header, row, strict=True) if cell.strip()}
        if kind == "targets":
            document.sections["targets"].append(Record(where, values))
            continue
        _add_csv_kpi_row(document, where, values)
    return document


def _add_csv_kpi_row(document: PlanDocument, where: str, values: dict[str, str]) -> None:
    department = {out: values[col] for col, out in _DEPARTMENT_COLUMNS.items() if col in values}
    factor = {out: values[col] for col, out in _FACTOR_COLUMNS.items() if col in values}
    kpi = {
        name: value
        for name, value in values.items()
        if name not in _DEPARTMENT_COLUMNS and name not in _FACTOR_COLUMNS
    }
    kpi["department"] = values.get("department")
    if "kfs" in values:
        kpi["success_factor"] = values["kfs"]
    if "amber" in kpi or "red" in kpi:
        kpi["thresholds"] = {"amber": kpi.pop("amber", None), "red": kpi.pop("red", None)}
    document.sections["kpis"].append(Record(where, kpi))
    # Departments and KFS are repeated on every row; keep each once, with its first row.
    if department.get("key"):
        _merge_once(document, "departments", where, department)
    if factor.get("key"):
        _merge_once(document, "success_factors", where, factor)


def _merge_once(document: PlanDocument, section: str, where: str, values: dict[str, str]) -> None:
    for record in document.sections[section]:
        if record.fields["key"] == values["key"]:
            for name, value in values.items():
                if record.fields.setdefault(name, value) != value:
                    document.problems.append(
                        (where, name, "csv_conflict", {"entry": values["key"], "first": record.where})
                    )
            return
    document.sections[section].append(Record(where, dict(values)))
