"""The Post ledger: a post is claimed before it is sent and completed with its ts after.

The unique key (department, kind, period, subject) makes the claim the arbiter between
processes: whoever inserts the row sends. A claim whose holder died (no ts after the
lease) is taken over, so a crash between claim and send delays a post but never loses it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from bot.clock import utcnow
from bot.database import transaction
from bot.models import Post, PostKind, PostStatus

log = logging.getLogger(__name__)

# Longer than any send takes (a digest with its chart, through rate-limit retries).
LEASE = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Claim:
    post_id: int
    attempt: int


def claim(
    engine: Engine,
    *,
    department_id: int,
    kind: PostKind,
    period: str,
    subject: str = "",
    channel_id: str | None = None,
    retry_failed: bool = False,
    lease: dt.timedelta = LEASE,
) -> Claim | None:
    """The right to send this post, or None when it is sent, failed, or being sent by another process."""
    now = utcnow()
    try:
        with transaction(engine) as session:
            post = Post(
                department_id=department_id,
                kind=kind,
                period=period,
                subject=subject,
                channel_id=channel_id,
                status=PostStatus.CLAIMED,
                attempts=1,
                claimed_at=now,
            )
            session.add(post)
            session.flush()
            assert post.id is not None
            return Claim(post.id, 1)
    except IntegrityError:
        pass
    with transaction(engine) as session:
        existing = session.exec(
            select(Post).where(
                Post.department_id == department_id,
                Post.kind == kind,
                Post.period == period,
                Post.subject == subject,
            )
        ).one()
        if existing.status is PostStatus.SENT:
            return None
        if existing.status is PostStatus.FAILED and not retry_failed:
            return None
        if existing.status is PostStatus.CLAIMED and now - existing.claimed_at < lease:
            return None
        # Take over atomically: only one of several processes seeing the same stale row wins.
        taken = session.execute(
            sa.update(Post)
            .where(
                col(Post.id) == existing.id,
                col(Post.claimed_at) == existing.claimed_at,
                col(Post.status) == existing.status,
            )
            .values(
                status=PostStatus.CLAIMED,
                claimed_at=now,
                attempts=existing.attempts + 1,
                error=None,
                channel_id=channel_id or existing.channel_id,
            )
        )
        if taken.rowcount != 1:
            return None
        assert existing.id is not None
        log.warning(
            "re-sending %s %s for department %s (attempt %d)",
            kind.value,
            period,
            department_id,
            existing.attempts + 1,
        )
        return Claim(existing.id, existing.attempts + 1)


def complete(engine: Engine, claim_: Claim, ts: str) -> None:
    with transaction(engine) as session:
        session.execute(
            sa.update(Post)
            .where(col(Post.id) == claim_.post_id)
            .values(status=PostStatus.SENT, ts=ts, sent_at=utcnow(), error=None)
        )


def fail(engine: Engine, claim_: Claim, error: str) -> None:
    with transaction(engine) as session:
        session.execute(
            sa.update(Post)
            .where(col(Post.id) == claim_.post_id)
            .values(status=PostStatus.FAILED, error=error[:500])
        )


def find(
    engine: Engine, *, department_id: int, kind: PostKind, period: str, subject: str = ""
) -> Post | None:
    with transaction(engine) as session:
        return session.exec(
            select(Post).where(
                Post.department_id == department_id,
                Post.kind == kind,
                Post.period == period,
                Post.subject == subject,
            )
        ).first()
