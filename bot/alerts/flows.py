"""Making Slack show the alerts, through the `Poster` port; and the hourly scan.

The Alert rows are the desired state (bot/alerts/service.py moves them, in the same transaction
as a report or in the scan); `sync_alerts` brings Slack in step:

- a new alert → a root message in the department channel (Post ledger subject `<kpi key>`),
  whose thread is where the alert is discussed; more than STORM new alerts for one channel
  at once → one grouped message listing them all instead (continued in thread replies);
- a severity change, a reopening, a resolution or an acknowledgement → an update of the
  message that shows the alert, and a note in its thread, said once per alert and event
  (subjects `<kpi key>:red`, `:amber`, `:missing`, `:reopened`, `:resolved`, `:acknowledged`);
- a message deleted in Slack → a new root for its alerts; their thread moves there.

`posted_severity`/`posted_status` record what Slack shows, so a retry (or the next scan)
finishes whatever a Slack or database error interrupted, and nothing is said twice. What the
messages look like is the edge's (handlers/alerts/messages.py, an `AlertMessages`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bot import outbox
from bot.alerts.rules import events
from bot.alerts.service import (
    AlertView,
    Change,
    affected_kpis,
    check_department,
    check_departments,
    in_threads,
    mark_shown,
    post_key,
    record_posted,
    unshown,
)
from bot.clock import utcnow
from bot.database import transaction
from bot.models import Department, Kpi, Severity
from bot.outbox import Message, Outbox, Poster, PostFailed
from bot.scorecard import all_departments

log = logging.getLogger(__name__)

# More new alerts than this for one channel in one go is a storm: one grouped message, not many.
STORM = 5
# What an update answers when the message it should change was deleted.
GONE = {"message_not_found", "cant_update_message"}


class AlertMessages(Protocol):
    """What an alert says in Slack (handlers/alerts/messages.py is one)."""

    def alert_message(self, view: AlertView) -> Message:
        """A single alert: the root of its discussion thread."""

    def group_messages(
        self, views: Sequence[AlertView], locale: str
    ) -> list[tuple[Message, list[AlertView]]]:
        """Alerts raised together in one channel: the root and its continuations, each with
        the alerts it lists."""

    def group_part(
        self, shown: Sequence[AlertView], group: Sequence[AlertView], part: int, parts: int, locale: str
    ) -> Message:
        """Message `part` (1 = the root) of a grouped message listing `shown` out of `group`."""

    def note(self, event: str, view: AlertView, before: Severity | None = None) -> str:
        """What changed, said in the alert's thread."""


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


# -- after a report --------------------------------------------------------------------------------


def after_report(engine: Engine, poster: Poster, messages: AlertMessages, kpi: Kpi) -> SyncResult:
    """Show in Slack what a report did to the KPI's alerts (and its derived KPIs'): the rows were
    moved in the report's transaction (bot.alerts.service.check_after_report)."""
    with transaction(engine) as session:
        kpi_ids = [item.id for item, _ in affected_kpis(session, kpi) if item.id is not None]
    return sync_alerts(engine, poster, messages, kpi_ids=kpi_ids)


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
    engine: Engine,
    poster: Poster | None,
    messages: AlertMessages,
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
    now = now or utcnow()
    result = ScanResult()
    with transaction(engine) as session:
        departments = [
            d for d in all_departments(session) if not d.is_division and department_key in (None, d.key)
        ]
    for start in range(0, len(departments), SCAN_CHUNK):
        chunk = departments[start : start + SCAN_CHUNK]
        planned = [(d, now.astimezone(ZoneInfo(d.timezone)).date()) for d in chunk]
        try:
            checked = _check_chunk(engine, planned, dry_run)
        except Exception:
            # The batch itself failed (a read): one department at a time, so a fault stays in its own.
            log.exception(
                "alert scan of %d departments together failed; scanning them one by one", len(chunk)
            )
            checked = [_check_alone(engine, department, day, dry_run) for department, day in planned]
        for department, outcome in zip(chunk, checked, strict=True):
            if isinstance(outcome, Exception):
                log.error("alert scan of %s failed", department.key, exc_info=outcome)
                result.failed.append((department.key, str(outcome) or type(outcome).__name__))
                continue
            result.changes += outcome
            if dry_run or poster is None:
                continue
            try:
                result.slack.add(sync_alerts(engine, poster, messages, department_id=department.id))
            except Exception as error:
                log.exception("posting the alerts of %s failed", department.key)
                result.failed.append((department.key, str(error) or type(error).__name__))
    return result


# Departments checked in one transaction: their reads batched, their alert rows locked no longer
# than the chunk takes (a report touching one of them waits that long at most).
SCAN_CHUNK = 50


def _check_chunk(
    engine: Engine, planned: Sequence[tuple[Department, dt.date]], dry_run: bool
) -> list[list[ScanChange] | Exception]:
    with transaction(engine) as session:
        outcomes = check_departments(session, planned)
        checked = [
            outcome if isinstance(outcome, Exception) else _plain(session, department, outcome)
            for (department, _), outcome in zip(planned, outcomes, strict=True)
        ]
        if dry_run:
            session.rollback()
    return checked


def _check_alone(
    engine: Engine, department: Department, day: dt.date, dry_run: bool
) -> list[ScanChange] | Exception:
    try:
        with transaction(engine) as session:
            changes = _plain(session, department, check_department(session, department, day))
            if dry_run:
                session.rollback()
        return changes
    except Exception as error:
        return error


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
    engine: Engine,
    poster: Poster,
    messages: AlertMessages,
    *,
    alert_ids: Collection[int] | None = None,
    kpi_ids: Collection[int] | None = None,
    department_id: int | None = None,
) -> SyncResult:
    """Post, update or annotate every alert (of those selected) whose message is behind its state."""
    sync = _Sync(engine, poster, messages)
    with transaction(engine) as session:
        pending = unshown(session, alert_ids=alert_ids, kpi_ids=kpi_ids, department_id=department_id)
    if not pending:
        return sync.result

    # Raised and resolved before they were ever shown: there is nothing to say.
    sync.mark_shown([v for v in pending if v.alert.thread_ts is None and v.resolved])
    new: dict[str, list[AlertView]] = defaultdict(list)
    for view in pending:
        if view.alert.thread_ts is not None or view.resolved:
            continue
        if not view.department.channel_id:
            if view.department.key not in sync.result.no_channel:
                log.warning("alerts of %s not posted: the department has no channel", view.department.key)
                sync.result.no_channel.append(view.department.key)
            continue
        new[view.department.channel_id].append(view)
    for channel, views in new.items():
        sync.post_new(channel, views)
    changed = [view for view in pending if view.alert.thread_ts is not None]
    if changed:
        sync.update(changed)
    return sync.result


# (alert, the ts of its thread, the ts of the message listing it)
Shown = tuple[AlertView, str, str]


@dataclass
class _Sync:
    """One sync: where it posts, what it says, and what it did so far."""

    engine: Engine
    poster: Poster
    messages: AlertMessages
    result: SyncResult = field(default_factory=SyncResult)

    # -- new alerts ----------------------------------------------------------------------------

    def post_new(self, channel: str, views: list[AlertView], event: str | None = None) -> None:
        """Post alerts as new roots, each claimed in the ledger first so no other process posts
        them too (`event` names a re-post, whose ledger subject differs from the first post's)."""
        claims: list[tuple[AlertView, outbox.Claim]] = []
        for view in views:
            claim = outbox.claim(
                self.engine,
                post_key(view, event),
                channel_id=channel,
                # A failed alert is retried by the next report or scan (the failure was logged).
                retry_failed=True,
            )
            if claim is not None:
                claims.append((view, claim))
        posted, error = self._post_roots(channel, claims, event)
        if event is not None:
            # Re-posted: the views are in their new thread (their notes are said there).
            posted = [(_moved(view, thread_ts, ts), thread_ts, ts) for view, thread_ts, ts in posted]
        self._record_posted(posted)
        if event is not None:
            # What changed is said in the new thread (the views still hold what Slack showed before).
            self.notes([view for view, _, _ in posted])
        by_id = {view.alert.id: claim for view, claim in claims}
        for view, _, message_ts in posted:
            outbox.complete(self.engine, by_id.pop(view.alert.id), message_ts)
        for claim in by_id.values():
            outbox.fail(self.engine, claim, error or "not posted")

    def _post_roots(
        self, channel: str, claims: list[tuple[AlertView, outbox.Claim]], event: str | None
    ) -> tuple[list[Shown], str | None]:
        """Post alerts as new roots: one each, or one grouped message (and its continuations) for a
        storm. Returns (alert, its thread ts, the ts of the message listing it) for those posted, and
        Slack's last error if any was not.

        Each message carries the ledger key of the (first) alert it lists, so that after an
        ambiguous send, or when a claim is taken over from a process that may have posted, Slack
        is asked whether it has the message before it is sent again (bot.outbox.post_tagged)."""
        posted: list[Shown] = []
        errors: list[str] = []
        if not claims:
            return posted, None
        views = [view for view, _ in claims]
        look_first = {view.alert.id: claim.look_first for view, claim in claims}

        def post(message: Message, listed: Sequence[AlertView], thread_ts: str | None) -> str | None:
            key = post_key(listed[0], event)
            try:
                ts, _earlier = outbox.post_tagged(
                    self.poster,
                    key,
                    channel,
                    message,
                    thread_ts=thread_ts,
                    look_first=any(look_first.get(view.alert.id) for view in listed),
                )
                return ts
            except PostFailed as error:
                errors.append(error.code)
                log.error("alert for %s not posted to %s: %s", listed[0].department.key, channel, error.code)
                return None

        if len(views) <= STORM:
            for view in views:
                ts = post(self.messages.alert_message(view), [view], None)
                if ts is not None:
                    posted.append((view, ts, ts))
        else:
            (root, first), *rest = self.messages.group_messages(views, views[0].locale)
            root_ts = post(root, first, None)
            if root_ts is not None:
                posted += [(view, root_ts, root_ts) for view in first]
                for message, listed in rest:
                    ts = post(message, listed, root_ts)
                    if ts is not None:
                        posted += [(view, root_ts, ts) for view in listed]
        self.result.posted += len({message_ts for _, _, message_ts in posted})
        self.result.failed += len(errors)
        return posted, errors[-1] if errors else None

    def _record_posted(self, shown: Sequence[Shown]) -> None:
        if shown:
            with transaction(self.engine) as session:
                record_posted(session, shown)

    def mark_shown(self, views: Sequence[AlertView]) -> None:
        if views:
            with transaction(self.engine) as session:
                mark_shown(session, views)

    # -- changed alerts ------------------------------------------------------------------------

    def update(self, changed: list[AlertView]) -> None:
        changed_ids = {view.alert.id for view in changed}
        with transaction(self.engine) as session:
            threads = in_threads(session, (view.alert.thread_ts for view in changed))
        # Every message listing a changed alert, with everything it lists (for its grouped siblings).
        listing: dict[tuple[str, str], list[AlertView]] = defaultdict(list)
        for view in threads:
            if view.alert.channel_id and view.message_ts:
                listing[(view.alert.channel_id, view.message_ts)].append(view)
        for (channel, ts), listed in listing.items():
            if not any(view.alert.id in changed_ids for view in listed):
                continue
            thread = [
                view
                for view in threads
                if view.alert.channel_id == channel and view.alert.thread_ts == listed[0].alert.thread_ts
            ]
            try:
                self.poster.update(channel, ts, self._rendered(listed, thread))
                self.result.updated += 1
            except PostFailed as error:
                if error.code in GONE:
                    log.warning("alert message %s in %s was deleted; posting it again", ts, channel)
                    self._repost(channel, ts, listed)
                else:
                    self.result.failed += 1
                    log.error("alert message %s in %s not updated: %s", ts, channel, error.code)
                continue
            mine = [view for view in listed if view.alert.id in changed_ids]
            self.notes(mine)
            self.mark_shown(mine)

    def _rendered(self, listed: list[AlertView], thread: list[AlertView]) -> Message:
        """A message as it should look now, for the update."""
        root_ts = listed[0].alert.thread_ts
        if len(thread) == 1 and listed[0].message_ts == root_ts:
            return self.messages.alert_message(listed[0])
        parts = sorted({view.message_ts for view in thread if view.message_ts}, key=float)
        part = parts.index(listed[0].message_ts) + 1 if listed[0].message_ts in parts else 1
        return self.messages.group_part(
            sorted(listed, key=lambda v: v.sort_key),
            sorted(thread, key=lambda v: v.sort_key),
            part,
            len(parts),
            listed[0].locale,
        )

    def _repost(self, channel: str, gone_ts: str, listed: list[AlertView]) -> None:
        """The message listing these alerts was deleted: post those still open as new roots, once."""
        self.mark_shown([view for view in listed if view.resolved])
        self.post_new(channel, [view for view in listed if not view.resolved], f"moved:{gone_ts}")

    def notes(self, views: Sequence[AlertView]) -> None:
        """Say in each alert's thread what changed: once per alert and event (the Post ledger)."""
        posts = Outbox(self.engine, self.poster)
        for view in views:
            alert = view.alert
            assert alert.thread_ts and alert.channel_id
            for event, before in events(alert):
                sent = posts.send(
                    post_key(view, alert.severity.value if event == "changed" else event),
                    alert.channel_id,
                    [Message(self.messages.note(event, view, before))],
                    thread_ts=alert.thread_ts,
                )
                self.result.failed += sent.status == "failed"
                self.result.notes += sent.status == "posted"


def _moved(view: AlertView, thread_ts: str, message_ts: str) -> AlertView:
    """The view with its alert in its new thread (the row is detached: nothing is written here)."""
    view.alert.thread_ts = thread_ts
    return replace(view, message_ts=message_ts)
