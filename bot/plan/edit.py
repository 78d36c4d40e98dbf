"""The plan changed from Slack: targets, a KPI's owner, names and thresholds, a department's
channel and head. Each change is checked whole first (nothing half-written), allowed to the
department's head (their department) and admins (all), recorded as an AuditEvent with what it
was before and after, and moves the KPI's alerts in the same transaction.

Knows nothing of Slack: the edge passes the words typed and renders what comes back (or the
PlanEditError's code and parameters) from templates/<locale>/messages/plan_edit.yaml.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.alerts import service as alerts
from bot.clock import today, utcnow
from bot.models import (
    EVERY_PERIOD,
    Actual,
    Aggregation,
    Alert,
    AlertStatus,
    AuditEvent,
    Cadence,
    Department,
    Direction,
    Kpi,
    KpiKind,
    Target,
    Unit,
)
from bot.numbers import NumberFormatError, parse_amount
from bot.periods import Period, PeriodError, looks_like_period, parse_key, parse_period
from bot.plan.validation import KEY_PATTERN
from bot.reports.periods_open import finished_open
from bot.reports.service import ReportError, all_kpis, find_kpi, kpi_by_key
from bot.scorecard import current_period, targets_for
from bot.scoring import TargetValue, default_thresholds, threshold_problem
from bot.text import clean_text

SOURCE = "slack"
_RANGE = re.compile(r"^\s*(.+?)\s*(?:–|—|〜|~|～|(?<=\S)-)\s*(.+?)\s*$")
_FROM = ("from", "以降", "から")
NAME_MAX = 200


class PlanEditError(Exception):
    """Why a change was refused; `code` picks the message, `params` fill it in."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def may_edit(department: Department, user_id: str, is_admin: Callable[[], bool]) -> bool:
    """The department's head, or an admin (asked last: it may cost an API call)."""
    return user_id == department.head_user_id or is_admin()


def check_allowed(department: Department, user_id: str, is_admin: Callable[[], bool]) -> None:
    """Raise `not_allowed` unless `user_id` may change the department's plan."""
    if not may_edit(department, user_id, is_admin):
        raise PlanEditError("not_allowed", department=department, head=department.head_user_id)


def _audit(session: Session, actor: str, action: str, entity: str, entity_id: str, **details: Any) -> None:
    session.add(
        AuditEvent(
            actor=actor, action=action, entity=entity, entity_id=entity_id, source=SOURCE, details=details
        )
    )


def _audit_target(session: Session, user_id: str, change: TargetChange) -> None:
    """One audit event per period whose target changed, from `/kpi target` or the targets form alike."""
    _audit(
        session,
        user_id,
        "target.set",
        "kpi",
        change.kpi.key,
        period=change.period.key,
        onward=change.onward,
        before=_target_json(change.before),
        after=_target_json(change.after),
        recomputed=change.recomputed,
    )


def _day_in(department: Department) -> dt.date:
    return today(ZoneInfo(department.timezone))


# -- targets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetCommand:
    kpi: str
    value: str
    period: str | None
    onward: bool  # "from <period>": that period and every later one


def split_target_command(text: str) -> TargetCommand:
    """`<kpi> <value|range> [period | from period]` (also `<period> から` / `<period>以降`)."""
    tokens = text.split()
    if len(tokens) < 2:
        raise PlanEditError("target_usage")
    kpi, rest = tokens[0], tokens[1:]
    period, onward = None, False
    if len(rest) >= 3 and rest[-2].lower() == "from":
        period, onward, rest = rest[-1], True, rest[:-2]
    elif len(rest) >= 3 and rest[-1] in _FROM:
        period, onward, rest = rest[-2], True, rest[:-2]
    elif len(rest) >= 2 and (stripped := _strip_from(rest[-1])) is not None:
        period, onward, rest = stripped, True, rest[:-1]
    elif len(rest) >= 2 and looks_like_period(rest[-1]):
        period, rest = rest[-1], rest[:-1]
    if not rest:
        raise PlanEditError("target_usage")
    return TargetCommand(kpi, " ".join(rest), period, onward)


def _strip_from(token: str) -> str | None:
    for word in ("から", "以降"):
        if token.endswith(word) and looks_like_period(token.removesuffix(word)):
            return token.removesuffix(word)
    return None


def parse_target(text: str, kpi: Kpi) -> TargetValue:
    """A single value or a range (`15-20`, `15〜20%`), for `kpi`: a number, not negative
    (unless a score), the low end first."""
    cleaned = text.replace("%", "").replace("％", "").strip()
    match = _RANGE.match(cleaned)
    if match:
        low, high = _amount(match[1], text, kpi), _amount(match[2], text, kpi)
        if low > high:
            raise PlanEditError("target_reversed", text=text, low=low, high=high, kpi=kpi)
        return TargetValue(low, high)
    return TargetValue.exact(_amount(cleaned, text, kpi))


def _amount(part: str, text: str, kpi: Kpi) -> Decimal:
    try:
        value = parse_amount(part).value
    except NumberFormatError:
        raise PlanEditError("target_not_a_number", text=text, kpi=kpi) from None
    if value < 0 and kpi.unit is not Unit.SCORE:
        raise PlanEditError("target_negative", text=text, kpi=kpi)
    return value


def _target_period(text: str | None, kpi: Kpi, day: dt.date) -> Period:
    if text is None:
        return current_period(kpi.cadence, day)
    try:
        return parse_period(text, kpi.cadence, day)
    except PeriodError as error:
        if error.code != "future":  # a target may be set ahead of time
            raise PlanEditError(f"period_{error.code}", text=text, cadence=kpi.cadence.value) from None
    normalized = text.strip().replace("/", "-")
    return parse_key(normalized)


@dataclass(frozen=True)
class TargetChange:
    kpi: Kpi
    department: Department
    period: Period
    onward: bool
    before: TargetValue | None
    after: TargetValue
    recomputed: list[str] = field(default_factory=list)  # periods with actuals now scored anew


def find_edit_kpi(session: Session, text: str) -> tuple[Kpi, Department]:
    found = kpi_by_key(session, text)
    if found is not None:
        return found
    everything = all_kpis(session)
    try:
        return find_kpi(everything, text, suggest_from=everything)
    except ReportError as error:  # the same search as /kpi report, in this surface's words
        raise PlanEditError(
            "unknown_kpi", text=text, suggestions=error.params.get("suggestions", [])
        ) from None


def find_editable_kpi(
    session: Session, text: str, user_id: str, is_admin: Callable[[], bool]
) -> tuple[Kpi, Department]:
    """The KPI named by `text`, if `user_id` may change it."""
    kpi, department = find_edit_kpi(session, text)
    check_allowed(department, user_id, is_admin)
    return kpi, department


def set_target(session: Session, *, text: str, user_id: str, is_admin: Callable[[], bool]) -> TargetChange:
    """`/kpi target …` checked, stored, audited, its alerts moved, in the caller's transaction.

    Without a period it is "from the period in progress": finished periods keep the target they
    were scored against (written down as their own target if they had only the default)."""
    parts = split_target_command(text)
    kpi, department = find_edit_kpi(session, parts.kpi)
    check_allowed(department, user_id, is_admin)
    after = parse_target(parts.value, kpi)
    day = _day_in(department)
    period = _target_period(parts.period, kpi, day)
    onward = parts.onward or parts.period is None
    assert kpi.id is not None
    _lock(session, kpi)
    before = targets_for(session, [kpi.id], {period.key}).get((kpi.id, period.key))
    if onward:
        recomputed = _set_from(session, kpi, period, after)
    else:
        _put(session, kpi.id, period.key, after)
        recomputed = _with_actuals(session, kpi.id, [period.key])
    kpi.updated_at = utcnow()  # the version an open edit form compares with
    session.add(kpi)
    change = TargetChange(kpi, department, period, onward, before, after, recomputed)
    _audit_target(session, user_id, change)
    session.flush()
    alerts.check_kpi(session, kpi, department, day)
    return change


def _lock(session: Session, kpi: Kpi) -> None:
    # Two changes to one KPI's targets one after the other (PostgreSQL; SQLite writes one at a time).
    session.exec(select(Kpi.id).where(Kpi.id == kpi.id).with_for_update())


def _put(session: Session, kpi_id: int, period: str, target: TargetValue) -> None:
    row = session.exec(select(Target).where(Target.kpi_id == kpi_id, Target.period == period)).first()
    row = row or Target(kpi_id=kpi_id, period=period)
    if target.is_range:
        row.value, row.min_value, row.max_value = None, target.low, target.high
    else:
        row.value, row.min_value, row.max_value = target.low, None, None
    row.updated_at = utcnow()
    session.add(row)


def _set_from(session: Session, kpi: Kpi, start: Period, target: TargetValue) -> list[str]:
    """`target` from `start` on: the default becomes it; periods before `start` that had only
    the old default keep it as their own; later periods' own targets give way to it."""
    assert kpi.id is not None
    rows = {row.period: row for row in session.exec(select(Target).where(Target.kpi_id == kpi.id)).all()}
    old_default = rows.get(EVERY_PERIOD)
    reported = list(
        session.exec(
            select(Actual.period).where(Actual.kpi_id == kpi.id, col(Actual.superseded_at).is_(None))
        ).all()
    )
    earlier = {key for key in reported if _before(key, start)}
    if old_default is not None:
        for key in sorted(earlier - set(rows)):
            session.add(_copy(old_default, key))
    later = [key for key in rows if key != EVERY_PERIOD and not _before(key, start)]
    for key in later:
        session.delete(rows[key])
    session.flush()
    _put(session, kpi.id, EVERY_PERIOD, target)
    return sorted(key for key in reported if not _before(key, start))


def _before(key: str, start: Period) -> bool:
    try:
        period = parse_key(key)
    except PeriodError:
        return False
    return period.cadence is start.cadence and period < start


def _copy(row: Target, period: str) -> Target:
    return Target(
        kpi_id=row.kpi_id, period=period, value=row.value, min_value=row.min_value, max_value=row.max_value
    )


def _with_actuals(session: Session, kpi_id: int, periods: list[str]) -> list[str]:
    return sorted(
        session.exec(
            select(Actual.period).where(
                Actual.kpi_id == kpi_id, col(Actual.period).in_(periods), col(Actual.superseded_at).is_(None)
            )
        ).all()
    )


def _target_json(target: TargetValue | None) -> Any:
    if target is None:
        return None
    if target.is_range:
        return {"min": _plain(target.low), "max": _plain(target.high)}
    return _plain(target.low)


# -- targets period by period (the form) ---------------------------------------------------------------

AHEAD = 6  # periods after the one in progress that the targets form shows


def target_periods(kpi: Kpi, department: Department) -> list[Period]:
    """The periods the targets form shows: the finished ones still open, the one in progress, and
    the next AHEAD, oldest first."""
    current = current_period(kpi.cadence, _day_in(department))
    return [*finished_open(kpi.cadence, _day_in(department)), *(current.shift(n) for n in range(AHEAD + 1))]


def current_targets(session: Session, kpi: Kpi, periods: list[Period]) -> dict[str, TargetValue]:
    assert kpi.id is not None
    found = targets_for(session, [kpi.id], {period.key for period in periods})
    return {key: value for (_, key), value in found.items()}


def check_period_targets(
    kpi: Kpi, typed: dict[str, str]
) -> tuple[dict[str, TargetValue], dict[str, PlanEditError]]:
    """The targets typed per period key (empty: leave as is), or the problems by period key."""
    checked: dict[str, TargetValue] = {}
    problems: dict[str, PlanEditError] = {}
    for key, text in typed.items():
        if not (text or "").strip():
            continue
        try:
            parse_key(key)
            checked[key] = parse_target(text, kpi)
        except PeriodError:
            problems[key] = PlanEditError("period_malformed", text=key, cadence=kpi.cadence.value)
        except PlanEditError as problem:
            problems[key] = problem
    return checked, problems


def set_period_targets(
    session: Session,
    *,
    kpi_id: int,
    targets: dict[str, TargetValue],
    user_id: str,
    is_admin: Callable[[], bool],
) -> list[TargetChange]:
    """Store the checked targets that differ from what each period has now; each one audited."""
    found = kpi_and_department(session, kpi_id)
    if found is None:
        raise PlanEditError("kpi_gone")
    kpi, department = found
    check_allowed(department, user_id, is_admin)
    _lock(session, kpi)
    periods = [parse_key(key) for key in sorted(targets)]
    before = current_targets(session, kpi, periods)
    changes: list[TargetChange] = []
    for period in periods:
        after = targets[period.key]
        if before.get(period.key) == after:
            continue
        _put(session, kpi_id, period.key, after)
        recomputed = _with_actuals(session, kpi_id, [period.key])
        change = TargetChange(kpi, department, period, False, before.get(period.key), after, recomputed)
        _audit_target(session, user_id, change)
        changes.append(change)
    if changes:
        kpi.updated_at = utcnow()
        session.add(kpi)
        session.flush()
        alerts.check_kpi(session, kpi, department, _day_in(department))
    return changes


# -- a KPI's owner, names and thresholds (the form) --------------------------------------------------


def version_of(kpi: Kpi) -> str:
    """What an edit form carries to find out whether the KPI changed since it was opened: a digest
    of what the form shows (a timestamp would not do: two saves can share one)."""
    shown = [
        kpi.name_ja,
        kpi.name_en,
        kpi.owner_user_id,
        _plain(Decimal(kpi.amber_pct)),
        _plain(Decimal(kpi.red_pct)),
    ]
    return hashlib.sha256(json.dumps(shown).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KpiFields:
    name_ja: str
    name_en: str
    owner_user_id: str | None
    amber: str
    red: str


@dataclass(frozen=True)
class KpiChange:
    kpi: Kpi
    department: Department
    changes: dict[str, tuple[Any, Any]]  # field → (before, after)


def check_kpi_fields(kpi: Kpi, fields: KpiFields) -> tuple[dict[str, Any], dict[str, PlanEditError]]:
    """The form's values as columns, or the problems by field; nothing stored."""
    values: dict[str, Any]
    values, problems = _names_checked(fields.name_ja, fields.name_en)
    values["owner_user_id"] = fields.owner_user_id or None
    thresholds: dict[str, Decimal] = {}
    for name, text in (("amber_pct", fields.amber), ("red_pct", fields.red)):
        try:
            thresholds[name] = parse_amount((text or "").replace("%", "").strip()).value
        except NumberFormatError:
            problems[name] = PlanEditError("threshold_not_a_number", text=text)
    if len(thresholds) == 2:
        problem = threshold_problem(kpi.direction, thresholds["amber_pct"], thresholds["red_pct"])
        if problem:
            problems["red_pct"] = PlanEditError(
                problem, amber=thresholds["amber_pct"], red=thresholds["red_pct"]
            )
        values.update(thresholds)
    return values, problems


def kpi_and_department(session: Session, kpi_id: int) -> tuple[Kpi, Department] | None:
    row = session.exec(select(Kpi, Department).join(Department).where(Kpi.id == kpi_id)).first()
    return None if row is None else (row[0], row[1])


def update_kpi(
    session: Session,
    *,
    kpi_id: int,
    version: str,
    values: dict[str, Any],
    user_id: str,
    is_admin: Callable[[], bool],
) -> KpiChange:
    """Store checked form values if the KPI is still as the form showed it (else `changed_meanwhile`,
    naming who changed it): one of two editors wins, the other is told. Audited; alerts moved."""
    found = kpi_and_department(session, kpi_id)
    if found is None:
        raise PlanEditError("kpi_gone")
    kpi, department = found
    check_allowed(department, user_id, is_admin)
    changes = {
        name: (_plain(getattr(kpi, name)), _plain(value))
        for name, value in values.items()
        if _plain(getattr(kpi, name)) != _plain(value)
    }
    if not changes:
        return KpiChange(kpi, department, {})
    # Compared under the KPI's row lock, so of two saves of one version the second sees the first.
    _lock(session, kpi)
    session.refresh(kpi)
    if version_of(kpi) != version:
        raise PlanEditError("changed_meanwhile", kpi=kpi, by=last_editor(session, kpi.key))
    for name, value in values.items():
        setattr(kpi, name, value)
    kpi.updated_at = utcnow()
    session.add(kpi)
    _audit(session, user_id, "kpi.update", "kpi", kpi.key, changes={k: list(v) for k, v in changes.items()})
    session.flush()
    if {"amber_pct", "red_pct"} & set(changes):
        alerts.check_kpi(session, kpi, department, _day_in(department))
    return KpiChange(kpi, department, changes)


def _plain(value: Any) -> Any:
    return format(Decimal(value).normalize(), "f") if isinstance(value, Decimal) else value


def last_editor(session: Session, kpi_key: str) -> str | None:
    return session.exec(
        select(AuditEvent.actor)
        .where(AuditEvent.entity == "kpi", AuditEvent.entity_id == kpi_key)
        .order_by(col(AuditEvent.id).desc())
    ).first()


# -- adding a KPI (the form) ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewKpi:
    key: str
    name_ja: str
    name_en: str
    owner_user_id: str | None
    unit: str
    direction: str
    cadence: str
    kind: str
    target: str


def check_new_kpi(
    session: Session, fields: NewKpi
) -> tuple[Kpi | None, TargetValue | None, dict[str, PlanEditError]]:
    """The form's KPI (not stored, no department yet) and its target, or the problems by field."""
    problems: dict[str, PlanEditError] = {}
    key = (fields.key or "").strip().lower()
    if not KEY_PATTERN.match(key):
        problems["key"] = PlanEditError("key_invalid", text=fields.key)
    elif kpi_by_key(session, key) is not None:
        problems["key"] = PlanEditError("key_taken", kpi_key=key)
    names, name_problems = _names_checked(fields.name_ja, fields.name_en)
    problems.update(name_problems)
    try:
        unit, direction = Unit(fields.unit), Direction(fields.direction)
        cadence, kind = Cadence(fields.cadence), KpiKind(fields.kind)
    except ValueError:
        problems["unit"] = PlanEditError("choice_missing")
        return None, None, problems
    amber, red = default_thresholds(direction)
    aggregation = Aggregation.AVERAGE if unit in (Unit.PERCENT, Unit.SCORE) else Aggregation.SUM
    kpi = Kpi(
        key=key,
        department_id=0,
        owner_user_id=fields.owner_user_id or None,
        unit=unit,
        direction=direction,
        cadence=cadence,
        kind=kind,
        aggregation=aggregation,
        amber_pct=amber,
        red_pct=red,
        **names,
    )
    target = None
    if (fields.target or "").strip():
        try:
            target = parse_target(fields.target, kpi)
        except PlanEditError as problem:
            problems["target"] = problem
    return kpi, target, problems


def _names_checked(name_ja: str, name_en: str) -> tuple[dict[str, str], dict[str, PlanEditError]]:
    names: dict[str, str] = {}
    problems: dict[str, PlanEditError] = {}
    for name, text in (("name_ja", name_ja), ("name_en", name_en)):
        text = (text or "").strip()
        if not text:
            problems[name] = PlanEditError("name_required")
        elif len(text) > NAME_MAX or clean_text(text).removed:
            problems[name] = PlanEditError("name_invalid", max=NAME_MAX)
        else:
            names[name] = text
    return names, problems


def add_kpi(
    session: Session,
    *,
    department_id: int,
    kpi: Kpi,
    target: TargetValue | None,
    user_id: str,
    is_admin: Callable[[], bool],
) -> tuple[Kpi, Department]:
    """Store a checked new KPI at the end of its department, with its target for every period."""
    department = session.get(Department, department_id)
    if department is None or department.is_division:
        raise PlanEditError("department_unknown", text=str(department_id))
    check_allowed(department, user_id, is_admin)
    if kpi_by_key(session, kpi.key) is not None:  # added by someone else since the form was checked
        raise PlanEditError("key_taken", kpi_key=kpi.key)
    last = session.exec(select(sa.func.max(Kpi.position))).one()
    kpi.department_id, kpi.position = department_id, (last or 0) + 1
    session.add(kpi)
    session.flush()
    assert kpi.id is not None
    if target is not None:
        _put(session, kpi.id, EVERY_PERIOD, target)
    _audit(
        session,
        user_id,
        "kpi.add",
        "kpi",
        kpi.key,
        department=department.key,
        unit=kpi.unit.value,
        cadence=kpi.cadence.value,
        target=_target_json(target),
    )
    session.flush()
    return kpi, department


# -- retiring a KPI --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retired:
    kpi: Kpi
    department: Department
    resolved: int  # open alerts closed with it


def retire_kpi(session: Session, *, text: str, user_id: str, is_admin: Callable[[], bool]) -> Retired:
    """Retire a KPI: no more reports, scores or alerts; its actuals, targets and countermeasures
    stay. Its open alerts are resolved (their messages follow at the edge). Audited."""
    if not text.strip():
        raise PlanEditError("retire_usage")
    kpi, department = find_edit_kpi(session, text.strip().split()[0])
    check_allowed(department, user_id, is_admin)
    if kpi.retired_at is not None:
        raise PlanEditError("already_retired", kpi=kpi, day=kpi.retired_at.date())
    dependants = [
        other.key
        for other, _ in all_kpis(session)
        if other.formula
        and other.retired_at is None
        and kpi.key in re.findall(r"[a-z_][a-z0-9_]*", other.formula)
    ]
    if dependants:
        raise PlanEditError("retire_used_in_formula", kpi=kpi, dependants=dependants)
    now = utcnow()
    kpi.retired_at = kpi.updated_at = now
    session.add(kpi)
    open_alerts = session.exec(
        select(Alert).where(Alert.kpi_id == kpi.id, col(Alert.status) != AlertStatus.RESOLVED)
    ).all()
    for alert in open_alerts:
        alert.status, alert.resolved_at, alert.updated_at = AlertStatus.RESOLVED, now, now
        session.add(alert)
    _audit(session, user_id, "kpi.retire", "kpi", kpi.key, resolved_alerts=len(open_alerts))
    session.flush()
    return Retired(kpi, department, len(open_alerts))


# -- a department's channel and head (admins) -----------------------------------------------------

_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^([UW][A-Z0-9]{2,})$")
_CHANNEL = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$|^([CG][A-Z0-9]{2,})$")


@dataclass(frozen=True)
class DepartmentChange:
    department: Department
    field: str  # "channel" or "head"
    before: str | None
    after: str


def set_department(
    session: Session, *, department: Department, what: str, value: str, user_id: str, is_admin: bool
) -> DepartmentChange:
    """`/kpi department <department> channel #channel | head @user`, for admins."""
    if not is_admin:
        raise PlanEditError("department_admins_only")
    pattern, column = {"channel": (_CHANNEL, "channel_id"), "head": (_USER, "head_user_id")}.get(
        what, (None, "")
    )
    if pattern is None:
        raise PlanEditError("department_usage")
    match = pattern.match(value.strip())
    if match is None:
        raise PlanEditError(f"department_bad_{what}", text=value)
    after = match[1] or match[2]
    before = getattr(department, column)
    setattr(department, column, after)
    department.updated_at = utcnow()
    session.add(department)
    _audit(session, user_id, f"department.{what}", "department", department.key, before=before, after=after)
    session.flush()
    return DepartmentChange(department, what, before, after)
