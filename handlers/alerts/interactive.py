"""Alert messages in department channels, and their "Acknowledge" button.

The Alert rows are the desired state (bot/alerts/rules.py moves them, in the same transaction as a
report or in the hourly scan); `sync_alerts` makes Slack show it:

- a new alert → a root message in the department channel (Post ledger subject `<kpi key>`),
  whose thread is where the alert is discussed; more than STORM new alerts for one channel
  at once → one grouped message listing them all instead (continued in thread replies);
- a severity change, a reopening, a resolution or an acknowledgement → `chat.update` of the
  message that shows the alert, and a note in its thread, said once per alert and event
  (subjects `<kpi key>:red`, `:amber`, `:missing`, `:reopened`, `:resolved`, `:acknowledged`);
- a message deleted in Slack → a new root for its alerts; their thread moves there.

`posted_severity`/`posted_status` record what Slack shows, so a retry (or the next scan)
finishes whatever a Slack or database error interrupted, and nothing is said twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, and_, col, or_, select

from bot import outbox, render
from bot.alerts.service import Change, affected_kpis, check_department
from bot.clock import utcnow
from bot.database import transaction
from bot.models import Alert, AlertStatus, AuditEvent, Department, Kpi, Post, PostKind, Severity
from bot.outbox import Message, Outbox, Poster, PostFailed
from bot.reports.actuals import live_values
from bot.reports.service import Reported
from bot.scorecard import all_departments, targets_for
from handlers.alerts.messages import (
    ACTION_ACKNOWLEDGE,
    AlertView,
    alert_message,
    group_messages,
    group_part,
    note,
)
from handlers.deps import Deps
from handlers.digests.messages import SlackMessage
from handlers.poster import SlackPoster

log = logging.getLogger(__name__)

# More new alerts than this for one channel in one go is a storm: one grouped message, not many.
STORM = 5
# What chat.update answers when the message it should change was deleted.
GONE = {"message_not_found", "cant_update_message"}
SUBJECT_MAX = 64  # Post.subject


@dataclass
class SyncResult:
    posted: int = 0  # messages posted (roots, grouped roots and their continuations)
    updated: int = 0  # messages updated
    notes: int = 0  # thread notes
    failed: int = 0  # Slack calls that failed (logged; the next sync tries again)
    no_channel: list[str] = field(default_factory=list)  # departments skipped for want of a channel

    def add(self, other: SyncResult) -> None:
        self.posted += other.posted
        self.updated += other.updated
        self.notes += other.notes
        self.failed += other.failed
        self.no_channel += other.no_channel


def _engine(target: Deps | Engine) -> Engine:
    return target.engine if isinstance(target, Deps) else target


def subject(kpi: Kpi, event: str | None = None) -> str:
    """The Post ledger subject of an alert's root (`event` None) or of one of its thread notes."""
    if event is None:
        return kpi.key
    text = f"{kpi.key}:{event}"
    if len(text) <= SUBJECT_MAX:
        return text
    digest = hashlib.sha1(kpi.key.encode()).hexdigest()[:12]
    return f"{digest}:{event}"[:SUBJECT_MAX]


# -- after a report --------------------------------------------------------------------------------


def on_reported(deps: Deps, client: WebClient, reported: Reported) -> None:
    """Show in Slack what the report did to the KPI's alerts (and its derived KPIs'): the rows
    were moved in the report's transaction by bot.alerts.rules' listener."""
    with transaction(deps.engine) as session:
        kpi_ids = [kpi.id for kpi, _ in affected_kpis(session, reported.kpi) if kpi.id is not None]
    sync_alerts(deps, client, kpi_ids=kpi_ids)


# -- the scheduled scan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanChange:
    """One alert change found by a scan, as plain values (a dry run rolls the rows back)."""

    department: str
    kpi: str
    period: str
    kind: str
    severity: Severity
    before: Severity | None


@dataclass
class ScanResult:
    changes: list[ScanChange] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (department key, error)
    slack: SyncResult = field(default_factory=SyncResult)


def scan_and_post(
    target: Deps | Engine,
    client: WebClient | None,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    department_key: str | None = None,
) -> ScanResult:
    """Evaluate every department's KPIs (one transaction each), then bring Slack in step.

    Time passing raises alerts no report does: a running total falling behind pace, a second
    period without a report. A failure in one department is logged and never stops the others.
    `dry_run` evaluates and rolls back: nothing is saved or posted.
    """
    engine = _engine(target)
    now = now or utcnow()
    result = ScanResult()
    with transaction(engine) as session:
        departments = [
            d for d in all_departments(session) if not d.is_division and department_key in (None, d.key)
        ]
    for department in departments:
        try:
            with transaction(engine) as session:
                day = now.astimezone(ZoneInfo(department.timezone)).date()
                changes = check_department(session, department, day)
                result.changes += _plain(session, department, changes)
                if dry_run:
                    session.rollback()
        except Exception as error:
            log.exception("alert scan of %s failed", department.key)
            result.failed.append((department.key, str(error) or type(error).__name__))
            continue
        if dry_run or client is None:
            continue
        try:
            result.slack.add(sync_alerts(engine, client, department_id=department.id))
        except Exception as error:
            log.exception("posting the alerts of %s failed", department.key)
            result.failed.append((department.key, str(error) or type(error).__name__))
    return result


def _plain(session: Session, department: Department, changes: Sequence[Change]) -> list[ScanChange]:
    if not changes:
        return []
    keys = dict(
        session.exec(select(Kpi.id, Kpi.key).where(col(Kpi.id).in_({c.alert.kpi_id for c in changes}))).all()
    )
    return [
        ScanChange(
            department.key,
            keys[change.alert.kpi_id],
            change.alert.period,
            change.kind,
            change.alert.severity,
            change.before,
        )
        for change in changes
    ]


# -- making Slack show the alerts ------------------------------------------------------------------


def sync_alerts(
    target: Deps | Engine,
    client: WebClient,
    *,
    alert_ids: Collection[int] | None = None,
    kpi_ids: Collection[int] | None = None,
    department_id: int | None = None,
) -> SyncResult:
    """Post, update or annotate every alert (of those selected) whose message is behind its state."""
    engine = _engine(target)
    poster = SlackPoster(client)
    result = SyncResult()
    conditions: list[Any] = [
        or_(
            col(Alert.posted_status).is_(None),
            col(Alert.posted_severity).is_(None),
            col(Alert.posted_status) != col(Alert.status),
            col(Alert.posted_severity) != col(Alert.severity),
        )
    ]
    if alert_ids is not None:
        conditions.append(col(Alert.id).in_(list(alert_ids)))
    if kpi_ids is not None:
        conditions.append(col(Alert.kpi_id).in_(list(kpi_ids)))
    if department_id is not None:
        conditions.append(col(Kpi.department_id) == department_id)
    with transaction(engine) as session:
        pending = _load(session, *conditions)
    if not pending:
        return result

    # Raised and resolved before they were ever shown: there is nothing to say.
    _mark_shown(engine, [v for v in pending if v.alert.thread_ts is None and _resolved(v)])
    new: dict[str, list[AlertView]] = defaultdict(list)
    for view in pending:
        if view.alert.thread_ts is not None or _resolved(view):
            continue
        if not view.department.channel_id:
            if view.department.key not in result.no_channel:
                log.warning("alerts of %s not posted: the department has no channel", view.department.key)
                result.no_channel.append(view.department.key)
            continue
        new[view.department.channel_id].append(view)
    for channel, views in new.items():
        _post_new(engine, poster, channel, views, result)
    changed = [view for view in pending if view.alert.thread_ts is not None]
    if changed:
        _update(engine, poster, changed, result)
    return result


def _resolved(view: AlertView) -> bool:
    return view.alert.status is AlertStatus.RESOLVED


def _load(session: Session, *conditions: Any) -> list[AlertView]:
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


# -- new alerts ------------------------------------------------------------------------------------


def _post_new(
    engine: Engine, poster: Poster, channel: str, views: list[AlertView], result: SyncResult
) -> None:
    claims: list[tuple[AlertView, outbox.Claim]] = []
    for view in views:
        assert view.department.id is not None
        claim = outbox.claim(
            engine,
            outbox.Key(view.department.id, PostKind.ALERT, view.alert.period, subject(view.kpi)),
            channel_id=channel,
            # A failed alert is retried by the next report or scan (the failure was logged).
            retry_failed=True,
        )
        if claim is not None:
            claims.append((view, claim))
    posted, error = _post_roots(poster, channel, [view for view, _ in claims], result)
    by_id = {view.alert.id: claim for view, claim in claims}
    _record_posted(engine, posted)
    for view, _, message_ts in posted:
        outbox.complete(engine, by_id.pop(view.alert.id), message_ts)
    for claim in by_id.values():
        outbox.fail(engine, claim, error or "not posted")


def _post_roots(
    poster: Poster, channel: str, views: list[AlertView], result: SyncResult
) -> tuple[list[tuple[AlertView, str, str]], str | None]:
    """Post alerts as new roots: one each, or one grouped message (and its continuations) for a
    storm. Returns (alert, its thread ts, the ts of the message listing it) for those posted, and
    Slack's last error if any was not."""
    posted: list[tuple[AlertView, str, str]] = []
    errors: list[str] = []
    if not views:
        return posted, None
    key = views[0].department.key
    if len(views) <= STORM:
        for view in views:
            ts = _post(poster, channel, alert_message(view), None, errors, view.department.key)
            if ts is not None:
                posted.append((view, ts, ts))
    else:
        (root, first), *rest = group_messages(views, views[0].locale)
        root_ts = _post(poster, channel, root, None, errors, key)
        if root_ts is not None:
            posted += [(view, root_ts, root_ts) for view in first]
            for message, listed in rest:
                ts = _post(poster, channel, message, root_ts, errors, key)
                if ts is not None:
                    posted += [(view, root_ts, ts) for view in listed]
    result.posted += len({message_ts for _, _, message_ts in posted})
    result.failed += len(errors)
    return posted, errors[-1] if errors else None


def _post(
    poster: Poster,
    channel: str,
    message: SlackMessage,
    thread_ts: str | None,
    errors: list[str],
    department_key: str,
) -> str | None:
    try:
        return poster.post(channel, message, thread_ts=thread_ts)
    except PostFailed as error:
        errors.append(error.code)
        log.error("alert for %s not posted to %s: %s", department_key, channel, error.code)
        return None


def _record_posted(engine: Engine, shown: Sequence[tuple[AlertView, str, str]]) -> None:
    """The alerts are now shown in (thread, message): store the thread and what it shows."""
    if not shown:
        return
    with transaction(engine) as session:
        for view, thread_ts, message_ts in shown:
            session.execute(
                sa.update(Alert)
                .where(col(Alert.id) == view.alert.id)
                .values(
                    channel_id=view.department.channel_id,
                    thread_ts=thread_ts,
                    posted_severity=view.alert.severity,
                    posted_status=view.alert.status,
                )
            )
            # A re-posted alert (its message was deleted): the ledger row points at the new message.
            assert view.department.id is not None
            key = outbox.Key(view.department.id, PostKind.ALERT, view.alert.period, subject(view.kpi))
            outbox.repoint(session, key, ts=message_ts, channel_id=view.department.channel_id)


def _mark_shown(engine: Engine, views: Sequence[AlertView]) -> None:
    """What Slack shows now matches the state these views were rendered from."""
    if not views:
        return
    with transaction(engine) as session:
        for view in views:
            session.execute(
                sa.update(Alert)
                .where(col(Alert.id) == view.alert.id)
                .values(posted_severity=view.alert.severity, posted_status=view.alert.status)
            )


# -- changed alerts --------------------------------------------------------------------------------


def _update(engine: Engine, poster: Poster, changed: list[AlertView], result: SyncResult) -> None:
    changed_ids = {view.alert.id for view in changed}
    with transaction(engine) as session:
        threads = _load(session, col(Alert.thread_ts).in_({view.alert.thread_ts for view in changed}))
    # Every message listing a changed alert, with everything it lists (for its grouped siblings).
    messages: dict[tuple[str, str], list[AlertView]] = defaultdict(list)
    for view in threads:
        if view.alert.channel_id and view.message_ts:
            messages[(view.alert.channel_id, view.message_ts)].append(view)
    for (channel, ts), listed in messages.items():
        if not any(view.alert.id in changed_ids for view in listed):
            continue
        thread = [
            view
            for view in threads
            if view.alert.channel_id == channel and view.alert.thread_ts == listed[0].alert.thread_ts
        ]
        try:
            poster.update(channel, ts, _rendered(listed, thread))
            result.updated += 1
        except PostFailed as error:
            if error.code in GONE:
                log.warning("alert message %s in %s was deleted; posting it again", ts, channel)
                _repost(engine, poster, channel, ts, listed, result)
            else:
                result.failed += 1
                log.error("alert message %s in %s not updated: %s", ts, channel, error.code)
            continue
        mine = [view for view in listed if view.alert.id in changed_ids]
        _notes(engine, poster, mine, result)
        _mark_shown(engine, mine)


def _rendered(listed: list[AlertView], thread: list[AlertView]) -> Message:
    """A message as it should look now, for chat.update."""
    root_ts = listed[0].alert.thread_ts
    if len(thread) == 1 and listed[0].message_ts == root_ts:
        message = alert_message(listed[0])
    else:
        parts = sorted({view.message_ts for view in thread if view.message_ts}, key=float)
        part = parts.index(listed[0].message_ts) + 1 if listed[0].message_ts in parts else 1
        message = group_part(
            sorted(listed, key=lambda v: v.sort_key),
            sorted(thread, key=lambda v: v.sort_key),
            part,
            len(parts),
            listed[0].locale,
        )
    return message


def _repost(
    engine: Engine,
    poster: Poster,
    channel: str,
    gone_ts: str,
    listed: list[AlertView],
    result: SyncResult,
) -> None:
    """The message listing these alerts was deleted: post those still open as new roots, once."""
    _mark_shown(engine, [view for view in listed if _resolved(view)])
    claims: list[tuple[AlertView, outbox.Claim]] = []
    for view in listed:
        if _resolved(view):
            continue
        assert view.department.id is not None
        claim = outbox.claim(
            engine,
            outbox.Key(
                view.department.id, PostKind.ALERT, view.alert.period, subject(view.kpi, f"moved:{gone_ts}")
            ),
            channel_id=channel,
            retry_failed=True,
        )
        if claim is not None:
            claims.append((view, claim))
    posted, error = _post_roots(poster, channel, [view for view, _ in claims], result)
    by_id = {view.alert.id: claim for view, claim in claims}
    moved = [
        (_moved(view, thread_ts, message_ts), thread_ts, message_ts) for view, thread_ts, message_ts in posted
    ]
    _record_posted(engine, moved)
    # What changed is said in the new thread (the views still hold what Slack showed before).
    _notes(engine, poster, [view for view, _, _ in moved], result)
    for view, _, message_ts in posted:
        outbox.complete(engine, by_id.pop(view.alert.id), message_ts)
    for claim in by_id.values():
        outbox.fail(engine, claim, error or "not posted")


def _moved(view: AlertView, thread_ts: str, message_ts: str) -> AlertView:
    """The view with its alert in its new thread (the row is detached: nothing is written here)."""
    view.alert.thread_ts = thread_ts
    return replace(view, message_ts=message_ts)


def _events(alert: Alert) -> list[tuple[str, Severity | None]]:
    """What changed since Slack last showed the alert: (event, severity before)."""
    before = alert.posted_severity
    if alert.status is AlertStatus.RESOLVED:
        return [] if alert.posted_status is AlertStatus.RESOLVED else [("resolved", before)]
    if alert.posted_status is AlertStatus.RESOLVED:
        return [("reopened", before)]
    events: list[tuple[str, Severity | None]] = []
    if before is not None and before is not alert.severity:
        events.append(("changed", before))
    if alert.status is AlertStatus.ACKNOWLEDGED and alert.posted_status is AlertStatus.OPEN:
        events.append(("acknowledged", before))
    return events


def _notes(engine: Engine, poster: Poster, views: Sequence[AlertView], result: SyncResult) -> None:
    """Say in each alert's thread what changed: once per alert and event (the Post ledger)."""
    posts = Outbox(engine, poster)
    for view in views:
        alert = view.alert
        assert view.department.id is not None and alert.thread_ts and alert.channel_id
        for event, before in _events(alert):
            key = alert.severity.value if event == "changed" else event
            sent = posts.send(
                outbox.Key(view.department.id, PostKind.ALERT, alert.period, subject(view.kpi, key)),
                alert.channel_id,
                [Message(note(event, view, before))],
                thread_ts=alert.thread_ts,
            )
            result.failed += sent.status == "failed"
            result.notes += sent.status == "posted"


# -- the Acknowledge button ------------------------------------------------------------------------


@dataclass(frozen=True)
class Acknowledged:
    """The outcome of a click: `won` if this click changed the status; else what it found."""

    won: bool
    alert: Alert | None
    department: Department | None


def acknowledge(engine: Engine, alert_id: int, user_id: str) -> Acknowledged:
    """Open → acknowledged, as one compare-and-swap: of simultaneous clicks exactly one wins."""
    with transaction(engine) as session:
        won = (
            session.execute(
                sa.update(Alert)
                .where(col(Alert.id) == alert_id, col(Alert.status) == AlertStatus.OPEN)
                .values(status=AlertStatus.ACKNOWLEDGED, acknowledged_by=user_id, updated_at=utcnow())
            ).rowcount
            == 1
        )
        found = session.exec(
            select(Alert, Kpi, Department)
            .join(Kpi, col(Kpi.id) == Alert.kpi_id)
            .join(Department, col(Department.id) == Kpi.department_id)
            .where(col(Alert.id) == alert_id)
        ).first()
        if found is None:
            return Acknowledged(False, None, None)
        alert, kpi, department = found
        if won:
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
    return Acknowledged(won, alert, department)


def register(app: App, deps: Deps) -> None:
    """The "Acknowledge" button. ("Log countermeasure" belongs to handlers/countermeasures/interactive.py.)"""

    @app.action(ACTION_ACKNOWLEDGE)
    def acknowledge_clicked(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        user_id = body["user"]["id"]
        try:
            alert_id = int(body["actions"][0]["value"])
        except (KeyError, IndexError, TypeError, ValueError):
            log.warning("alert_acknowledge without an alert id from %s", user_id)
            return
        outcome = acknowledge(deps.engine, alert_id, user_id)
        if outcome.won:
            sync_alerts(deps, client, alert_ids=[alert_id])
            return
        locale = deps.locale_for(user_id, outcome.department)
        alert = outcome.alert
        if alert is None:
            text = render.message("alert.gone", locale)
        elif alert.status is AlertStatus.RESOLVED:
            text = render.message("alert.already_resolved", locale)
        else:
            text = render.message("alert.already_acknowledged", locale, user=alert.acknowledged_by)
        try:
            respond(text=text, response_type="ephemeral", replace_original=False)
        except Exception:
            log.exception("could not tell %s the alert was already acknowledged", user_id)
