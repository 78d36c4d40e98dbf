"""The KPI plan: validate a plan file completely, then write it in one transaction.

Import is idempotent: departments, goals, KFS and KPIs are matched by key and targets by
(KPI, period), so importing the same file twice changes nothing the second time, not even the
audit trail (an import is audited only when it changed something). Counts are by table name.
Nothing is ever deleted by an import; KPIs carry history.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from sqlmodel import Session, col, select

from bot import render
from bot.alerts.rules import STREAK_DEFAULT, STREAK_RANGE
from bot.clock import utcnow
from bot.config import LOCALES
from bot.formulas import FormulaError, parse_formula
from bot.models import (
    EVERY_PERIOD,
    Aggregation,
    AuditEvent,
    Cadence,
    Department,
    Direction,
    FunnelStage,
    Goal,
    Kpi,
    KpiKind,
    SuccessFactor,
    Target,
    Unit,
)
from bot.numbers import NumberFormatError, check_storable, parse_amount
from bot.periods import PeriodError, parse_key
from bot.plan.file import PlanDocument, Record, read_plan
from bot.plan.retired import read_retired, retire_as_written
from bot.scoring import TargetValue, default_thresholds, threshold_problem
from bot.sources import registry
from bot.sources.fetching import SpecError
from bot.sources.freshness import EVERY_RANGE, MAX_AGE_RANGE, DurationError, parse_duration
from bot.text import clean_text

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CHANNEL_PATTERN = re.compile(r"^[CG][A-Z0-9]{2,31}$")
USER_PATTERN = re.compile(r"^[UW][A-Z0-9]{2,31}$")
PLAYBOOK_TEXT_MAX = 500
PLAYBOOK_DUE_DAYS = 14
_RANGE = re.compile(r"^\s*(.+?)\s*(?:–|—|〜|~|～|(?<=\S)-)\s*(.+?)\s*$")

E = TypeVar("E", bound=enum.StrEnum)

# What people write in plan files, besides the enum values themselves.
ALIASES: dict[type[enum.StrEnum], dict[str, str]] = {
    Unit: {
        "%": "percent",
        "pct": "percent",
        "件": "count",
        "人": "count",
        "回": "count",
        "社": "count",
        "円": "jpy",
        "¥": "jpy",
        "yen": "jpy",
        "$": "usd",
        "点": "score",
        "h": "hours",
        "時間": "hours",
        "日": "days",
    },
    Direction: {"up": "higher", "高いほど良い": "higher", "down": "lower", "低いほど良い": "lower"},
    Cadence: {"week": "weekly", "週次": "weekly", "month": "monthly", "月次": "monthly"},
    KpiKind: {"プロセス": "process", "結果": "result"},
    Aggregation: {
        "total": "sum",
        "合計": "sum",
        "avg": "average",
        "mean": "average",
        "平均": "average",
        "latest": "last",
        "最新": "last",
    },
}


@dataclass(frozen=True)
class Problem:
    where: str
    field: str
    code: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self, locale: str) -> str:
        """「81 行目、`unit`: …」 / "line 81, `unit`: …": the place and every list in the reader's
        language (a problem is found before anyone knows who will read it)."""
        place = [part for part in (place_text(self.where, locale), self.field and f"`{self.field}`") if part]
        params = {
            name: place_text(value, locale) if name == "first" else _listed(value, locale)
            for name, value in self.params.items()
        }
        text = render.message(f"plan.{self.code}", locale, **params)
        return f"{render.message('cli.listing', locale, items=place)}: {text}" if place else text


_PLACE = re.compile(r"(line|row) (\d+)")


def place_text(where: str, locale: str) -> str:
    """A problem's place as stored ("line 82", "row 3") as the reader reads it: 「82 行目」."""
    match = _PLACE.fullmatch(where)
    return render.message(f"cli.where.{match[1]}", locale, number=match[2]) if match else where


def _listed(value: Any, locale: str) -> Any:
    """A tuple parameter (the allowed units, the CSV's columns) joined as the locale writes a list."""
    return render.message("cli.listing", locale, items=value) if isinstance(value, tuple) else value


class PlanInvalid(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems


@dataclass
class DepartmentSpec:
    key: str
    name_ja: str
    name_en: str
    channel_id: str | None
    head_user_id: str | None
    locale: str
    timezone: str
    digest_cron: str
    fiscal_year_start_month: int
    holiday_shift: bool
    is_division: bool
    # Columns the file wrote; others keep their stored value (a KPI CSV names each row's
    # department by key alone, which must not reset its names and channel).
    given: frozenset[str] | None = None


@dataclass
class GoalSpec:
    key: str
    name_ja: str
    name_en: str
    target_value: Decimal
    unit: Unit
    fiscal_year: int
    measure_key: str | None = None  # the KPI whose fiscal-year total measures the goal


@dataclass
class FactorSpec:
    key: str
    goal_key: str | None
    name_ja: str
    name_en: str
    given: frozenset[str] | None = None


@dataclass
class KpiSpec:
    key: str
    department_key: str
    factor_key: str | None
    name_ja: str
    name_en: str
    owner_user_id: str | None
    unit: Unit
    direction: Direction
    cadence: Cadence
    kind: KpiKind
    aggregation: Aggregation
    amber_pct: Decimal
    red_pct: Decimal
    formula: str | None
    position: int
    streak: int = STREAK_DEFAULT
    playbooks: list[dict[str, Any]] = field(default_factory=list)
    fetch: FetchSpec | None = None
    retired: dt.date | None = None  # bot/plan/retired.py


@dataclass(frozen=True)
class FetchSpec:
    """`source:` (its kind's fields, checked by the kind), `every` and `max_age` in seconds."""

    source: dict[str, Any]
    every_s: int | None = None
    max_age_s: int | None = None


@dataclass
class TargetSpec:
    kpi_key: str
    period: str
    target: TargetValue
    where: str = ""


@dataclass
class FunnelSpec:
    """A funnel stage: its KPI, the planned conversion into it from the stage before (%, None: from
    the stages' targets), and under what % of that plan the hand-off leaks."""

    kpi_key: str
    conversion_pct: Decimal | None
    leak_pct: Decimal
    where: str = ""


@dataclass
class Plan:
    source: str
    departments: list[DepartmentSpec] = field(default_factory=list)
    goals: list[GoalSpec] = field(default_factory=list)
    factors: list[FactorSpec] = field(default_factory=list)
    kpis: list[KpiSpec] = field(default_factory=list)
    targets: list[TargetSpec] = field(default_factory=list)
    funnel: list[FunnelSpec] = field(default_factory=list)


@dataclass(frozen=True)
class KnownKpi:
    cadence: Cadence
    formula: str | None


@dataclass
class Existing:
    """Keys already in the database, which a partial plan file may refer to."""

    departments: set[str] = field(default_factory=set)
    goals: set[str] = field(default_factory=set)
    factors: set[str] = field(default_factory=set)
    kpis: dict[str, KnownKpi] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> Existing:
        return cls(
            departments=set(session.exec(select(Department.key)).all()),
            goals=set(session.exec(select(Goal.key)).all()),
            factors=set(session.exec(select(SuccessFactor.key)).all()),
            kpis={
                key: KnownKpi(cadence, formula)
                for key, cadence, formula in session.exec(select(Kpi.key, Kpi.cadence, Kpi.formula)).all()
            },
        )


@dataclass
class ImportResult:
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)  # (entity, key) → outcome

    def count(self, entity: str, outcome: str, key: str | None = None) -> None:
        if key is not None:
            previous = self.outcomes.get((entity, key))
            if previous is not None:
                # A second write to the same row: it counts once, as its strongest outcome.
                if previous != "unchanged" or outcome == "unchanged":
                    return
                self.counts[entity][previous] -= 1
            self.outcomes[(entity, key)] = outcome
        self.counts.setdefault(entity, Counter())[outcome] += 1

    @property
    def changed(self) -> bool:
        return any(counter["created"] or counter["updated"] for counter in self.counts.values())


class _Reader:
    """Reads typed values out of records, collecting a Problem for each bad one."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, record: Record, name: str, code: str, **params: Any) -> None:
        self.problems.append(Problem(record.at(name), name, code, params))

    def text(self, record: Record, name: str, *, required: bool = False, max_length: int = 200) -> str | None:
        value = record.fields.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.problem(record, name, "missing")
            return None
        if isinstance(value, dict | list):
            self.problem(record, name, "not_text")
            return None
        text = str(value).strip()
        # Refused, not stripped: a key or channel id with a NUL in it is a mistake to fix, and
        # PostgreSQL would refuse the whole import over it.
        removed = clean_text(text).removed
        if removed:
            self.problem(record, name, "control_characters", count=removed)
            return None
        if len(text) > max_length:
            self.problem(record, name, "too_long", max=max_length)
            return None
        return text

    def key(self, record: Record, name: str = "key", *, required: bool = True) -> str | None:
        key = self.text(record, name, required=required, max_length=64)
        if key is not None and not KEY_PATTERN.match(key):
            self.problem(record, name, "bad_key", value=key)
            return None
        return key

    def names(self, record: Record) -> tuple[str, str] | None:
        """Japanese and English names: `name: {ja, en}`, `name_ja`/`name_en`, or one `name` for both."""
        raw = record.fields.get("name")
        if isinstance(raw, dict):
            ja, en = raw.get("ja"), raw.get("en")
        else:
            ja = record.fields.get("name_ja", raw)
            en = record.fields.get("name_en", raw)
        ja = str(ja).strip() if ja not in (None, "") else None
        en = str(en).strip() if en not in (None, "") else None
        if ja is None and en is None:
            self.problem(record, "name", "missing")
            return None
        for value in (ja, en):
            if value is not None and clean_text(value).removed:
                self.problem(record, "name", "control_characters", count=clean_text(value).removed)
                return None
            if value is not None and len(value) > 200:
                self.problem(record, "name", "too_long", max=200)
                return None
        return ja or en or "", en or ja or ""

    def choice(self, record: Record, name: str, enum_type: type[E], default: E | None = None) -> E | None:
        raw = record.fields.get(name)
        if raw is None or raw == "":
            if default is None:
                self.problem(record, name, "missing")
            return default
        text = str(raw).strip()
        value = ALIASES.get(enum_type, {}).get(text, text.lower())
        try:
            return enum_type(value)
        except ValueError:
            allowed = tuple(member.value for member in enum_type)
            self.problem(record, name, f"unknown_{enum_type.__name__.lower()}", value=text, allowed=allowed)
            return None

    def number(self, record: Record, name: str, raw: Any = None) -> Decimal | None:
        raw = record.fields.get(name) if raw is None else raw
        if isinstance(raw, bool):
            self.problem(record, name, "not_a_number", value=raw)
            return None
        # The one storable range (bot/numbers.py): outside it a value would fail on PostgreSQL, or be
        # rounded on the way in and then look "updated" on every re-import. YAML floats arrive as
        # their text (bot/plan/file.py), so nothing here has passed through a float.
        try:
            return check_storable(raw) if isinstance(raw, int) else parse_amount(str(raw)).value
        except NumberFormatError as error:
            if error.code in ("too_large", "too_precise"):
                self.problem(record, name, "number_unstorable", value=raw)
            else:
                self.problem(record, name, "not_a_number", value=raw)
            return None

    def target(self, record: Record, name: str) -> TargetValue | None:
        """`100`, `1.2万`, `15%`, a range `15-20` / `15〜20 %`, or `{min: 15, max: 20}`."""
        raw = record.fields.get(name)
        if isinstance(raw, dict):
            low, high = self.number(record, name, raw.get("min")), self.number(record, name, raw.get("max"))
        elif isinstance(raw, str) and (match := _RANGE.match(raw.replace("%", "").replace("％", ""))):
            low, high = self.number(record, name, match[1]), self.number(record, name, match[2])
        else:
            value = self.number(record, name, raw)
            return None if value is None else TargetValue.exact(value)
        if low is None or high is None:
            return None
        if low > high:
            self.problem(record, name, "range_order", low=low, high=high)
            return None
        return TargetValue(low, high)

    def flag(self, record: Record, name: str) -> bool | None:
        """yes/no: YAML booleans, or true/false/yes/no/1/0 written as text (CSV)."""
        raw = record.fields.get(name)
        if raw is None or raw == "":
            return False
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "yes", "1", "はい"):
            return True
        if text in ("false", "no", "0", "いいえ"):
            return False
        self.problem(record, name, "not_a_flag", value=raw)
        return None

    def whole(self, record: Record, name: str, low: int, high: int, default: int | None = None) -> int | None:
        raw = record.fields.get(name)
        if raw is None or raw == "":
            if default is None:
                self.problem(record, name, "missing")
            return default
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            self.problem(record, name, "out_of_range", low=low, high=high, value=raw)
            return None
        return value

    def slack_id(self, record: Record, name: str, pattern: re.Pattern[str], code: str) -> str | None:
        value = self.text(record, name, max_length=32)
        if value is not None and not pattern.match(value):
            self.problem(record, name, code, value=value)
            return None
        return value

    def unique(self, records: list[Record], name: str = "key") -> None:
        first_seen: dict[Any, Record] = {}
        for record in records:
            value = record.fields.get(name)
            if value is None:
                continue
            if value in first_seen:
                self.problem(record, name, "duplicate_key", value=value, first=first_seen[value].where)
            else:
                first_seen[value] = record


def validate(document: PlanDocument, existing: Existing) -> Plan:
    """Turn a read plan into specs, or raise PlanInvalid listing every problem at once."""
    reader = _Reader()
    reader.problems.extend(Problem(w, f, c, p) for w, f, c, p in document.problems)
    plan = Plan(document.source)
    sections = document.sections
    for section in ("departments", "goals", "success_factors", "kpis"):
        reader.unique(sections[section])
    # Keys the file writes exist for references even when their entry has a problem: that
    # problem is reported at the entry, not again as "unknown" wherever the key is used.
    written = {
        section: {record.fields.get("key") for record in sections[section]} - {None}
        for section in ("departments", "goals", "success_factors", "kpis")
    }

    for record in sections["departments"]:
        spec = _department(reader, record)
        if spec:
            plan.departments.append(spec)
    for record in sections["goals"]:
        spec = _goal(reader, record)
        if spec:
            plan.goals.append(spec)
    goal_keys = existing.goals | {g.key for g in plan.goals} | written["goals"]
    for record in sections["success_factors"]:
        spec = _factor(reader, record, goal_keys)
        if spec:
            plan.factors.append(spec)

    department_keys = existing.departments | written["departments"]
    factor_keys = existing.factors | written["success_factors"]
    for position, record in enumerate(sections["kpis"]):
        spec = _kpi(reader, record, position, department_keys, factor_keys)
        if spec:
            plan.kpis.append(spec)
            if record.fields.get("target") not in (None, ""):
                target = reader.target(record, "target")
                if target:
                    plan.targets.append(TargetSpec(spec.key, EVERY_PERIOD, target, record.at("target")))

    known = dict(existing.kpis)
    known.update({k.key: KnownKpi(k.cadence, k.formula) for k in plan.kpis})
    goal_records = {record.fields.get("key"): record for record in sections["goals"]}
    for goal in plan.goals:
        if goal.measure_key is not None and goal.measure_key not in known.keys() | written["kpis"]:
            reader.problem(goal_records[goal.key], "measure", "unknown_kpi", value=goal.measure_key)
    kpi_records = {record.fields.get("key"): record for record in sections["kpis"]}
    _check_formulas(reader, plan.kpis, known.keys() | written["kpis"], known, kpi_records)
    for record in sections["targets"]:
        spec = _target(reader, record, known, known.keys() | written["kpis"])
        if spec:
            plan.targets.append(spec)
    seen_targets: dict[tuple[str, str], str] = {}
    for spec in plan.targets:
        first = seen_targets.setdefault((spec.kpi_key, spec.period), spec.where)
        if first != spec.where:
            reader.problems.append(
                Problem(
                    spec.where,
                    "period",
                    "duplicate_target",
                    {"kpi": spec.kpi_key, "period": spec.period, "first": first},
                )
            )

    plan.funnel = _funnel(reader, sections["funnel"], known, known.keys() | written["kpis"])
    if reader.problems:
        raise PlanInvalid(document.source, reader.problems)
    return plan


FUNNEL_LEAK_DEFAULT = Decimal(90)


def _funnel(
    reader: _Reader, records: list[Record], known: dict[str, KnownKpi], kpi_keys: set[Any]
) -> list[FunnelSpec]:
    """The funnel's stages: known KPIs, each once (a stage twice would make a cycle), one cadence."""
    stages: list[FunnelSpec] = []
    seen: dict[str, str] = {}
    cadence: tuple[Cadence, str] | None = None
    for position, record in enumerate(records):
        before = len(reader.problems)
        key = reader.key(record, "kpi")
        if key is not None and key not in kpi_keys:
            reader.problem(record, "kpi", "unknown_kpi", value=key)
        elif key is not None and key in seen:
            reader.problem(record, "kpi", "funnel_cycle", kpi=key, first=seen[key])
        elif key is not None and key in known:
            if cadence is None:
                cadence = (known[key].cadence, key)
            elif known[key].cadence is not cadence[0]:
                reader.problem(
                    record,
                    "kpi",
                    "funnel_cadence",
                    kpi=key,
                    cadence=known[key].cadence.value,
                    first=cadence[1],
                    first_cadence=cadence[0].value,
                )
        conversion = None
        if record.fields.get("conversion") not in (None, ""):
            conversion = reader.number(record, "conversion")
            if position == 0 and conversion is not None:
                reader.problem(record, "conversion", "funnel_first_conversion")
            elif conversion is not None and not 0 < conversion <= 1000:
                reader.problem(record, "conversion", "funnel_conversion_range", value=conversion)
        leak = FUNNEL_LEAK_DEFAULT
        if record.fields.get("leak_below") not in (None, ""):
            leak = reader.number(record, "leak_below") or FUNNEL_LEAK_DEFAULT
            if not 0 < leak <= 100:
                reader.problem(record, "leak_below", "funnel_leak_range", value=leak)
        if key is not None:
            seen.setdefault(key, record.where)
        if len(reader.problems) == before and key is not None:
            stages.append(FunnelSpec(key, conversion, leak, record.where))
    if len(records) == 1:
        reader.problem(records[0], "kpi", "funnel_too_short")
    return stages


def _department(reader: _Reader, record: Record) -> DepartmentSpec | None:
    before = len(reader.problems)
    key = reader.key(record)
    names = reader.names(record) if "name" in record.fields or "name_ja" in record.fields else (key, key)
    locale = reader.text(record, "locale") or "ja"
    if locale not in LOCALES:
        reader.problem(record, "locale", "unknown_locale", value=locale, allowed=tuple(LOCALES))
    timezone = reader.text(record, "timezone") or "Asia/Tokyo"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        reader.problem(record, "timezone", "unknown_timezone", value=timezone)
    cron = reader.text(record, "digest_cron", max_length=64) or "0 9 * * mon"
    try:
        CronTrigger.from_crontab(cron)
    except ValueError:
        reader.problem(record, "digest_cron", "bad_cron", value=cron)
    channel = reader.slack_id(record, "channel", CHANNEL_PATTERN, "bad_channel")
    head = reader.slack_id(record, "head", USER_PATTERN, "bad_user")
    start_month = reader.whole(record, "fiscal_year_start_month", 1, 12, default=4)
    holiday_shift = reader.flag(record, "holiday_shift")
    is_division = reader.flag(record, "division")
    if len(reader.problems) > before or key is None or names is None or start_month is None:
        return None
    return DepartmentSpec(
        key,
        names[0] or key,
        names[1] or key,
        channel,
        head,
        locale,
        timezone,
        cron,
        start_month,
        bool(holiday_shift),
        bool(is_division),
        _given(record, {"channel": "channel_id", "head": "head_user_id", "division": "is_division"}),
    )


def _goal(reader: _Reader, record: Record) -> GoalSpec | None:
    before = len(reader.problems)
    key = reader.key(record)
    names = reader.names(record)
    target = reader.number(record, "target")
    unit = reader.choice(record, "unit", Unit)
    year = reader.whole(record, "fiscal_year", 2000, 2100)
    measure = reader.key(record, "measure", required=False)
    if len(reader.problems) > before or None in (key, names, target, unit, year):
        return None
    assert key and names and target is not None and unit and year
    return GoalSpec(key, names[0], names[1], target, unit, year, measure)


def _factor(reader: _Reader, record: Record, goal_keys: set[str]) -> FactorSpec | None:
    before = len(reader.problems)
    key = reader.key(record)
    names = reader.names(record) if "name" in record.fields or "name_ja" in record.fields else (key, key)
    goal = reader.key(record, "goal", required=False)
    if goal is None and len(goal_keys) == 1:
        goal = next(iter(goal_keys))
    elif goal is not None and goal not in goal_keys:
        reader.problem(record, "goal", "unknown_goal", value=goal)
    if len(reader.problems) > before or key is None or names is None:
        return None
    return FactorSpec(key, goal, names[0] or key, names[1] or key, _given(record, {"goal": "goal_id"}))


def _given(record: Record, columns: dict[str, str]) -> frozenset[str]:
    """The columns a record writes: its fields, renamed where field and column differ."""
    names = {"name": ("name_ja", "name_en"), "name_ja": ("name_ja",), "name_en": ("name_en",)}
    given: set[str] = set()
    for name in record.fields:
        given.update(names.get(name, (columns.get(name, name),)))
    return frozenset(given)


def _kpi(
    reader: _Reader, record: Record, position: int, department_keys: set[str], factor_keys: set[str]
) -> KpiSpec | None:
    before = len(reader.problems)
    key = reader.key(record)
    names = reader.names(record)
    department = reader.key(record, "department")
    if department is not None and department not in department_keys:
        reader.problem(record, "department", "unknown_department", value=department)
    factor = reader.key(record, "success_factor", required=False)
    if factor is not None and factor not in factor_keys:
        reader.problem(record, "success_factor", "unknown_factor", value=factor)
    owner = reader.slack_id(record, "owner", USER_PATTERN, "bad_user")
    unit = reader.choice(record, "unit", Unit)
    direction = reader.choice(record, "direction", Direction)
    cadence = reader.choice(record, "cadence", Cadence)
    kind = reader.choice(record, "kind", KpiKind, default=KpiKind.RESULT)
    default_aggregation = Aggregation.AVERAGE if unit in (Unit.PERCENT, Unit.SCORE) else Aggregation.SUM
    aggregation = reader.choice(record, "aggregation", Aggregation, default=default_aggregation)
    formula = reader.text(record, "formula", max_length=500)
    amber = red = None
    if direction is not None:
        amber, red = _thresholds(reader, record, direction)
    streak = reader.whole(record, "streak", *STREAK_RANGE, default=STREAK_DEFAULT)
    playbooks = _playbooks(reader, record)
    fetch = _fetch(reader, record, formula)
    if len(reader.problems) > before:
        return None
    assert key and names and department and unit and direction and cadence and kind and aggregation
    assert amber is not None and red is not None
    return KpiSpec(
        key,
        department,
        factor,
        names[0],
        names[1],
        owner,
        unit,
        direction,
        cadence,
        kind,
        aggregation,
        amber,
        red,
        formula,
        position,
        streak or STREAK_DEFAULT,
        playbooks,
        fetch,
        retired=read_retired(record, reader.problem),
    )


def _fetch(reader: _Reader, record: Record, formula: str | None) -> FetchSpec | None:
    """`source:` — where the KPI's value is fetched from (bot/sources/registry.py names the kinds),
    checked by its kind now so a plan that cannot be fetched is refused at its line; `every` and
    `max_age` (e.g. `1h`, `26h`) only with a source. A secret never comes from here: each kind
    names the environment variable that holds it."""
    raw = record.fields.get("source")
    durations: dict[str, int | None] = {}
    for name in ("every", "max_age"):
        text = record.fields.get(name)
        durations[name] = None
        if text is None:
            continue
        if raw is None:
            reader.problem(record, name, "source_needed")
            continue
        try:
            durations[name] = parse_duration(str(text), EVERY_RANGE if name == "every" else MAX_AGE_RANGE)
        except DurationError as error:
            reader.problem(record, name, "source_duration", value=str(text), low=error.low, high=error.high)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        reader.problem(record, "source", "source_shape")
        return None
    if formula:
        reader.problem(record, "source", "source_formula")
        return None
    source = json.loads(json.dumps(raw))  # plain JSON, as stored (the loader's mappings carry lines)
    try:
        registry.validate(source)
    except SpecError as error:
        reader.problem(record, "source", "source_invalid", reason=str(error))
        return None
    return FetchSpec(source, durations["every"], durations["max_age"])


def _playbooks(reader: _Reader, record: Record) -> list[dict[str, Any]]:
    """`playbook:` — what the team agreed to do when the KPI is amber or red: one entry or a list,
    each `{text, owner, due_days}` (or just the text). Stored as plain JSON on the KPI."""
    raw = record.fields.get("playbook")
    if raw is None:
        return []
    entries = raw if isinstance(raw, list) else [raw]
    found: list[dict[str, Any]] = []
    for entry in entries:
        item = Record(record.at("playbook"), entry if isinstance(entry, dict) else {"text": entry})
        if not set(item.fields) <= {"text", "owner", "due_days"}:
            reader.problem(record, "playbook", "playbook_shape")
            continue
        before = len(reader.problems)
        text = _playbook_text(reader, item)
        if text is None:
            if len(reader.problems) == before:
                reader.problem(record, "playbook", "playbook_no_text")
            continue
        owner = reader.slack_id(item, "owner", USER_PATTERN, "bad_user")
        due_days = reader.whole(item, "due_days", 1, 365, default=PLAYBOOK_DUE_DAYS)
        found.append({"text": text, "owner": owner, "due_days": due_days})
    return found


def _playbook_text(reader: _Reader, item: Record) -> str | dict[str, str] | None:
    """A playbook's `text:` — one string for every language, or per language `{ja: …, en: …}`
    (a language left out shows the other's). An unknown language or an empty text is a problem."""
    raw = item.fields.get("text")
    if not isinstance(raw, dict):
        return reader.text(item, "text", max_length=PLAYBOOK_TEXT_MAX)
    unknown = [str(locale) for locale in raw if locale not in LOCALES]
    if unknown:
        allowed = ", ".join(LOCALES)
        reader.problem(item, "playbook", "playbook_unknown_locale", value=", ".join(unknown), allowed=allowed)
        return None
    texts = {}
    by_locale = Record(item.at("text"), raw)
    for locale in LOCALES:
        if locale not in raw:
            continue
        before = len(reader.problems)
        text = reader.text(by_locale, locale, max_length=PLAYBOOK_TEXT_MAX)
        if text is None:
            if len(reader.problems) == before:
                reader.problem(item, "playbook", "playbook_no_text")
            return None
        texts[locale] = text
    return texts or None


def _thresholds(
    reader: _Reader, record: Record, direction: Direction
) -> tuple[Decimal | None, Decimal | None]:
    amber, red = default_thresholds(direction)
    raw = record.fields.get("thresholds")
    if raw is None:
        return amber, red
    if not isinstance(raw, dict) or not set(raw) <= {"amber", "red"}:
        reader.problem(record, "thresholds", "thresholds_shape")
        return None, None
    if raw.get("amber") not in (None, ""):
        amber = reader.number(record, "thresholds", raw["amber"])
    if raw.get("red") not in (None, ""):
        red = reader.number(record, "thresholds", raw["red"])
    if amber is None or red is None:
        return None, None
    code = threshold_problem(direction, amber, red)
    if code:
        reader.problem(record, "thresholds", code, amber=amber, red=red, direction=direction.value)
        return None, None
    return amber, red


def _check_formulas(
    reader: _Reader,
    kpis: list[KpiSpec],
    kpi_keys: set[Any],
    known: dict[str, KnownKpi],
    records: dict[Any, Record],
) -> None:
    dependencies: dict[str, frozenset[str]] = {}
    for key, info in known.items():
        if info.formula:
            try:
                dependencies[key] = parse_formula(info.formula).names
            except FormulaError:
                dependencies[key] = frozenset()
    for spec in kpis:
        if not spec.formula:
            continue
        record = records[spec.key]
        try:
            formula = parse_formula(spec.formula)
        except FormulaError as exc:
            reader.problem(record, "formula", f"formula_{exc.code}", detail=exc.detail)
            dependencies.pop(spec.key, None)
            continue
        for name in sorted(formula.names - kpi_keys):
            reader.problem(record, "formula", "formula_unknown_kpi", kpi=name)
        if spec.key in formula.names:
            reader.problem(record, "formula", "formula_cycle", path=spec.key)
    for spec in kpis:
        path = _cycle_from(spec.key, dependencies)
        if path and len(path) > 2:
            reader.problem(records[spec.key], "formula", "formula_cycle", path=" → ".join(path))
    _check_formula_cadences(reader, kpis, known, dependencies, records)


def _check_formula_cadences(
    reader: _Reader,
    kpis: list[KpiSpec],
    known: dict[str, KnownKpi],
    dependencies: dict[str, frozenset[str]],
    records: dict[Any, Record],
) -> None:
    """A formula only combines values of one period, so its inputs must share its cadence: a monthly
    KPI calculated from a weekly one would never have a value. Reported at the formula when the file
    writes the derived KPI, else at the `cadence` of the input the file changes."""
    in_file = {spec.key for spec in kpis}
    derived = [spec.key for spec in kpis] + sorted(key for key in dependencies if key not in in_file)
    for key in derived:
        for name in sorted(dependencies.get(key, ())):
            info, used = known[key], known.get(name)
            if used is None or used.cadence is info.cadence:
                continue
            if key in in_file:
                record, at = records[key], "formula"
            elif name in in_file:
                record, at = records[name], "cadence"
            else:
                continue  # both already stored: not this file's doing
            reader.problem(
                record,
                at,
                "formula_cadence",
                kpi=key,
                cadence=info.cadence.value,
                input=name,
                input_cadence=used.cadence.value,
            )


def _cycle_from(start: str, dependencies: dict[str, frozenset[str]]) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        node, path = stack.pop()
        for child in sorted(dependencies.get(node, ())):
            if child == start:
                return [*path, child]
            if child not in visited:
                visited.add(child)
                stack.append((child, [*path, child]))
    return None


def _target(
    reader: _Reader, record: Record, known: dict[str, KnownKpi], kpi_keys: set[Any]
) -> TargetSpec | None:
    before = len(reader.problems)
    kpi_key = reader.key(record, "kpi")
    if kpi_key is not None and kpi_key not in kpi_keys:
        reader.problem(record, "kpi", "unknown_kpi", value=kpi_key)
    period_text = reader.text(record, "period", max_length=16) or EVERY_PERIOD
    period = EVERY_PERIOD
    if period_text != EVERY_PERIOD:
        try:
            parsed = parse_key(period_text)
        except PeriodError:
            reader.problem(record, "period", "bad_period", value=period_text)
        else:
            period = parsed.key
            if kpi_key in known and parsed.cadence is not known[kpi_key].cadence:
                reader.problem(
                    record,
                    "period",
                    "period_cadence",
                    value=period_text,
                    cadence=known[kpi_key].cadence.value,
                )
    name = next((n for n in ("target", "value") if n in record.fields), None)
    target = None
    if name is None and "min" in record.fields:
        target = reader.target(
            Record(record.where, {"target": {k: record.fields.get(k) for k in ("min", "max")}}), "target"
        )
    elif name is None:
        reader.problem(record, "target", "missing")
    else:
        target = reader.target(record, name)
    if len(reader.problems) > before or kpi_key is None or target is None:
        return None
    return TargetSpec(kpi_key, period, target, record.where)


def load_plan(path: Path, session: Session) -> Plan:
    return validate(read_plan(path), Existing.load(session))


def apply_plan(session: Session, plan: Plan, *, actor: str = "cli") -> ImportResult:
    """Write a validated plan. The caller owns the transaction: all of it lands, or none."""
    result = ImportResult()
    goals = _upsert_all(
        session,
        result,
        Goal,
        plan.goals,
        lambda s: {
            "name_ja": s.name_ja,
            "name_en": s.name_en,
            "target_value": s.target_value,
            "unit": s.unit,
            "fiscal_year": s.fiscal_year,
        },
    )
    departments = _upsert_all(
        session,
        result,
        Department,
        plan.departments,
        lambda s: {f.name: getattr(s, f.name) for f in fields(DepartmentSpec) if f.name != "key"},
    )
    goal_ids = _ids(session, Goal, goals)
    factors = _upsert_all(
        session,
        result,
        SuccessFactor,
        plan.factors,
        lambda s: {
            "name_ja": s.name_ja,
            "name_en": s.name_en,
            "goal_id": goal_ids.get(s.goal_key),
        },
    )
    department_ids = _ids(session, Department, departments)
    factor_ids = _ids(session, SuccessFactor, factors)
    kpis = _upsert_all(
        session,
        result,
        Kpi,
        plan.kpis,
        lambda s: {
            "name_ja": s.name_ja,
            "name_en": s.name_en,
            "department_id": department_ids[s.department_key],
            "success_factor_id": factor_ids.get(s.factor_key),
            "owner_user_id": s.owner_user_id,
            "unit": s.unit,
            "direction": s.direction,
            "cadence": s.cadence,
            "kind": s.kind,
            "aggregation": s.aggregation,
            "amber_pct": s.amber_pct,
            "red_pct": s.red_pct,
            "formula": s.formula,
            "position": s.position,
            "streak": s.streak,
            "playbooks": s.playbooks,
            "fetch_source": s.fetch.source if s.fetch else None,
            "fetch_every_s": s.fetch.every_s if s.fetch else None,
            "fetch_max_age_s": s.fetch.max_age_s if s.fetch else None,
        },
    )
    retire_as_written(session, plan.kpis, kpis, result.count)
    kpi_ids = _ids(session, Kpi, kpis)
    # A goal's measure may be a KPI created just now, so goals are linked once KPIs have ids.
    for spec in plan.goals:
        if _update(goals[spec.key], {"kpi_id": kpi_ids.get(spec.measure_key)}):
            result.count("goal", "updated", spec.key)
    existing_targets = {
        (t.kpi_id, t.period): t
        for t in session.exec(select(Target).where(Target.kpi_id.in_(set(kpi_ids.values())))).all()  # type: ignore[attr-defined]
    }
    entity = Target.__tablename__
    for spec in plan.targets:
        values = _target_columns(spec.target)
        row = existing_targets.get((kpi_ids[spec.kpi_key], spec.period))
        if row is None:
            session.add(Target(kpi_id=kpi_ids[spec.kpi_key], period=spec.period, **values))
            result.count(entity, "created")
        elif _update(row, values):
            result.count(entity, "updated")
        else:
            result.count(entity, "unchanged")
    _write_funnel(session, result, plan.funnel, kpi_ids)
    if result.changed:  # a re-import that changes nothing leaves no trace
        session.add(
            AuditEvent(
                actor=actor,
                action="plan.imported",
                entity="plan",
                entity_id=plan.source[:64],  # the column's length; a file name may be longer
                source="import",
                details={entity: dict(counter) for entity, counter in result.counts.items()},
            )
        )
    session.flush()
    return result


def _write_funnel(
    session: Session, result: ImportResult, funnel: list[FunnelSpec], kpi_ids: dict[str | None, int]
) -> None:
    """A file with a funnel replaces the stored one (stages are a definition, not history); a file
    without one leaves it as it is."""
    if not funnel:
        return
    wanted = [
        (position, kpi_ids[spec.kpi_key], spec.conversion_pct, spec.leak_pct)
        for position, spec in enumerate(funnel)
    ]
    stored = session.exec(select(FunnelStage).order_by(col(FunnelStage.position))).all()
    current = [
        (
            row.position,
            row.kpi_id,
            None if row.conversion_pct is None else Decimal(row.conversion_pct),
            Decimal(row.leak_pct),
        )
        for row in stored
    ]
    if current == wanted:
        result.count("funnel_stage", "unchanged")
        return
    for row in stored:
        session.delete(row)
    session.flush()
    for position, kpi_id, conversion, leak in wanted:
        session.add(FunnelStage(position=position, kpi_id=kpi_id, conversion_pct=conversion, leak_pct=leak))
    result.count("funnel_stage", "updated" if stored else "created")


def _target_columns(target: TargetValue) -> dict[str, Decimal | None]:
    if target.is_range:
        return {"value": None, "min_value": target.low, "max_value": target.high}
    return {"value": target.low, "min_value": None, "max_value": None}


ModelT = TypeVar("ModelT", Department, Goal, SuccessFactor, Kpi)


def _upsert_all(
    session: Session, result: ImportResult, model: type[ModelT], specs: list[Any], columns: Any
) -> dict[str, ModelT]:
    keys = [spec.key for spec in specs]
    rows = {row.key: row for row in session.exec(select(model).where(model.key.in_(keys))).all()}  # type: ignore[attr-defined]
    entity = model.__tablename__
    for spec in specs:
        values = columns(spec)
        row = rows.get(spec.key)
        if row is None:
            row = model(key=spec.key, **values)
            session.add(row)
            rows[spec.key] = row
            result.count(entity, "created", spec.key)
            continue
        given = getattr(spec, "given", None)
        if given is not None:
            values = {name: value for name, value in values.items() if name in given}
        result.count(entity, "updated" if _update(row, values) else "unchanged", spec.key)
    session.flush()
    return rows


def _ids(session: Session, model: type[ModelT], rows: dict[str, ModelT]) -> dict[str | None, int]:
    """Ids by key for rows just written plus every row already stored (partial plans refer to them)."""
    ids: dict[str | None, int] = {
        key: row_id for key, row_id in session.exec(select(model.key, model.id)).all()
    }  # type: ignore[arg-type]
    ids.update({key: row.id for key, row in rows.items() if row.id is not None})
    return ids


def _update(row: Any, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        current = getattr(row, name)
        if isinstance(value, Decimal) and current is not None:
            same = Decimal(current) == value
        else:
            same = current == value
        if not same:
            setattr(row, name, value)
            changed = True
    if changed and hasattr(row, "updated_at"):
        row.updated_at = utcnow()
    return changed
