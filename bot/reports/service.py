"""Reporting an actual: from the words a user typed to a stored, scored value.

Knows nothing of Slack: handlers pass the text and the user, and render what comes back
(or the ReportError's code and parameters) from templates.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.alerts import service as alerts
from bot.clock import today
from bot.models import Department, Kpi, Source, Unit
from bot.numbers import STORABLE_DECIMALS, STORABLE_LIMIT, NumberFormatError, parse_amount, parse_number
from bot.periods import Period, PeriodError, looks_like_period, parse_key, parse_period
from bot.permissions import can_report
from bot.reports.actuals import (
    NewValue,
    Recorded,
    live_rows,
    live_values,
    record_actual,
    record_actuals,
    wait_for_writers_of,
)
from bot.scorecard import current_period, targets_for
from bot.scoring import Score, TargetValue, score
from bot.text import clean_text

NOTE_MAX_LENGTH = 2000
# Unit words people put after a number with a space: "15.5 %", "300 万円".
_TRAILING_UNITS = {"%", "％", "円", "万", "万円", "億", "億円", "千", "k", "jpy", "usd", "yen"}
_UNIT_OF = {"percent": Unit.PERCENT, "jpy": Unit.JPY, "usd": Unit.USD}


class ReportError(Exception):
    """Why a report was refused; `code` picks the message, `params` fill it in."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class ReportText:
    kpi: str
    value: str
    period: str | None
    note: str | None


@dataclass(frozen=True)
class Reported:
    kpi: Kpi
    department: Department
    period: Period
    recorded: Recorded
    score: Score


def normalize_name(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", text).casefold())


def split_report_text(text: str) -> ReportText:
    """`<kpi> <value> [period] [note…]`; the KPI name may have spaces ("New approaches 85")."""
    tokens = text.split()
    value_index = next((i for i, token in enumerate(tokens) if i > 0 and _is_number(token)), None)
    if value_index is None:
        raise ReportError("usage")
    kpi, rest = " ".join(tokens[:value_index]), tokens[value_index:]
    value = rest.pop(0)
    if rest and rest[0].lower() in _TRAILING_UNITS:
        value += rest.pop(0)
    period = None
    if len(rest) >= 2 and looks_like_period(f"{rest[0]} {rest[1]}"):
        period = f"{rest.pop(0)} {rest.pop(0)}"
    elif rest and looks_like_period(rest[0]):
        period = rest.pop(0)
    note = " ".join(rest) or None
    return ReportText(kpi, value, period, note)


def _is_number(token: str) -> bool:
    try:
        parse_number(token)
    except NumberFormatError as error:
        # A malformed number is still the value slot ("1,20"): report why, don't call it a KPI name.
        return error.code in ("ambiguous_separator", "too_large") or bool(re.match(r"^[-+]?[\d０-９]", token))
    return True


def all_kpis(session: Session, *, reported_by: str | None = None) -> list[tuple[Kpi, Department]]:
    """Every KPI with its department, in plan order; with `reported_by`, only the KPIs that
    user owns or whose department they head."""
    query = select(Kpi, Department).join(Department, col(Department.id) == Kpi.department_id)
    if reported_by is not None:
        # A union of two index lookups (0012), not an OR across the join, which both databases answer
        # by reading every KPI of the division: the user's own KPIs are all that is read.
        owned = select(Kpi.id).where(col(Kpi.owner_user_id) == reported_by)
        headed = (
            select(Kpi.id)
            .join(Department, col(Department.id) == Kpi.department_id)
            .where(col(Department.head_user_id) == reported_by)
        )
        query = query.where(col(Kpi.id).in_(sa.union(owned, headed)))
    rows = session.exec(query.order_by(col(Department.id), col(Kpi.position), col(Kpi.id))).all()
    return [(kpi, department) for kpi, department in rows]


def kpi_by_key(session: Session, text: str) -> tuple[Kpi, Department] | None:
    """The KPI whose key was typed (the usual case), by the key's unique index."""
    key = unicodedata.normalize("NFKC", text).strip().lower()
    row = session.exec(
        select(Kpi, Department)
        .join(Department, col(Department.id) == Kpi.department_id)
        .where(Kpi.key == key)
    ).first()
    return None if row is None else (row[0], row[1])


def kpis_by_keys(session: Session, keys: Iterable[str]) -> list[tuple[Kpi, Department]]:
    """The KPIs with these exact keys, with their departments; one query by the key's index."""
    wanted = sorted(set(keys))
    if not wanted:
        return []
    rows = session.exec(
        select(Kpi, Department)
        .join(Department, col(Department.id) == Kpi.department_id)
        .where(col(Kpi.key).in_(wanted))
    ).all()
    return [(kpi, department) for kpi, department in rows]


def find_kpi(
    candidates: Sequence[tuple[Kpi, Department]], text: str, suggest_from: Sequence[tuple[Kpi, Department]]
) -> tuple[Kpi, Department]:
    """A KPI by key or by its Japanese or English name; a near miss gets suggestions."""
    wanted = normalize_name(text)
    for kpi, department in candidates:
        if _is_named(kpi, wanted):
            return kpi, department
    names: dict[str, Kpi] = {}
    for kpi, _ in suggest_from:
        for name in (kpi.key, kpi.name_ja, kpi.name_en):
            names.setdefault(normalize_name(name), kpi)
    close = difflib.get_close_matches(wanted, list(names), n=5, cutoff=0.5)
    suggestions: list[Kpi] = []
    for name in close:
        if names[name] not in suggestions:
            suggestions.append(names[name])
    raise ReportError("unknown_kpi", text=text, suggestions=suggestions[:3])


def _is_named(kpi: Kpi, normalized: str) -> bool:
    return normalized in (normalize_name(kpi.key), normalize_name(kpi.name_ja), normalize_name(kpi.name_en))


def _kpi_and_the_word_after(session: Session, tokens: Sequence[str]) -> tuple[Kpi, Department, str] | None:
    """For a report without a number: the KPI it starts with and the word typed as its value.

    "mqls abc" or "New approaches eighty" name a KPI and then something that is not a number;
    the user deserves to hear what is wrong with that word, not the general usage."""
    if len(tokens) < 2:
        return None
    found = kpi_by_key(session, tokens[0])
    if found is not None:
        return found[0], found[1], tokens[1]
    everything = all_kpis(session)  # only on this error path, like find_kpi's suggestions
    # The longest name wins, as in split_report_text, where the KPI is everything before the value.
    for end in range(len(tokens) - 1, 0, -1):
        wanted = normalize_name(" ".join(tokens[:end]))
        for kpi, department in everything:
            if _is_named(kpi, wanted):
                return kpi, department, tokens[end]
    return None


def check_value(text: str, kpi: Kpi, *, in_command: bool = False) -> Decimal:
    """The value typed for `kpi`, checked against its unit and what the database can hold.

    `in_command`: the error may show the `/kpi report` line to type (not in the form)."""
    try:
        parsed = parse_amount(text)
    except NumberFormatError as error:
        if error.code == "too_large":
            raise ReportError("too_large", text=text, kpi=kpi, limit=STORABLE_LIMIT) from None
        if error.code == "too_precise":
            raise ReportError("too_precise", text=text, kpi=kpi, digits=STORABLE_DECIMALS) from None
        raise ReportError(
            "not_a_number", text=text, reason=error.code, kpi=kpi, in_command=in_command
        ) from None
    value = parsed.value
    if parsed.unit is not None and _UNIT_OF[parsed.unit] is not kpi.unit:
        raise ReportError("unit_mismatch", text=text, unit=kpi.unit.value)
    if value < 0 and kpi.unit is not Unit.SCORE:
        raise ReportError("negative", text=text)
    if kpi.unit is Unit.COUNT and value != value.to_integral_value():
        raise ReportError("not_whole", text=text)
    if kpi.unit is Unit.PERCENT and value > 100:
        raise ReportError("percent_over_100", text=text)
    return value


def check_period(text: str | None, kpi: Kpi, day: dt.date) -> Period:
    if text is None:
        return current_period(kpi.cadence, day)
    try:
        return parse_period(text, kpi.cadence, day)
    except PeriodError as error:
        raise ReportError(f"period_{error.code}", text=text, cadence=kpi.cadence.value) from None


def report(
    session: Session,
    *,
    text: str,
    user_id: str,
    is_admin: Callable[[], bool],
    source: Source = Source.COMMAND,
) -> Reported:
    """Parse, authorize, validate and store one report in the caller's transaction."""
    try:
        parts = split_report_text(text)
    except ReportError as usage:
        without_number = _kpi_and_the_word_after(session, text.split())
        if without_number is None:
            raise
        kpi, department, word = without_number
        _check_reportable(kpi, department, user_id, is_admin)
        if looks_like_period(word):  # "mqls 先月": the value was left out, not mistyped
            raise ReportError("missing_value", kpi=kpi, period=word) from None
        check_value(word, kpi, in_command=True)  # raises: split_report_text found no number
        raise usage from None
    found = kpi_by_key(session, parts.kpi)
    if found is None:
        # A name, or a typo: only then is every KPI read (a division may have thousands).
        everything = all_kpis(session)
        reportable = [(k, d) for k, d in everything if can_report(k, d, user_id, lambda: False)] or everything
        found = find_kpi(everything, parts.kpi, suggest_from=reportable)
    kpi, department = found
    _check_reportable(kpi, department, user_id, is_admin)
    value = check_value(parts.value, kpi, in_command=True)
    period = check_period(parts.period, kpi, _today_in(department))
    note = check_note(parts.note)
    return save(
        session,
        kpi=kpi,
        department=department,
        period=period,
        value=value,
        user_id=user_id,
        source=source,
        note=note,
    )


def _check_reportable(kpi: Kpi, department: Department, user_id: str, is_admin: Callable[[], bool]) -> None:
    if kpi.retired_at is not None:
        raise ReportError("retired", kpi=kpi, day=kpi.retired_at.date())
    if kpi.formula:
        raise ReportError("derived_kpi", kpi=kpi, formula=kpi.formula)
    if not can_report(kpi, department, user_id, is_admin):
        raise ReportError("not_allowed", kpi=kpi, owner=kpi.owner_user_id, head=department.head_user_id)


def save(
    session: Session,
    *,
    kpi: Kpi,
    department: Department,
    period: Period,
    value: Decimal,
    user_id: str,
    source: Source,
    note: str | None = None,
    source_name: str | None = None,
    external_id: str | None = None,
) -> Reported:
    """Store an already validated value and score it against its target."""
    assert kpi.id is not None
    recorded = record_actual(
        session,
        kpi=kpi,
        period=period.key,
        value=value,
        reported_by=user_id,
        source=source,
        note=note,
        source_name=source_name,
        external_id=external_id,
    )
    # In the report's transaction: the alert rows move with the value, or neither does.
    alerts.check_after_report(session, kpi, recorded)
    return _reported(kpi, department, period, value, recorded, targets_for(session, [kpi.id], {period.key}))


# -- several KPIs at once (the report modal) ---------------------------------------------------------


@dataclass(frozen=True)
class ReportableKpi:
    """A KPI a user may report now, with the period it would go to and what is already there."""

    kpi: Kpi
    department: Department
    period: Period
    value: Decimal | None  # the live value for `period`, if one was reported
    target: TargetValue | None

    @property
    def derived(self) -> bool:
        """Calculated from other KPIs by its formula: listed, but never typed in."""
        return bool(self.kpi.formula)


@dataclass(frozen=True)
class CheckedReport:
    """A value that passed every check and may be saved."""

    kpi: Kpi
    department: Department
    period: Period
    value: Decimal
    # A batch from another system gives each value its own note and the sender's id for it.
    note: str | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class SavedReports:
    saved: list[Reported]  # new values and corrections, in the order given
    unchanged: list[CheckedReport]  # equal to the live value, so not stored again


def _today_in(department: Department) -> dt.date:
    return today(ZoneInfo(department.timezone))


def plain_number(value: Decimal) -> str:
    """A value as a user would type it back: no grouping, no exponent ("3000000", "15.5")."""
    normalized = value.normalize()
    if normalized == normalized.to_integral_value():
        normalized = normalized.quantize(Decimal(1))
    return format(normalized, "f")


def _asked_once(is_admin: Callable[[], bool]) -> Callable[[], bool]:
    # Asking may cost a users.info call; one answer is enough for a whole list of KPIs.
    answer: list[bool] = []

    def ask() -> bool:
        if not answer:
            answer.append(is_admin())
        return answer[0]

    return ask


def reportable_kpis(session: Session, *, user_id: str, is_admin: Callable[[], bool]) -> list[ReportableKpi]:
    """Every KPI `user_id` may report, in plan order (so by department), each with its current
    period in its department's timezone, the live value and the target; two queries besides the KPIs.

    Derived KPIs are included on the same terms, flagged `derived`: `/kpi list` shows them as
    calculated, the report form leaves them out."""
    # An admin may report everything; anyone else only what they own or head, found by SQL
    # rather than by reading a whole division's KPIs.
    rows = all_kpis(session) if is_admin() else all_kpis(session, reported_by=user_id)
    rows = [(kpi, department) for kpi, department in rows if kpi.retired_at is None]
    periods: dict[int, Period] = {}
    for kpi, department in rows:
        assert kpi.id is not None
        periods[kpi.id] = current_period(kpi.cadence, _today_in(department))
    keys = {period.key for period in periods.values()}
    values = live_values(session, list(periods), keys)
    targets = targets_for(session, list(periods), keys)
    result = []
    for kpi, department in rows:
        assert kpi.id is not None
        period = periods[kpi.id]
        slot = (kpi.id, period.key)
        result.append(ReportableKpi(kpi, department, period, values.get(slot), targets.get(slot)))
    return result


def check_reports(
    session: Session,
    *,
    values: Mapping[str, str],
    periods: Mapping[int, str],
    user_id: str,
    is_admin: Callable[[], bool],
) -> tuple[list[CheckedReport], dict[str, ReportError]]:
    """Check values typed for several KPIs at once, without storing anything.

    `values` maps KPI keys to the text typed (empty ones are skipped: "leave as is");
    `periods` maps KPI ids to the period key the user was shown, so a form opened just
    before midnight still reports the period it showed. Every value is checked, so all
    problems are returned together, by KPI key.
    """
    # The form's KPIs by their keys' unique index: what the answer (the ack) needs, however big the division.
    typed = [key for key, text in values.items() if text.strip()]
    by_key = {kpi.key: (kpi, department) for kpi, department in kpis_by_keys(session, typed)}
    admin = _asked_once(is_admin)
    checked: list[CheckedReport] = []
    errors: dict[str, ReportError] = {}
    for key, text in values.items():
        if not text.strip():
            continue
        try:
            if key not in by_key:  # deleted from the plan since the form was opened
                raise ReportError("unknown_kpi", text=key, suggestions=[])
            kpi, department = by_key[key]
            _check_reportable(kpi, department, user_id, admin)
            value = check_value(text.strip(), kpi)
        except ReportError as error:
            errors[key] = error
            continue
        assert kpi.id is not None
        period = _shown_period(kpi, department, periods.get(kpi.id))
        checked.append(CheckedReport(kpi, department, period, value))
    return checked, errors


def _shown_period(kpi: Kpi, department: Department, shown: str | None) -> Period:
    if shown is not None:
        try:
            period = parse_key(shown)
        except PeriodError:
            period = None
        # The plan may have changed the KPI's cadence since the form was opened.
        if period is not None and period.cadence is kpi.cadence:
            return period
    return current_period(kpi.cadence, _today_in(department))


def check_note(note: str | None) -> str | None:
    """The note for a report, trimmed; None when empty."""
    note = (note or "").strip() or None
    if note is None:
        return None
    # Refused rather than stripped: the user sees the note confirmed, so it must be what they sent.
    removed = clean_text(note).removed
    if removed:
        raise ReportError("note_control_characters", count=removed)
    if len(note) > NOTE_MAX_LENGTH:
        raise ReportError("note_too_long", length=len(note), max=NOTE_MAX_LENGTH)
    return note


def save_reports(
    session: Session,
    reports: Sequence[CheckedReport],
    *,
    user_id: str,
    source: Source,
    note: str | None = None,
    source_name: str | None = None,
) -> SavedReports:
    """Store checked values in the caller's transaction; a value equal to the live one is left alone.

    A few statements per batch, whatever its size: the writers' locks, the live rows, the
    inserts and supersedes with their audit events, one alert check per department touched
    (each KPI once) and the targets."""
    saved: list[Reported] = []
    unchanged: list[CheckedReport] = []
    # One order for every writer, so two forms sharing KPIs cannot wait on each other's locks.
    ordered = sorted(reports, key=lambda item: (item.kpi.id or 0, item.period.key))
    wait_for_writers_of(session, [(item.kpi.id or 0, item.period.key) for item in ordered])
    recorded: list[tuple[CheckedReport, Recorded]] = []
    for batch in _distinct_slots(ordered):
        # Compared here, not when the form was checked: someone may have reported in between;
        # and under the writers' lock, so the comparison is with the value that will be replaced.
        live = live_rows(session, [(item.kpi.id or 0, item.period.key) for item in batch])
        new: list[CheckedReport] = []
        for item in batch:
            current = live.get((item.kpi.id or 0, item.period.key))
            if current is not None and Decimal(current.value) == item.value:
                unchanged.append(item)
            else:
                new.append(item)
        values = [
            NewValue(
                item.kpi,
                item.period.key,
                item.value,
                item.note if item.note is not None else note,
                item.external_id,
            )
            for item in new
        ]
        stored = record_actuals(
            session, values, reported_by=user_id, source=source, source_name=source_name, live=live
        )
        recorded += zip(new, stored, strict=True)
    # In the reports' transaction: the alert rows move with the values, or neither does; each
    # KPI moved is checked once, when the block ends.
    with alerts.checks_after_reports(session):
        for item, item_recorded in recorded:
            alerts.check_after_report(session, item.kpi, item_recorded)
    targets = targets_for(
        session, sorted({item.kpi.id or 0 for item, _ in recorded}), {item.period.key for item, _ in recorded}
    )
    position = {id(item): number for number, item in enumerate(ordered)}
    for item, item_recorded in sorted(recorded, key=lambda pair: position[id(pair[0])]):
        saved.append(_reported(item.kpi, item.department, item.period, item.value, item_recorded, targets))
    return SavedReports(saved, unchanged)


def _distinct_slots(ordered: Sequence[CheckedReport]) -> list[list[CheckedReport]]:
    """The reports in rounds of distinct (KPI, period) slots, in order: a slot given twice is
    stored twice, the second superseding the first, as two reports one after the other would."""
    rounds: list[list[CheckedReport]] = []
    depth: dict[tuple[int, str], int] = {}
    for item in ordered:
        slot = (item.kpi.id or 0, item.period.key)
        level = depth.get(slot, 0)
        depth[slot] = level + 1
        if level == len(rounds):
            rounds.append([])
        rounds[level].append(item)
    return rounds


def _reported(
    kpi: Kpi,
    department: Department,
    period: Period,
    value: Decimal,
    recorded: Recorded,
    targets: Mapping[tuple[int, str], TargetValue],
) -> Reported:
    assert kpi.id is not None
    target = targets.get((kpi.id, period.key))
    kpi_score = score(value, target, kpi.direction, Decimal(kpi.amber_pct), Decimal(kpi.red_pct))
    return Reported(kpi, department, period, recorded, kpi_score)
