"""Alert state in the database, as plain functions over the caller's Session.

An Alert row is the desired state (severity, status); `posted_severity`/`posted_status`
record what Slack shows, so the sync (bot/alerts/flows.py) knows what to send and nothing is
sent twice. Rows move in the report's own transaction (`check_after_report`, called by
bot.reports.service.save) and in the hourly scan (`check_departments`: the same statements for
a batch of departments, whatever its size); an "Acknowledge" click moves one with `acknowledge`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, and_, col, or_, select

from bot import clock, outbox
from bot.alerts.rules import Finding, evaluate, history_needed, is_worse, latest_on_track
from bot.clock import utcnow
from bot.formulas import parse_formula
from bot.models import Alert, AlertReason, AlertStatus, AuditEvent, Department, Kpi, Post, PostKind, Severity
from bot.periods import Period, parse_key
from bot.permissions import is_member
from bot.reports.actuals import Recorded, live_values
from bot.scorecard import Scorecard, ScoreRow, build_scorecard, build_scorecards, targets_for
from bot.scoring import TargetValue

log = logging.getLogger(__name__)

# The order alerts are listed in: the worst first.
_ORDER = {Severity.RED: 0, Severity.MISSING: 1, Severity.AMBER: 2}
SUBJECT_MAX = 64  # Post.subject


def _history(session: Session, department: Department) -> int:
    """How many periods the department's rules look back (its longest streak); one query."""
    streaks = session.exec(select(Kpi.streak).where(Kpi.department_id == department.id)).all()
    return history_needed(streaks)


def _scorecard(
    session: Session, department: Department, today: dt.date, kpi_ids: Collection[int] | None = None
) -> Scorecard:
    history = _history(session, department)
    return build_scorecard(session, department, today, history_length=history, current=True, kpi_ids=kpi_ids)


def scan_department(session: Session, department: Department, today: dt.date) -> list[Finding]:
    return scan_departments(session, [(department, today)])[0]


def scan_departments(session: Session, planned: Sequence[tuple[Department, dt.date]]) -> list[list[Finding]]:
    """Every finding of each (department, its today), in their order; nothing is written."""
    return [
        [finding for row in card.rows for finding in evaluate(row, day, ZoneInfo(department.timezone))]
        for (department, day), card in zip(planned, scan_scorecards(session, planned), strict=True)
    ]


def scan_scorecards(session: Session, planned: Sequence[tuple[Department, dt.date]]) -> list[Scorecard]:
    """The scan's scorecard of each (department, its today): the periods in progress and as many
    before as its rules look back. Read together for departments sharing a day and a look-back."""
    streaks: dict[int, list[int | None]] = defaultdict(list)
    ids = [department.id for department, _ in planned if department.id is not None]
    if ids:
        # Retired KPIs too, as `_history` reads them: the look-back is the department's.
        for department_id, streak in session.exec(
            select(Kpi.department_id, Kpi.streak).where(col(Kpi.department_id).in_(ids))
        ).all():
            streaks[department_id].append(streak)
    groups: dict[tuple[dt.date, int], list[int]] = defaultdict(list)
    for index, (department, day) in enumerate(planned):
        groups[(day, history_needed(streaks.get(department.id or 0, [])))].append(index)
    cards: dict[int, Scorecard] = {}
    for (day, history), indexes in groups.items():
        found = build_scorecards(session, [planned[i][0] for i in indexes], day, history, current=True)
        cards.update(zip(indexes, found, strict=True))
    return [cards[index] for index in range(len(planned))]


@dataclass(frozen=True)
class Change:
    """What happened to an alert: "raised", "worse", "better" (still below), "reopened"
    (below again after it was resolved), "resolved"."""

    alert: Alert
    kind: str
    before: Severity | None = None


# Alerts already loaded for a department, by (KPI id, period key); see `check_department`.
Known = dict[tuple[int, str], Alert]


def apply_finding(session: Session, finding: Finding, known: Known | None = None) -> Change | None:
    """Record a finding on its (KPI, period) alert: raise it, or move its severity."""
    assert finding.kpi.id is not None
    slot = (finding.kpi.id, finding.period.key)
    if known is not None:
        alert = known.get(slot)
    else:
        alert = session.exec(
            select(Alert).where(Alert.kpi_id == finding.kpi.id, Alert.period == finding.period.key)
        ).first()
    now = utcnow()
    if alert is None:
        alert = Alert(
            kpi_id=finding.kpi.id,
            period=finding.period.key,
            severity=finding.severity,
            reason=finding.reason,
            status=AlertStatus.OPEN,
            value=finding.value,
            achievement_pct=finding.achievement_pct,
            created_at=now,
            updated_at=now,
        )
        session.add(alert)
        session.flush()
        if known is not None:
            known[slot] = alert
        return Change(alert, "raised")
    before = alert.severity
    reopened = alert.status is AlertStatus.RESOLVED
    alert.value, alert.achievement_pct, alert.reason = finding.value, finding.achievement_pct, finding.reason
    if before is finding.severity and not reopened:
        session.add(alert)
        return None
    alert.severity = finding.severity
    alert.updated_at = now
    if reopened:
        # A new episode: whoever acknowledged the last one has not seen this one.
        alert.status, alert.resolved_at, alert.acknowledged_by = AlertStatus.OPEN, None, None
    session.add(alert)
    if reopened:
        return Change(alert, "reopened", before)
    kind = "worse" if is_worse(finding.severity, before) else "better"
    return Change(alert, kind, before)


def resolve_recovered(
    session: Session,
    kpi: Kpi,
    period: Period,
    findings: Sequence[Finding],
    *,
    recovered: bool,
    known: Known | None = None,
) -> list[Change]:
    """Close the KPI's open alerts once it is back on track.

    `recovered` says the KPI's latest value (of `period`) is at or above its amber
    threshold (or on pace); alerts of that period and earlier ones are then resolved,
    unless a finding still stands for their period.
    """
    if not recovered:
        return []
    standing = {finding.period.key for finding in findings}
    if known is not None:
        open_alerts = [
            alert
            for (kpi_id, key), alert in known.items()
            if kpi_id == kpi.id and alert.status is not AlertStatus.RESOLVED and key <= period.key
        ]
    else:
        open_alerts = list(
            session.exec(
                select(Alert).where(
                    Alert.kpi_id == kpi.id,
                    col(Alert.status) != AlertStatus.RESOLVED,
                    col(Alert.period) <= period.key,
                )
            ).all()
        )
    changes = []
    now = utcnow()
    for alert in open_alerts:
        if alert.period in standing or len(alert.period) != len(period.key):
            continue
        alert.status, alert.resolved_at, alert.updated_at = AlertStatus.RESOLVED, now, now
        session.add(alert)
        changes.append(Change(alert, "resolved", alert.severity))
    return changes


def check_department(
    session: Session, department: Department, today: dt.date, kpi_ids: Collection[int] | None = None
) -> list[Change]:
    """Evaluate a department's KPIs (or only `kpi_ids`) and update their alerts in the caller's
    transaction: raise, move, reopen, resolve. A constant number of queries per department."""
    card = _scorecard(session, department, today, kpi_ids)
    rows = [row for row in card.rows if kpi_ids is None or row.kpi.id in kpi_ids]
    if not rows:
        return []
    return _check(session, rows, department, today, _known_alerts(session, rows))


def check_departments(
    session: Session, planned: Sequence[tuple[Department, dt.date]]
) -> list[list[Change] | Exception]:
    """`check_department` for each (department, its today), in their order, in the caller's
    transaction: their scorecards and alerts read together, each department's writes in a
    savepoint of its own, so a fault in one is its outcome and leaves the others' changes."""
    cards = scan_scorecards(session, planned)
    rows = [row for card in cards for row in card.rows]
    known = _known_alerts(session, rows) if rows else {}
    outcomes: list[list[Change] | Exception] = []
    for (department, day), card in zip(planned, cards, strict=True):
        try:
            with session.begin_nested():
                outcomes.append(_check(session, card.rows, department, day, known) if card.rows else [])
        except OperationalError:
            raise
        except Exception as error:
            outcomes.append(error)
    return outcomes


def _check(
    session: Session, rows: Sequence[ScoreRow], department: Department, today: dt.date, known: Known
) -> list[Change]:
    tz = ZoneInfo(department.timezone)
    changes: list[Change] = []
    for row in rows:
        latest = latest_on_track(row, today)
        # Once a later period is back on track, an earlier period's shortfall is history: its
        # alert is resolved, not raised (or reopened) again by every later check.
        findings = [
            finding for finding in evaluate(row, today, tz) if latest is None or finding.period >= latest
        ]
        changes += [change for finding in findings if (change := apply_finding(session, finding, known))]
        if latest is not None:
            changes += resolve_recovered(session, row.kpi, latest, findings, recovered=True, known=known)
    return changes


def check_kpi(
    session: Session, kpi: Kpi, department: Department, today: dt.date, also: Collection[int] = ()
) -> list[Change]:
    """After a report: evaluate one KPI (and the department's KPIs `also`) and update their
    alerts (the caller's transaction)."""
    assert kpi.id is not None
    return check_department(session, department, today, kpi_ids={kpi.id, *also})


def _known_alerts(session: Session, rows: Sequence[ScoreRow]) -> Known:
    """The rows' alerts that a check may touch: every unresolved one, and any of the periods
    evaluated (a resolved alert of those may reopen). One query."""
    ids = [row.kpi.id for row in rows if row.kpi.id is not None]
    periods = {key for row in rows for key in (row.period.key, row.period.previous().key)}
    alerts = session.exec(
        select(Alert).where(
            col(Alert.kpi_id).in_(ids),
            or_(col(Alert.status) != AlertStatus.RESOLVED, col(Alert.period).in_(periods)),
        )
    ).all()
    return {(alert.kpi_id, alert.period): alert for alert in alerts}


def affected_kpis(session: Session, *kpis: Kpi) -> list[tuple[Kpi, Department]]:
    """The KPIs and every derived KPI whose formula uses one of them, each with its department."""
    found = list({kpi.id: kpi for kpi in kpis}.values())
    keys, ids = {kpi.key for kpi in found}, {kpi.id for kpi in found}
    # Only formulas that mention one of the keys are read (then parsed: "mqls" is in "sqls / mqls").
    mentions = or_(*(col(Kpi.formula).contains(key, autoescape=True) for key in sorted(keys)))
    for candidate in session.exec(select(Kpi).where(col(Kpi.formula).is_not(None), mentions)).all():
        if candidate.id not in ids and keys & _formula_names(candidate):
            found.append(candidate)
    departments = {
        department.id: department
        for department in session.exec(
            select(Department).where(col(Department.id).in_({k.department_id for k in found}))
        ).all()
    }
    return [(k, departments[k.department_id]) for k in found]


def _formula_names(kpi: Kpi) -> frozenset[str]:
    try:
        return parse_formula(kpi.formula or "").names
    except ValueError:
        return frozenset()


def check_after_report(session: Session, kpi: Kpi, recorded: Recorded) -> None:
    """After a report is stored (bot.reports.service.save calls it): the report moves its KPI's
    alerts (and its derived KPIs') in the report's own transaction. A fault in the rules never
    loses the report: it is logged, the alert rows are left as they were, and the hourly scan
    evaluates the KPI again. Inside `checks_after_reports` it only notes the KPI."""
    pending = session.info.get(_PENDING)
    if pending is not None:
        pending.append((kpi, recorded))
        return
    _check_reported(session, [(kpi, recorded)])


_PENDING = "bot.alerts.pending_checks"


@contextmanager
def checks_after_reports(session: Session) -> Iterator[None]:
    """Many reports saved at once (a form, a pushed batch): `check_after_report` calls inside
    are noted, and when the block ends each KPI they moved (and each derived one) is checked
    once, with one scorecard of just those KPIs per department."""
    if _PENDING in session.info:  # already collecting: the outer block checks
        yield
        return
    pending: list[tuple[Kpi, Recorded]] = []
    session.info[_PENDING] = pending
    try:
        yield
    finally:
        del session.info[_PENDING]
    _check_reported(session, pending)


def _check_reported(session: Session, reports: Sequence[tuple[Kpi, Recorded]]) -> None:
    moved = [kpi for kpi, recorded in reports if recorded.changed]
    if not moved:
        return
    try:
        with session.begin_nested():
            by_department: dict[int, tuple[Department, list[Kpi]]] = {}
            for affected, department in affected_kpis(session, *moved):
                assert department.id is not None
                by_department.setdefault(department.id, (department, []))[1].append(affected)
            for department, (first, *others) in by_department.values():
                day = clock.today(ZoneInfo(department.timezone))
                check_kpi(session, first, department, day, also=[kpi.id for kpi in others if kpi.id])
    except OperationalError:
        raise
    except Exception:
        keys = ", ".join(sorted({kpi.key for kpi in moved}))
        log.exception("alert check after a report of %s failed; the next scan retries", keys)


# -- what Slack shows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertView:
    """An alert with what its message shows."""

    alert: Alert
    kpi: Kpi
    department: Department
    target: TargetValue | None
    so_far: Decimal | None  # the period's value so far (a pace alert shows it beside the projection)
    message_ts: str | None = None  # the message listing it: its root, or a reply of a grouped message

    @property
    def period(self) -> Period:
        return parse_key(self.alert.period)

    @property
    def locale(self) -> str:
        return self.department.locale

    @property
    def resolved(self) -> bool:
        return self.alert.status is AlertStatus.RESOLVED

    @property
    def sort_key(self) -> tuple[int, int, int, int]:
        return (_ORDER[self.alert.severity], self.department.id or 0, self.kpi.position, self.kpi.id or 0)


def unshown(
    session: Session,
    *,
    alert_ids: Collection[int] | None = None,
    kpi_ids: Collection[int] | None = None,
    department_id: int | None = None,
) -> list[AlertView]:
    """The alerts (of those selected) whose message is behind their state."""
    conditions: list[Any] = [
        or_(
            col(Alert.posted_status).is_(None),
            col(Alert.posted_severity).is_(None),
            col(Alert.posted_status) != col(Alert.status),
            col(Alert.posted_severity) != col(Alert.severity),
            # A streak escalates an alert already shown (bot.alerts.rules.events).
            and_(
                col(Alert.reason) == AlertReason.STREAK,
                or_(col(Alert.posted_reason).is_(None), col(Alert.posted_reason) != AlertReason.STREAK),
            ),
        )
    ]
    if alert_ids is not None:
        conditions.append(col(Alert.id).in_(list(alert_ids)))
    if kpi_ids is not None:
        conditions.append(col(Alert.kpi_id).in_(list(kpi_ids)))
    if department_id is not None:
        conditions.append(col(Kpi.department_id) == department_id)
    return load(session, *conditions)


def in_threads(session: Session, thread_ts: Iterable[str | None]) -> list[AlertView]:
    """Every alert shown in these threads (a grouped message lists many)."""
    return load(session, col(Alert.thread_ts).in_(set(thread_ts)))


def load(session: Session, *conditions: Any) -> list[AlertView]:
    """Alerts with their KPI, department, target, value so far and the message listing them."""
    rows = session.exec(
        select(Alert, Kpi, Department, Post.ts)
        .join(Kpi, col(Kpi.id) == Alert.kpi_id)
        .join(Department, col(Department.id) == Kpi.department_id)
        .outerjoin(
            Post,
            and_(
                col(Post.department_id) == Kpi.department_id,
                col(Post.kind) == PostKind.ALERT,
                col(Post.period) == Alert.period,
                col(Post.subject) == Kpi.key,
            ),
        )
        .where(*conditions)
        .order_by(col(Department.id), col(Kpi.position), col(Kpi.id), col(Alert.period))
    ).all()
    kpi_ids = {kpi.id for _, kpi, _, _ in rows if kpi.id is not None}
    periods = {alert.period for alert, _, _, _ in rows}
    targets = targets_for(session, list(kpi_ids), periods)
    values = live_values(session, kpi_ids, periods)
    return [
        AlertView(
            alert,
            kpi,
            department,
            targets.get((alert.kpi_id, alert.period)),
            values.get((alert.kpi_id, alert.period)),
            ts or alert.thread_ts,
        )
        for alert, kpi, department, ts in rows
    ]


def subject(kpi: Kpi, event: str | None = None) -> str:
    """The Post ledger subject of an alert's root (`event` None) or of one of its thread notes."""
    if event is None:
        return kpi.key
    text = f"{kpi.key}:{event}"
    if len(text) <= SUBJECT_MAX:
        return text
    digest = hashlib.sha1(kpi.key.encode()).hexdigest()[:12]
    return f"{digest}:{event}"[:SUBJECT_MAX]


def post_key(view: AlertView, event: str | None = None) -> outbox.Key:
    """The Post ledger key of an alert's root (`event` None) or of one of its thread notes."""
    assert view.department.id is not None
    return outbox.Key(view.department.id, PostKind.ALERT, view.alert.period, subject(view.kpi, event))


def record_posted(session: Session, shown: Sequence[tuple[AlertView, str, str]]) -> None:
    """The alerts are now shown in (thread, message): store the thread and what it shows."""
    for view, thread_ts, message_ts in shown:
        session.execute(
            sa.update(Alert)
            .where(col(Alert.id) == view.alert.id)
            .values(
                channel_id=view.department.channel_id,
                thread_ts=thread_ts,
                posted_severity=view.alert.severity,
                posted_status=view.alert.status,
                posted_reason=view.alert.reason,
            )
        )
        # A re-posted alert (its message was deleted): the ledger row points at the new message.
        outbox.repoint(session, post_key(view), ts=message_ts, channel_id=view.department.channel_id)


def mark_shown(session: Session, views: Sequence[AlertView]) -> None:
    """What Slack shows now matches the state these views were rendered from."""
    for view in views:
        session.execute(
            sa.update(Alert)
            .where(col(Alert.id) == view.alert.id)
            .values(
                posted_severity=view.alert.severity,
                posted_status=view.alert.status,
                posted_reason=view.alert.reason,
            )
        )


# -- the Acknowledge button ------------------------------------------------------------------------


@dataclass(frozen=True)
class Acknowledged:
    """The outcome of a click: `won` if this click changed the status; else what it found
    (`allowed` False: the user is not a member of the alert's department)."""

    won: bool
    alert: Alert | None
    department: Department | None
    allowed: bool = True


def acknowledge(
    session: Session, *, alert_id: int, user_id: str, is_admin: Callable[[], bool]
) -> Acknowledged:
    """Open → acknowledged, as one compare-and-swap: of simultaneous clicks exactly one wins.
    Only the department's members (its head, its KPIs' owners) and admins may: acknowledging
    takes away the alert's call to discuss it."""
    found = session.exec(
        select(Alert, Kpi, Department)
        .join(Kpi, col(Kpi.id) == Alert.kpi_id)
        .join(Department, col(Department.id) == Kpi.department_id)
        .where(col(Alert.id) == alert_id)
    ).first()
    if found is None:
        return Acknowledged(False, None, None)
    alert, kpi, department = found
    owners = session.exec(select(Kpi.owner_user_id).where(col(Kpi.department_id) == department.id)).all()
    if not is_member(department, set(owners), user_id, is_admin):
        return Acknowledged(False, alert, department, allowed=False)
    won = (
        session.execute(
            sa.update(Alert)
            .where(col(Alert.id) == alert_id, col(Alert.status) == AlertStatus.OPEN)
            .values(status=AlertStatus.ACKNOWLEDGED, acknowledged_by=user_id, updated_at=utcnow())
        ).rowcount
        == 1
    )
    if won:
        session.refresh(alert)
        session.add(
            AuditEvent(
                actor=user_id,
                action="alert.acknowledged",
                entity="alert",
                entity_id=str(alert_id),
                source="slack",
                details={"kpi": kpi.key, "period": alert.period, "severity": alert.severity.value},
            )
        )
    else:
        session.refresh(alert)  # who acknowledged it, or that it resolved meanwhile
    return Acknowledged(won, alert, department)
