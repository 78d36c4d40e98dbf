"""A plan file checked completely before anything is written: every problem, with its line."""

from __future__ import annotations

import enum
import json
import re
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from bot.alerts.rules import STREAK_DEFAULT, STREAK_RANGE
from bot.config import LOCALES
from bot.formulas import FormulaError, parse_formula
from bot.models import (
    EVERY_PERIOD,
    Aggregation,
    Cadence,
    Direction,
    KpiKind,
    Unit,
)
from bot.numbers import NumberFormatError, check_storable, parse_amount
from bot.periods import PeriodError, parse_key
from bot.plan.file import PlanDocument, Record
from bot.plan.retired import read_retired
from bot.plan.specs import (
    DepartmentSpec,
    Existing,
    FactorSpec,
    FetchSpec,
    FunnelSpec,
    GoalSpec,
    KnownKpi,
    KpiSpec,
    Plan,
    PlanInvalid,
    Problem,
    TargetSpec,
)
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
