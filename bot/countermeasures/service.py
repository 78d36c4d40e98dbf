"""Countermeasures: what a department will do about a KPI off track, who does it by when, and
whether it worked. Plain functions over a session; no Slack.

- Parsing what people type: `/kpi countermeasure <kpi> <text…> [@owner] [due]` and
  `@kpibot 対策: <text…> [@owner] [due]` (due as `2026-12-15`, `12/15`, `today`/`今日`, `tomorrow`/`明日`).
- Checking and logging: who may (bot.permissions.is_member), a due date not in the past, a baseline
  (the KPI's value when it was logged) so the effect can be shown later.
- Changing status once: a compare-and-swap UPDATE, so two clicks or two people make one change.
- Follow-up data: reminders due, countermeasures due or overdue, the effect of a new actual.

Refusals are CountermeasureError codes with parameters; handlers render them from templates.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.alerts.rules import below_target, is_running_total, projected
from bot.clock import today as today_in
from bot.clock import utcnow
from bot.funnel import flows as funnel_flows
from bot.models import (
    Alert,
    AlertStatus,
    AuditEvent,
    Countermeasure,
    CountermeasureStatus,
    Department,
    Kpi,
    Post,
    PostKind,
)
from bot.periods import Period, parse_key
from bot.permissions import is_member
from bot.reports.actuals import live_values
from bot.reports.service import ReportError, all_kpis, find_kpi, normalize_name
from bot.scorecard import build_scorecard, current_period, reviewed_period, targets_for
from bot.scoring import Score, Status, TargetValue, achievement_pct, score
from bot.text import clean_text

TEXT_MAX_LENGTH = 3000
EFFECT_MAX_LENGTH = 1000
OPEN = (CountermeasureStatus.PLANNED, CountermeasureStatus.DOING)
CLOSED = (CountermeasureStatus.DONE, CountermeasureStatus.DROPPED)
# Due-date reminders go out from this local time on the due day (not at midnight).
REMIND_AT = dt.time(9, 0)
# How far back a baseline is looked for when the alert's period has no value.
BASELINE_PERIODS = 13
# `/kpi countermeasures` shows closed ones this long after they were closed.
RECENTLY_CLOSED = dt.timedelta(days=30)

_USER_MENTION = re.compile(r"<@(?P<id>[UW][A-Z0-9]+)(?:\|[^>]*)?>")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_MONTH_DAY = re.compile(r"^(\d{1,2})/(\d{1,2})$")
_RELATIVE_DAYS = {
    "today": 0,
    "今日": 0,
    "きょう": 0,
    "本日": 0,
    "tomorrow": 1,
    "明日": 1,
    "あした": 1,
    "あす": 1,
}
_MENTION_PREFIX = re.compile(r"^\s*(?:対策|countermeasure)\s*[:：]\s*", re.IGNORECASE)
_LEADING_MENTION = re.compile(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>\s*")
_TRAILING_TOKEN = re.compile(r"^(?P<head>.*\S)\s+(?P<token>\S+)\s*$", re.DOTALL)


class CountermeasureError(Exception):
    """Why a countermeasure was refused; `code` picks the message, `params` fill it in."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


# -- parsing -----------------------------------------------------------------------------------------


def looks_like_due(token: str) -> bool:
    text = unicodedata.normalize("NFKC", token).strip().casefold()
    return bool(_ISO_DATE.match(text) or _MONTH_DAY.match(text)) or text in _RELATIVE_DAYS


def parse_due(text: str, today: dt.date) -> dt.date:
    """`2026-12-15`, `12/15` (the nearest such day: this year's, or next year's when this year's is
    long past), `today`/`今日`, `tomorrow`/`明日`. Past dates are returned: check_fields refuses them."""
    normalized = unicodedata.normalize("NFKC", text).strip().casefold()
    if normalized in _RELATIVE_DAYS:
        return today + dt.timedelta(days=_RELATIVE_DAYS[normalized])
    try:
        if match := _ISO_DATE.match(normalized):
            return dt.date(int(match[1]), int(match[2]), int(match[3]))
        if match := _MONTH_DAY.match(normalized):
            month, day = int(match[1]), int(match[2])
            this_year = dt.date(today.year, month, day)
            if (today - this_year).days > 182:  # "1/10" typed in December means next January
                return dt.date(today.year + 1, month, day)
            return this_year
    except ValueError:
        raise CountermeasureError("due_malformed", text=text) from None
    raise CountermeasureError("due_malformed", text=text)


@dataclass(frozen=True)
class Typed:
    """A countermeasure as typed: its words, an owner mentioned at the end, a due date at the end."""

    text: str
    owner: str | None
    due: str | None


def split_trailing(text: str) -> Typed:
    """Take an owner mention (`<@U…>`, `<@U…|name>`) and a due date off the end, in either order."""
    owner: str | None = None
    due: str | None = None
    text = text.strip()
    for _ in range(2):
        match = _TRAILING_TOKEN.match(text)
        if match is None:
            break
        token = match["token"]
        if owner is None and (mention := _USER_MENTION.fullmatch(token)):
            owner, text = mention["id"], match["head"]
        elif due is None and looks_like_due(token):
            due, text = token, match["head"]
        elif owner is None and token[:1] in ("@", "＠"):
            # An @name Slack did not turn into a mention (the user was not picked from the list).
            raise CountermeasureError("owner_unresolved", text=token)
        else:
            break
    return Typed(text.strip(), owner, due)


@dataclass(frozen=True)
class CommandText:
    kpi: str
    typed: Typed


def split_command(text: str, is_kpi: Callable[[str], bool]) -> CommandText:
    """`<kpi> <text…> [@owner] [due]`. The KPI name may have spaces ("New approaches"): the longest
    run of leading words that names a KPI is the KPI; otherwise the first word (for did-you-mean)."""
    typed = split_trailing(text)
    words = list(re.finditer(r"\S+", typed.text))
    if len(words) < 2:
        raise CountermeasureError("usage")
    cut = 1
    for count in range(len(words) - 1, 0, -1):
        if is_kpi(typed.text[: words[count - 1].end()]):
            cut = count
            break
    kpi = typed.text[: words[cut - 1].end()]
    body = typed.text[words[cut - 1].end() :].strip()
    return CommandText(kpi, Typed(body, typed.owner, typed.due))


def parse_mention(text: str, bot_user_id: str | None = None) -> Typed | None:
    """The countermeasure in `@kpibot 対策: …` / `@kpibot countermeasure: …`, or None when the
    mention says something else. The owner is a mention at the end, else the first one in the text."""
    while match := _LEADING_MENTION.match(text):
        text = text[match.end() :]
    prefix = _MENTION_PREFIX.match(text)
    if prefix is None:
        return None
    typed = split_trailing(text[prefix.end() :])
    owner = typed.owner
    if owner is None:
        owner = next((m["id"] for m in _USER_MENTION.finditer(typed.text) if m["id"] != bot_user_id), None)
    return Typed(typed.text, owner, typed.due)


# -- who and where -----------------------------------------------------------------------------------


def kpi_owners(session: Session, department_id: int) -> set[str]:
    owners = session.exec(select(Kpi.owner_user_id).where(Kpi.department_id == department_id)).all()
    return {owner for owner in owners if owner}


def may_log(session: Session, department: Department, user_id: str, is_admin: Callable[[], bool]) -> bool:
    assert department.id is not None
    return is_member(department, kpi_owners(session, department.id), user_id, is_admin)


def may_change(
    session: Session,
    countermeasure: Countermeasure,
    department: Department,
    user_id: str,
    is_admin: Callable[[], bool],
) -> bool:
    """Its owner and whoever logged it, besides the department's members."""
    if user_id in (countermeasure.owner_user_id, countermeasure.logged_by):
        return True
    return may_log(session, department, user_id, is_admin)


def today_for(department: Department) -> dt.date:
    return today_in(ZoneInfo(department.timezone))


def kpi_and_department(session: Session, kpi_id: int) -> tuple[Kpi, Department] | None:
    row = session.exec(
        select(Kpi, Department)
        .join(Department, col(Department.id) == Kpi.department_id)
        .where(Kpi.id == kpi_id)
    ).first()
    return None if row is None else (row[0], row[1])


def alert_in_thread(session: Session, channel_id: str, thread_ts: str) -> Alert | None:
    """The alert whose message starts this thread."""
    return session.exec(
        select(Alert).where(Alert.channel_id == channel_id, Alert.thread_ts == thread_ts)
    ).first()


def latest_open_alert(session: Session, kpi_id: int) -> Alert | None:
    """The KPI's latest alert that is posted (has a thread) and not resolved."""
    return session.exec(
        select(Alert)
        .where(
            Alert.kpi_id == kpi_id,
            col(Alert.status) != AlertStatus.RESOLVED,
            col(Alert.thread_ts).is_not(None),
        )
        .order_by(col(Alert.period).desc(), col(Alert.id).desc())
    ).first()


# -- checking and logging ----------------------------------------------------------------------------


def not_allowed(department: Department) -> CountermeasureError:
    return CountermeasureError("not_allowed", department=department, head=department.head_user_id)


def check_fields(
    *, text: str, due: dt.date | None, expected_effect: str | None, today: dt.date
) -> dict[str, CountermeasureError]:
    """Problems by field ("text", "due", "effect"), all at once, so a form shows each by its input."""
    errors: dict[str, CountermeasureError] = {}
    # Refused, not stripped: the text is posted back as logged, and PostgreSQL refuses a NUL.
    text_controls = clean_text(text).removed
    effect_controls = clean_text(expected_effect).removed if expected_effect else 0
    if not text.strip():
        errors["text"] = CountermeasureError("text_required")
    elif text_controls:
        errors["text"] = CountermeasureError("control_characters", count=text_controls)
    elif len(text.strip()) > TEXT_MAX_LENGTH:
        errors["text"] = CountermeasureError("text_too_long", length=len(text.strip()), max=TEXT_MAX_LENGTH)
    if due is not None and due < today:
        errors["due"] = CountermeasureError("due_past", due=due, today=today)
    if effect_controls:
        errors["effect"] = CountermeasureError("control_characters", count=effect_controls)
    elif expected_effect and len(expected_effect.strip()) > EFFECT_MAX_LENGTH:
        errors["effect"] = CountermeasureError(
            "effect_too_long", length=len(expected_effect.strip()), max=EFFECT_MAX_LENGTH
        )
    return errors


@dataclass(frozen=True)
class Target:
    """What a countermeasure is logged against: an alert (and its thread) when there is one, and its KPI."""

    alert: Alert | None
    kpi: Kpi
    department: Department


def target_of_alert(session: Session, alert: Alert | None) -> Target | None:
    if alert is None:
        return None
    found = kpi_and_department(session, alert.kpi_id)
    return None if found is None else Target(alert, *found)


@dataclass(frozen=True)
class InThread:
    """What a countermeasure typed in a thread is logged against, and whose members may log it: an
    alert's thread (its department), or a funnel alert's (the hand-off into `target.kpi`: both
    departments of the hand-off)."""

    target: Target
    departments: tuple[Department, ...]

    def allows(self, session: Session, user_id: str, is_admin: Callable[[], bool]) -> bool:
        return any(may_log(session, department, user_id, is_admin) for department in self.departments)


def in_thread(session: Session, channel_id: str, thread_ts: str) -> InThread | None:
    """The alert or funnel alert whose message starts this thread, if one does."""
    target = target_of_alert(session, alert_in_thread(session, channel_id, thread_ts))
    if target is not None:
        return InThread(target, (target.department,))
    leak = funnel_flows.thread_of(session, channel_id, thread_ts)
    if leak is None:
        return None
    departments = (leak.department,) if leak.before is None else (leak.department, leak.before)
    return InThread(Target(None, leak.kpi, leak.department), departments)


def target_of_form(session: Session, alert_id: int | None, kpi_id: int | None) -> Target | None:
    """The alert decides the KPI (the form's KPI only stands in when the alert is gone)."""
    alert = session.get(Alert, alert_id) if alert_id else None
    kpi_id = alert.kpi_id if alert is not None else kpi_id
    found = kpi_and_department(session, kpi_id) if kpi_id else None
    return None if found is None else Target(alert, *found)


@dataclass(frozen=True)
class Draft:
    """A checked countermeasure, ready to log."""

    kpi: Kpi
    department: Department
    alert: Alert | None
    text: str
    owner_user_id: str | None
    due_date: dt.date | None
    expected_effect: str | None = None


@dataclass(frozen=True)
class Checked:
    """A countermeasure as entered, checked: log `draft` only when there is no refusal."""

    draft: Draft
    allowed: bool
    malformed_due: CountermeasureError | None
    fields: dict[str, CountermeasureError]

    @property
    def problems(self) -> dict[str, CountermeasureError]:
        """By field, all at once (a form shows each by its input); not being allowed is told on the text."""
        problems = dict(self.fields)
        if self.malformed_due is not None:
            problems["due"] = self.malformed_due
        if not self.allowed:
            problems.setdefault("text", not_allowed(self.draft.department))
        return problems

    @property
    def refusal(self) -> CountermeasureError | None:
        """The one problem to tell where there is no form: not being allowed, then a due date that
        could not be read, then the fields in order."""
        if not self.allowed:
            return not_allowed(self.draft.department)
        return self.malformed_due or next(iter(self.fields.values()), None)


def iso_due(text: str, today: dt.date) -> dt.date:
    """The date picker's ISO date (anything else was not picked in it)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CountermeasureError("due_malformed", text=text) from None


def check(
    target: Target,
    *,
    user_id: str,
    allowed: bool,
    text: str,
    owner: str | None,
    due: str | None,
    expected_effect: str | None = None,
    read_due: Callable[[str, dt.date], dt.date] = parse_due,
) -> Checked:
    """The one check of what is entered, whichever way (form, mention, command). The owner defaults
    to the author; `allowed` is may_log's answer for the author."""
    today = today_for(target.department)
    malformed: CountermeasureError | None = None
    due_date: dt.date | None = None
    if due:
        try:
            due_date = read_due(due, today)
        except CountermeasureError as error:
            malformed = error
    fields = check_fields(text=text, due=due_date, expected_effect=expected_effect, today=today)
    draft = Draft(
        target.kpi, target.department, target.alert, text, owner or user_id, due_date, expected_effect
    )
    return Checked(draft, allowed, malformed, fields)


def from_command(session: Session, *, text: str, user_id: str, is_admin: Callable[[], bool]) -> Draft:
    """`/kpi countermeasure <kpi> <text…> [@owner] [due]`, parsed, authorized and checked.

    Logged against the KPI's latest open alert when it has one; the owner defaults to the author."""
    everything = all_kpis(session)
    names = {normalize_name(name) for kpi, _ in everything for name in (kpi.key, kpi.name_ja, kpi.name_en)}
    parts = split_command(text, lambda words: normalize_name(words) in names)
    try:
        kpi, department = find_kpi(everything, parts.kpi, suggest_from=everything)
    except ReportError as error:
        raise CountermeasureError("unknown_kpi", **error.params) from None
    assert kpi.id is not None
    checked = check(
        Target(latest_open_alert(session, kpi.id), kpi, department),
        user_id=user_id,
        allowed=may_log(session, department, user_id, is_admin),
        text=parts.typed.text,
        owner=parts.typed.owner,
        due=parts.typed.due,
    )
    if checked.refusal is not None:
        raise checked.refusal
    return checked.draft


def baseline(
    session: Session, kpi: Kpi, department: Department, alert: Alert | None, today: dt.date
) -> tuple[str, Decimal | None]:
    """The period and value the effect will be measured from: the alert's period if it has a value,
    else the latest period with one (derived KPIs included), else the period in progress."""
    card = build_scorecard(session, department, today, history_length=BASELINE_PERIODS, current=True)
    row = next((r for r in card.rows if r.kpi.id == kpi.id), None)
    if row is None:
        return current_period(kpi.cadence, today).key, None
    series = list(zip(row.period.last(len(row.history)), row.history, strict=True))
    if alert is not None:
        for period, value in series:
            if period.key == alert.period and value is not None:
                return period.key, value
    for period, value in reversed(series):
        if value is not None:
            return period.key, value
    return alert.period if alert is not None else row.period.key, None


def log(
    session: Session,
    draft: Draft,
    *,
    logged_by: str,
    source: str,
    channel_id: str | None = None,
    thread_ts: str | None = None,
) -> Countermeasure:
    """Store a checked countermeasure in the caller's transaction (its thread is set once posted)."""
    assert draft.kpi.id is not None
    period, value = baseline(session, draft.kpi, draft.department, draft.alert, today_for(draft.department))
    if draft.alert is not None:
        channel_id = channel_id or draft.alert.channel_id
        thread_ts = thread_ts or draft.alert.thread_ts
    countermeasure = Countermeasure(
        kpi_id=draft.kpi.id,
        alert_id=None if draft.alert is None else draft.alert.id,
        text=draft.text.strip(),
        owner_user_id=draft.owner_user_id,
        due_date=draft.due_date,
        status=CountermeasureStatus.PLANNED,
        expected_effect=(draft.expected_effect or "").strip() or None,
        logged_by=logged_by,
        channel_id=channel_id,
        thread_ts=thread_ts,
        baseline_period=period,
        baseline_value=value,
    )
    session.add(countermeasure)
    session.flush()
    session.add(
        AuditEvent(
            actor=logged_by,
            action="countermeasure.logged",
            entity="countermeasure",
            entity_id=str(countermeasure.id),
            source=source,
            details={
                "kpi": draft.kpi.key,
                "alert": countermeasure.alert_id,
                "owner": countermeasure.owner_user_id,
                "due": None if draft.due_date is None else draft.due_date.isoformat(),
            },
        )
    )
    return countermeasure


def set_thread(
    session: Session, countermeasure_id: int, channel_id: str, thread_ts: str, permalink: str | None
) -> None:
    """Where it was confirmed: its thread, and the link to the confirmation."""
    session.execute(
        sa.update(Countermeasure)
        .where(col(Countermeasure.id) == countermeasure_id)
        .values(channel_id=channel_id, thread_ts=thread_ts, permalink=permalink, updated_at=utcnow())
    )


# -- status ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusChange:
    countermeasure: Countermeasure
    changed: bool
    by: str | None  # who set its current status (the caller when `changed`)


def set_status(
    session: Session, countermeasure_id: int, status: CountermeasureStatus, *, user_id: str, source: str
) -> StatusChange | None:
    """Close an open countermeasure (done/dropped) with a compare-and-swap: of two clicks, by one
    person or two at once, exactly one changes it. None when there is no such countermeasure."""
    result = session.execute(
        sa.update(Countermeasure)
        .where(col(Countermeasure.id) == countermeasure_id, col(Countermeasure.status).in_(OPEN))
        .values(status=status, updated_at=utcnow(), closed_at=utcnow())
    )
    changed = result.rowcount == 1  # type: ignore[attr-defined]
    if changed:
        session.add(
            AuditEvent(
                actor=user_id,
                action=f"countermeasure.{status.value}",
                entity="countermeasure",
                entity_id=str(countermeasure_id),
                source=source,
                details={},
            )
        )
        session.flush()
    countermeasure = session.get(Countermeasure, countermeasure_id, populate_existing=True)
    if countermeasure is None:
        return None
    by = user_id if changed else _last_status_change_by(session, countermeasure_id)
    return StatusChange(countermeasure, changed, by)


def _last_status_change_by(session: Session, countermeasure_id: int) -> str | None:
    return session.exec(
        select(AuditEvent.actor)
        .where(
            AuditEvent.entity == "countermeasure",
            AuditEvent.entity_id == str(countermeasure_id),
            col(AuditEvent.action).in_([f"countermeasure.{s.value}" for s in CLOSED]),
        )
        .order_by(col(AuditEvent.id).desc())
    ).first()


# -- follow-up ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A countermeasure with its KPI and department, as lists and follow-ups show it."""

    countermeasure: Countermeasure
    kpi: Kpi
    department: Department

    def overdue(self, day: dt.date) -> bool:
        due = self.countermeasure.due_date
        return due is not None and due < day and self.countermeasure.status in OPEN


def _items(session: Session, *conditions: Any) -> list[Item]:
    rows = session.exec(
        select(Countermeasure, Kpi, Department)
        .join(Kpi, col(Kpi.id) == Countermeasure.kpi_id)
        .join(Department, col(Department.id) == Kpi.department_id)
        .where(*conditions)
        # Undated ones last on both databases (SQLite sorts NULL first, PostgreSQL last).
        .order_by(
            col(Countermeasure.due_date).is_(None), col(Countermeasure.due_date), col(Countermeasure.id)
        )
    ).all()
    return [Item(cm, kpi, department) for cm, kpi, department in rows]


def item_of(session: Session, countermeasure_id: int) -> Item | None:
    """A countermeasure with its KPI and department; None when any of them is gone."""
    return next(iter(_items(session, col(Countermeasure.id) == countermeasure_id)), None)


def closed_since(session: Session, department: Department, since: dt.datetime) -> list[Item]:
    """The department's countermeasures closed (done or dropped) since `since`, with their verdicts."""
    return _items(
        session,
        Kpi.department_id == department.id,
        col(Countermeasure.status).in_(CLOSED),
        col(Countermeasure.closed_at) > since,
    )


def reminders_due(session: Session, now: dt.datetime) -> list[Item]:
    """Open countermeasures due today in their department's time zone, once it is REMIND_AT there."""
    day = now.astimezone(dt.UTC).date()
    days = [day - dt.timedelta(days=1), day, day + dt.timedelta(days=1)]
    due = []
    for item in _items(session, col(Countermeasure.status).in_(OPEN), col(Countermeasure.due_date).in_(days)):
        local = now.astimezone(ZoneInfo(item.department.timezone))
        if item.countermeasure.due_date == local.date() and local.time() >= REMIND_AT:
            due.append(item)
    return due


def due_or_overdue(session: Session, department: Department, day: dt.date) -> list[Item]:
    """The department's open countermeasures due on or before `day`, oldest due first."""
    return _items(
        session,
        Kpi.department_id == department.id,
        col(Countermeasure.status).in_(OPEN),
        col(Countermeasure.due_date) <= day,
    )


def for_department(session: Session, department: Department, now: dt.datetime) -> list[Item]:
    """The department's open countermeasures and those closed in the last RECENTLY_CLOSED."""
    return _items(
        session,
        Kpi.department_id == department.id,
        sa.or_(
            col(Countermeasure.status).in_(OPEN),
            col(Countermeasure.updated_at) >= now - RECENTLY_CLOSED,
        ),
    )


def open_counts(session: Session, kpi_ids: Collection[int]) -> dict[int, int]:
    """How many open countermeasures each KPI has."""
    if not kpi_ids:
        return {}
    rows = session.exec(
        select(Countermeasure.kpi_id, sa.func.count())
        .where(col(Countermeasure.kpi_id).in_(list(kpi_ids)), col(Countermeasure.status).in_(OPEN))
        .group_by(col(Countermeasure.kpi_id))
    ).all()
    return {kpi_id: count for kpi_id, count in rows}


# A countermeasure's verdict, from the figure its effect is measured on (the pace of a running total
# in a period in progress): back on track, better than before but not yet, or not better.
WORKED, NOT_YET, DID_NOT_WORK = "worked", "not_yet", "did_not_work"
SERIES_MAX = 12  # periods shown between the baseline and now


@dataclass(frozen=True)
class Effect:
    """What a countermeasure's KPI did since it was logged: before → each period → now, % of
    target, and a verdict. `final` when `period` has ended (its figure is the period's), else the
    verdict is on the pace (a running total) or the value so far."""

    countermeasure: Countermeasure
    kpi: Kpi
    before_period: str
    before: Decimal | None
    before_pct: Decimal | None
    period: str
    after: Decimal
    score: Score
    series: tuple[tuple[str, Decimal | None], ...] = ()  # the periods between, oldest first
    verdict: str = NOT_YET
    final: bool = True
    pace: Decimal | None = None  # a running total's projection to the end of the period in progress

    @property
    def change(self) -> str | None:
        """ "better", "worse" or "same" in the KPI's direction; None without a baseline value."""
        return _change(self.kpi, self.before, self.after)

    @property
    def status(self) -> Status:
        return self.score.status

    @property
    def target(self) -> TargetValue | None:
        return self.score.target


def _change(kpi: Kpi, before: Decimal | None, after: Decimal) -> str | None:
    if before is None:
        return None
    if after == before:
        return "same"
    higher = after > before
    return "better" if higher == (kpi.direction.value == "higher") else "worse"


def verdict_of(kpi: Kpi, before: Decimal | None, judged: Decimal, target: TargetValue | None) -> str:
    """Worked: on track (at or past amber, direction- and range-aware); not yet: better than before;
    did not work: not better."""
    if target is not None and below_target(kpi, judged, target) is None:
        return WORKED
    return NOT_YET if _change(kpi, before, judged) == "better" else DID_NOT_WORK


# Ledger subjects of effects: effect:<countermeasure id>:<period>[:<verdict>] (effect_subject).
EFFECT_PREFIX = "effect:"


def effect_subject(countermeasure_id: int, period: str, verdict: str | None = None) -> str:
    """The ledger subject of an effect: once per period while it runs (`verdict` None), once per
    verdict of its final figure (a correction that changes the verdict is said once more)."""
    base = f"{EFFECT_PREFIX}{countermeasure_id}:{period}"
    return base if verdict is None else f"{base}:{verdict}"


def _worked_before(session: Session, countermeasure_id: int, period: str) -> bool:
    """Whether a period before `period` was already judged "worked": it is followed no further."""
    subjects = session.exec(
        select(Post.subject).where(
            Post.kind == PostKind.FOLLOWUP,
            col(Post.subject).startswith(f"{EFFECT_PREFIX}{countermeasure_id}:"),
            col(Post.subject).endswith(f":{WORKED}"),
        )
    ).all()
    return any(subject.split(":")[2] < period for subject in subjects)


def effects(
    session: Session,
    *,
    kpi: Kpi,
    period: Period,
    value: Decimal,
    kpi_score: Score,
    is_correction: bool,
    today: dt.date | None = None,
) -> list[Effect]:
    """The effects to show now that `value` was reported for `period`: for each countermeasure of the
    KPI still open (or closed as done during this period or the one before) whose baseline is an earlier
    period (or this one, corrected), which has a thread to show it in, and which no earlier period
    showed back on track. Each with the series since its baseline and a verdict."""
    assert kpi.id is not None
    today = today or period.end
    candidates = session.exec(
        select(Countermeasure).where(
            Countermeasure.kpi_id == kpi.id,
            col(Countermeasure.status) != CountermeasureStatus.DROPPED,
            col(Countermeasure.thread_ts).is_not(None),
        )
    ).all()
    since = dt.datetime.combine(period.previous().start, dt.time(), tzinfo=dt.UTC)
    chosen = []
    for cm in candidates:
        base = cm.baseline_period
        if base is None or len(base) != len(period.key):  # none, or the KPI's cadence changed since
            continue
        if not (base < period.key or (base == period.key and is_correction)):
            continue
        if cm.status is CountermeasureStatus.DONE and cm.updated_at < since:
            continue
        assert cm.id is not None
        if _worked_before(session, cm.id, period.key):
            continue
        chosen.append(cm)
    # Explicit branch: one logged in a funnel alert's thread is followed on the hand-off's
    # conversion (bot.countermeasures.funnel), not on this KPI, the stage it hands off into.
    leaks = funnel_flows.leak_threads(session, [(cm.channel_id, cm.thread_ts) for cm in chosen])
    chosen = [cm for cm in chosen if (cm.channel_id, cm.thread_ts) not in leaks]
    if not chosen:
        return []
    between = {
        cm.id: [parse_key(cm.baseline_period).shift(step) for step in range(1, SERIES_MAX + 1)]
        for cm in chosen
        if cm.baseline_period
    }
    keys = {p.key for ps in between.values() for p in ps if p < period}
    targets = targets_for(session, [kpi.id], {cm.baseline_period for cm in chosen if cm.baseline_period})
    values = live_values(session, [kpi.id], keys) if keys else {}
    final = period.end < today
    pace = None if final or not is_running_total(kpi) else projected(value, period, today)
    judged = pace if pace is not None else value
    result = []
    for cm in chosen:
        assert cm.baseline_period is not None
        before = None if cm.baseline_value is None else Decimal(cm.baseline_value)
        target = targets.get((kpi.id, cm.baseline_period))
        before_pct = (
            None if before is None or target is None else achievement_pct(before, target, kpi.direction)
        )
        series = tuple((p.key, values.get((kpi.id, p.key))) for p in between.get(cm.id, []) if p < period)
        result.append(
            Effect(
                cm,
                kpi,
                cm.baseline_period,
                before,
                before_pct,
                period.key,
                value,
                kpi_score,
                series,
                verdict_of(kpi, before, judged, kpi_score.target),
                final,
                pace,
            )
        )
    return result


def finished_effects(session: Session, now: dt.datetime) -> list[tuple[Department, list[Effect]]]:
    """For every KPI with a followed countermeasure (open, with a thread and a baseline): its effects
    on the period that last ended, when that period has a value and comes after the baseline."""
    followed = _items(
        session,
        col(Countermeasure.status).in_(OPEN),
        col(Countermeasure.thread_ts).is_not(None),
        col(Countermeasure.baseline_period).is_not(None),
    )
    kpis = {item.kpi.id: item for item in followed}
    found = []
    for item in kpis.values():
        kpi, department = item.kpi, item.department
        assert kpi.id is not None
        day = now.astimezone(ZoneInfo(department.timezone)).date()
        period = reviewed_period(kpi.cadence, day)
        value = live_values(session, [kpi.id], [period.key]).get((kpi.id, period.key))
        if value is None:
            continue
        target = targets_for(session, [kpi.id], {period.key}).get((kpi.id, period.key))
        kpi_score = score(value, target, kpi.direction, kpi.amber_pct, kpi.red_pct)
        effects_now = effects(
            session, kpi=kpi, period=period, value=value, kpi_score=kpi_score, is_correction=False, today=day
        )
        if effects_now:
            found.append((department, effects_now))
    return found


def record_verdict(session: Session, countermeasure_id: int, verdict: str) -> None:
    """The verdict the thread says now (`/kpi review` lists closed countermeasures with it)."""
    session.execute(
        sa.update(Countermeasure).where(col(Countermeasure.id) == countermeasure_id).values(verdict=verdict)
    )


def status_order(items: Sequence[Item]) -> list[tuple[CountermeasureStatus, list[Item]]]:
    """Items grouped by status: doing, planned, done, dropped (only the groups that have some)."""
    order = [
        CountermeasureStatus.DOING,
        CountermeasureStatus.PLANNED,
        CountermeasureStatus.DONE,
        CountermeasureStatus.DROPPED,
    ]
    return [
        (status, group)
        for status in order
        if (group := [i for i in items if i.countermeasure.status is status])
    ]
