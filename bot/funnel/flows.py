"""The funnel's own alert: a leaking hand-off (its conversion under `leak_below` % of plan) is said
once per period in the division channel, naming the heads of both departments; its message starts
the thread where the hand-off is discussed.

The Post ledger is its state: key (division, alert, period, `funnel:<stage key>`) — posted once
however many scans or processes run; its ts is the thread. What the message says is the edge's
(handlers/alerts/messages.py, a `FunnelMessages`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from bot import clock, outbox
from bot.alerts.service import SUBJECT_MAX
from bot.database import transaction
from bot.funnel.service import Funnel, HandOff, build_funnel
from bot.models import Department, FunnelStage, Kpi, Post, PostKind
from bot.outbox import Message, Outbox, Sent

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "funnel:"


class FunnelMessages(Protocol):
    def funnel_alert(self, hand_off: HandOff, funnel: Funnel, division: Department) -> Message:
        """A leaking hand-off: the root of its discussion thread in the division channel."""


@dataclass(frozen=True)
class LeakAlert:
    hand_off: HandOff
    sent: Sent


def subject_of(kpi_key: str) -> str:
    """The ledger subject of the alert of the hand-off into the stage `kpi_key`."""
    text = f"{SUBJECT_PREFIX}{kpi_key}"
    if len(text) <= SUBJECT_MAX:
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


def leak_key(division: Department, funnel: Funnel, hand_off: HandOff) -> outbox.Key:
    assert division.id is not None
    return outbox.Key(division.id, PostKind.ALERT, funnel.period.key, leak_subject(hand_off))


def alert_leaks(posts: Outbox, messages: FunnelMessages, now: dt.datetime | None = None) -> list[LeakAlert]:
    """Post each leaking hand-off of the period the funnel last finished, once per period, in the
    division channel. Nothing without a division channel or a funnel; one failure never stops the rest."""
    with transaction(posts.engine) as session:
        division = session.exec(select(Department).where(col(Department.is_division))).first()
        if division is None or not division.channel_id:
            return []
        zone = ZoneInfo(division.timezone)
        day = (now.astimezone(zone).date()) if now is not None else clock.today(zone)
        funnel = build_funnel(session, day)
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
