"""The funnel's own alert: a leaking hand-off (its conversion under `leak_below` % of plan) is said
once per period in the division channel, naming the heads of both departments; its message starts
the thread where the hand-off is discussed.

The Post ledger is its state: key (division, alert, period, `funnel:<stage key>`) — posted once
however many scans or processes run; its ts is the thread. When the hand-off no longer leaks for
that period (a correction of either stage closed it), its thread says so once: key (division,
followup, period, `funnel:<stage key>:resolved`). A later correction that opens the leak again says
nothing more (the period's alert was said). What the messages say is the edge's
(handlers/alerts/messages.py, a `FunnelMessages`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from bot import clock, outbox
from bot.alerts.service import SUBJECT_MAX
from bot.database import transaction
from bot.funnel.service import Funnel, HandOff, build_funnel
from bot.models import Department, FunnelStage, Kpi, Post, PostKind, PostStatus
from bot.outbox import Message, Outbox, Sent
from bot.periods import parse_key

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "funnel:"


class FunnelMessages(Protocol):
    def funnel_alert(self, hand_off: HandOff, funnel: Funnel, division: Department) -> Message:
        """A leaking hand-off: the root of its discussion thread in the division channel."""

    def funnel_resolved(self, hand_off: HandOff, funnel: Funnel, division: Department) -> Message:
        """The hand-off no longer leaks: said in its alert's thread."""


@dataclass(frozen=True)
class LeakAlert:
    hand_off: HandOff
    sent: Sent


RESOLVED_SUFFIX = ":resolved"
# A correction older than this many periods before the one reviewed is not looked at for closing
# a leak: each period looked at costs a funnel's three queries every scan.
CLOSE_PERIODS = 3


def subject_of(kpi_key: str) -> str:
    """The ledger subject of the alert of the hand-off into the stage `kpi_key`."""
    text = f"{SUBJECT_PREFIX}{kpi_key}"
    if len(text) + len(RESOLVED_SUFFIX) <= SUBJECT_MAX:
        return text
    return f"{SUBJECT_PREFIX}{hashlib.sha1(kpi_key.encode()).hexdigest()[:12]}"


def leak_subject(hand_off: HandOff) -> str:
    """The ledger subject of a hand-off's alert: named by the stage it hands off into."""
    return subject_of(hand_off.after.kpi.key)


@dataclass(frozen=True)
class LeakThread:
    """A funnel alert's thread: the hand-off into `kpi` (of `department`) from `before`'s."""

    kpi: Kpi
    department: Department
    before: Department | None


def thread_of(session: Session, channel_id: str, thread_ts: str) -> LeakThread | None:
    """The hand-off whose funnel alert starts this thread, if one does. Two queries."""
    post = session.exec(
        select(Post).where(
            Post.kind == PostKind.ALERT,
            Post.channel_id == channel_id,
            Post.ts == thread_ts,
            col(Post.subject).startswith(SUBJECT_PREFIX),
        )
    ).first()
    if post is None:
        return None
    rows = session.exec(
        select(Kpi, Department)
        .join(FunnelStage, col(FunnelStage.kpi_id) == Kpi.id)
        .join(Department, col(Department.id) == Kpi.department_id)
        .order_by(col(FunnelStage.position))
    ).all()
    for (kpi, department), before in zip(rows, [None, *rows], strict=False):
        if subject_of(kpi.key) == post.subject:
            return LeakThread(kpi, department, None if before is None else before[1])
    return None


def leak_threads(session: Session, threads: Iterable[tuple[str | None, str | None]]) -> set[tuple[str, str]]:
    """Which of these (channel, ts) threads a funnel alert starts. One query."""
    wanted = {(channel, ts) for channel, ts in threads if channel and ts}
    if not wanted:
        return set()
    rows = session.exec(
        select(Post.channel_id, Post.ts).where(
            Post.kind == PostKind.ALERT,
            col(Post.ts).in_([ts for _, ts in wanted]),
            col(Post.subject).startswith(SUBJECT_PREFIX),
        )
    ).all()
    return {(channel, ts) for channel, ts in rows if (channel, ts) in wanted}  # type: ignore[misc]


def leak_key(division: Department, funnel: Funnel, hand_off: HandOff) -> outbox.Key:
    assert division.id is not None
    return outbox.Key(division.id, PostKind.ALERT, funnel.period.key, leak_subject(hand_off))


def _division(session: Session) -> Department | None:
    """The division, when it has a channel to say the funnel's alerts in."""
    division = session.exec(select(Department).where(col(Department.is_division))).first()
    return division if division is not None and division.channel_id else None


def _day(division: Department, now: dt.datetime | None) -> dt.date:
    zone = ZoneInfo(division.timezone)
    return now.astimezone(zone).date() if now is not None else clock.today(zone)


def alert_leaks(posts: Outbox, messages: FunnelMessages, now: dt.datetime | None = None) -> list[LeakAlert]:
    """Post each leaking hand-off of the period the funnel last finished, once per period, in the
    division channel. Nothing without a division channel or a funnel; one failure never stops the rest."""
    with transaction(posts.engine) as session:
        division = _division(session)
        if division is None:
            return []
        funnel = build_funnel(session, _day(division, now))
    if funnel is None:
        return []
    said = []
    for hand_off in funnel.hand_offs:
        if not hand_off.leaking:
            continue
        try:
            sent = posts.send(
                leak_key(division, funnel, hand_off),
                division.channel_id,
                lambda hand_off=hand_off: [messages.funnel_alert(hand_off, funnel, division)],  # type: ignore[misc]
                retry_failed=True,
            )
        except Exception:
            log.exception("funnel alert %s for %s failed", leak_subject(hand_off), funnel.period.key)
            continue
        said.append(LeakAlert(hand_off, sent))
    return said


def close_leaks(
    posts: Outbox,
    messages: FunnelMessages,
    now: dt.datetime | None = None,
    *,
    kpi_id: int | None = None,
) -> list[LeakAlert]:
    """Say once in each funnel alert's thread that its hand-off no longer leaks for the alert's period
    (a correction of either stage closed it), for the period reviewed and the CLOSE_PERIODS - 1
    before it. `kpi_id`: only when that KPI is a stage (after its report). One failure never stops
    the rest."""
    with transaction(posts.engine) as session:
        division = _division(session)
        if division is None:
            return []
        if (
            kpi_id is not None
            and session.exec(select(FunnelStage.id).where(FunnelStage.kpi_id == kpi_id)).first() is None
        ):
            return []
        day = _day(division, now)
        reviewed = build_funnel(session, day)
        if reviewed is None:
            return []
        oldest = reviewed.period.shift(1 - CLOSE_PERIODS)
        posted = session.exec(
            select(Post).where(
                Post.department_id == division.id,
                col(Post.kind).in_([PostKind.ALERT, PostKind.FOLLOWUP]),
                col(Post.subject).startswith(SUBJECT_PREFIX),
                col(Post.period).in_([oldest.shift(step).key for step in range(CLOSE_PERIODS)]),
            )
        ).all()
        said = {(post.period, post.subject) for post in posted if post.kind is PostKind.FOLLOWUP}
        open_alerts = [
            post
            for post in posted
            if post.kind is PostKind.ALERT
            and post.status is PostStatus.SENT
            and post.ts
            and (post.period, post.subject + RESOLVED_SUFFIX) not in said
        ]
        funnels = {reviewed.period.key: reviewed}
        for key in {post.period for post in open_alerts} - funnels.keys():
            funnels[key] = build_funnel(session, day, parse_key(key))
    assert division.id is not None and division.channel_id is not None
    closed = []
    for post in open_alerts:
        funnel = funnels.get(post.period)
        if funnel is None:
            continue
        hand_off = next((h for h in funnel.hand_offs if leak_subject(h) == post.subject), None)
        # Closed: converting again at or past its threshold (not merely unknown: a stage unreported).
        if hand_off is None or hand_off.vs_plan_pct is None or hand_off.leaking:
            continue
        key = outbox.Key(division.id, PostKind.FOLLOWUP, post.period, post.subject + RESOLVED_SUFFIX)
        try:
            sent = posts.send(
                key,
                division.channel_id,
                [messages.funnel_resolved(hand_off, funnel, division)],
                thread_ts=post.ts,
            )
        except Exception:
            log.exception("closing funnel alert %s for %s failed", post.subject, post.period)
            continue
        closed.append(LeakAlert(hand_off, sent))
    return closed
