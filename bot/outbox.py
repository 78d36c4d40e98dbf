"""The one way to post exactly once: claim in the ledger, send through a `Poster`, complete or fail.

Every message kpibot posts on its own (digests, reminders, alerts and their thread notes,
countermeasure follow-ups, the review agenda, notices to admins) goes through here; nothing
else writes `post` rows.

The unique key (department, kind, period, subject) makes the claim the arbiter between
processes: whoever inserts the row sends. A claim whose holder died (no ts after the lease) is
taken over, so a crash between claim and send delays a post but never loses it. A post that
reached Slack but whose ts could not be recorded (the database failed right after the send) is
remembered by the `Outbox` and recorded by the next attempt instead of being sent again.

The core speaks to Slack only through `Poster`, a port with the few calls it needs; the Slack
implementation lives at the edge (handlers/poster.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.clock import utcnow
from bot.database import transaction
from bot.models import Post, PostKind, PostStatus

log = logging.getLogger(__name__)

# Longer than any send takes (a digest with its chart, through rate-limit retries).
LEASE = dt.timedelta(minutes=10)
ERROR_MAX = 500  # Post.error


# -- what is posted, and the port it goes through ---------------------------------------------------


@dataclass
class Message:
    """One Slack message: the notification / fallback text and its Block Kit blocks (as dicts).

    `plain_files`: what its thread needs when it is posted without a native chart (Slack refused the
    new blocks, or the message never had room for one): a digest's PNG grid. A poster calls it only
    then, after the message is posted, so the PNG (a second of matplotlib, three Web API calls) is
    drawn only where no native chart shows the trend."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    plain_files: Callable[[], Sequence[Upload]] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Upload:
    """A file posted in a message's thread (a digest's chart)."""

    content: bytes
    filename: str
    title: str
    comment: str


class PostFailed(Exception):
    """Slack refused a call; `code` is its error (`channel_not_found`, `ratelimited` …)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class PostUncertain(PostFailed):
    """The call may have been carried out (a dropped connection, a timeout, a 5xx): look before
    sending again."""

    def __init__(self, code: str) -> None:
        super().__init__(f"{UNCERTAIN}{code}")


UNCERTAIN = "uncertain: "  # the prefix of a post's error when Slack may have it after all


class Poster(Protocol):
    """What the core needs of Slack. Each call raises PostFailed when Slack refuses it."""

    def post(
        self, channel: str, message: Message, *, thread_ts: str | None = None, key: str | None = None
    ) -> str:
        """Post a message (a reply when `thread_ts`), tagged with `key`; returns its ts.
        PostUncertain when Slack may have it although the call failed."""

    def find(self, channel: str, key: str, *, thread_ts: str | None = None) -> str | None:
        """The ts of a message tagged with `key` in `channel` (or the thread), if Slack has it."""

    def update(self, channel: str, ts: str, message: Message) -> None:
        """Replace a message's text and blocks."""

    def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> None:
        """Share a file in a channel or thread."""

    def ephemeral(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> None:
        """A message only `user` sees."""

    def permalink(self, channel: str, ts: str) -> str | None:
        """A link to a message, or None when Slack gives none."""


# -- the ledger -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """What a post is: unique per department, kind, period and subject."""

    department_id: int
    kind: PostKind
    period: str
    subject: str = ""

    def token(self) -> str:
        """The key as the tag a posted message carries."""
        return f"{self.department_id}:{self.kind.value}:{self.period}:{self.subject}"

    def where(self) -> list[Any]:
        return [
            col(Post.department_id) == self.department_id,
            col(Post.kind) == self.kind,
            col(Post.period) == self.period,
            col(Post.subject) == self.subject,
        ]


@dataclass(frozen=True)
class Claim:
    post_id: int
    attempt: int
    # Taking over a claim whose holder may have posted (it died, or its send was ambiguous):
    # look for the message before sending it again.
    look_first: bool = False


def claim(
    engine: Engine,
    key: Key,
    *,
    channel_id: str | None = None,
    retry_failed: bool = False,
    lease: dt.timedelta = LEASE,
) -> Claim | None:
    """The right to send this post, or None when it is sent, failed, or being sent by another process."""
    now = utcnow()
    try:
        with transaction(engine) as session:
            post = Post(
                department_id=key.department_id,
                kind=key.kind,
                period=key.period,
                subject=key.subject,
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
        existing = session.exec(select(Post).where(*key.where())).one()
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
            key.kind.value,
            key.period,
            key.department_id,
            existing.attempts + 1,
        )
        maybe_posted = existing.status is PostStatus.CLAIMED or (existing.error or "").startswith(UNCERTAIN)
        return Claim(existing.id, existing.attempts + 1, look_first=maybe_posted)


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
            .values(status=PostStatus.FAILED, error=error[:ERROR_MAX])
        )


def find(engine: Engine, key: Key) -> Post | None:
    with transaction(engine) as session:
        return session.exec(select(Post).where(*key.where())).first()


def repoint(session: Session, key: Key, *, ts: str, channel_id: str | None) -> None:
    """A sent post now lives in another message (its first one was deleted and posted again);
    in the caller's transaction, beside what it records of the new message."""
    session.execute(
        sa.update(Post).where(*key.where(), col(Post.ts).is_not(None)).values(ts=ts, channel_id=channel_id)
    )


# -- posting once -----------------------------------------------------------------------------------


def post_tagged(
    poster: Poster,
    key: Key,
    channel: str,
    message: Message,
    *,
    thread_ts: str | None = None,
    look_first: bool = False,
) -> tuple[str, bool]:
    """Post the message a claim is for, tagged with its key, never twice: (its ts, whether it was
    found posted by an earlier holder of the claim instead). `look_first` (a claim taken over from
    a holder that may have posted) asks Slack first; after an ambiguous send, Slack is asked whether
    it has the message before it is sent once more. PostFailed when it is not posted."""
    token = key.token()
    if look_first:
        found = poster.find(channel, token, thread_ts=thread_ts)
        if found is not None:
            log.warning("%s was posted before (ts %s): recorded, not sent again", token, found)
            return found, True
    for attempt in (1, 2):
        try:
            return poster.post(channel, message, thread_ts=thread_ts, key=token), False
        except PostUncertain as error:
            found = poster.find(channel, token, thread_ts=thread_ts)
            if found is not None:
                return found, False
            if attempt == 2:
                raise
            log.warning("%s is not in Slack after %s: sending it once more", token, error.code)
    raise AssertionError("unreachable")


Status = Literal["posted", "already", "busy", "failed"]


@dataclass(frozen=True)
class Sent:
    """What happened to one post: posted now, sent before ("already"), being sent by another
    process ("busy"), or refused by Slack ("failed", with its error)."""

    status: Status
    ts: str | None = None
    error: str | None = None


class Outbox:
    """Posts through `poster`, once per `Key`, recording each post in the ledger on `engine`."""

    def __init__(self, engine: Engine, poster: Poster) -> None:
        self.engine = engine
        self.poster = poster
        # Posts sent whose ts could not be recorded yet: the next attempt records them.
        self._unrecorded: dict[Key, tuple[Claim, str]] = {}
        self._mutex = threading.Lock()

    def send(
        self,
        key: Key,
        channel: str,
        messages: Sequence[Message] | Callable[[], Sequence[Message]],
        *,
        thread_ts: str | None = None,
        uploads: Sequence[Upload] | Callable[[], Sequence[Upload]] = (),
        retry_failed: bool = False,
    ) -> Sent:
        """Post `messages` once for `key`: the first in `channel` (or in the thread `thread_ts`),
        the others as replies in its thread, then `uploads` in that thread. Callables are built
        only when the post is not already sent. `retry_failed` sends again what Slack refused
        before (a person asked again)."""
        existing = find(self.engine, key)
        if existing is not None and existing.ts is not None:
            return Sent("already", existing.ts)
        with self._mutex:
            unrecorded = self._unrecorded.get(key)
        if unrecorded is not None:
            complete(self.engine, *unrecorded)
            with self._mutex:
                self._unrecorded.pop(key, None)
            return Sent("posted", unrecorded[1])
        built = list(messages() if callable(messages) else messages)
        files = list(uploads() if callable(uploads) else uploads)
        taken = claim(self.engine, key, channel_id=channel, retry_failed=retry_failed)
        if taken is None:
            again = find(self.engine, key)
            if again is not None and again.ts:
                return Sent("already", again.ts)
            return Sent("busy")
        root, *rest = built
        try:
            ts, earlier = post_tagged(
                self.poster, key, channel, root, thread_ts=thread_ts, look_first=taken.look_first
            )
        except PostFailed as error:
            fail(self.engine, taken, error.code)
            log.error(
                "%s %s for department %s to %s failed: %s",
                key.kind.value,
                key.subject or key.period,
                key.department_id,
                channel,
                error.code,
            )
            return Sent("failed", error=error.code)
        if earlier:  # the holder before us had posted it: recorded now, not sent again
            complete(self.engine, taken, ts)
            return Sent("already", ts)
        with self._mutex:
            self._unrecorded[key] = (taken, ts)
        # From here on the post is in the channel: later failures are logged, never re-sent.
        self._continue(channel, thread_ts or ts, rest, files, key)
        complete(self.engine, taken, ts)
        with self._mutex:
            self._unrecorded.pop(key, None)
        return Sent("posted", ts)

    def _continue(
        self, channel: str, thread_ts: str, rest: Sequence[Message], files: Sequence[Upload], key: Key
    ) -> None:
        try:
            for message in rest:
                self.poster.post(channel, message, thread_ts=thread_ts)
            for upload in files:
                self.poster.upload(channel, upload, thread_ts=thread_ts)
        except PostFailed as error:
            log.error(
                "thread of %s %s for department %s in %s incomplete: %s",
                key.kind.value,
                key.subject or key.period,
                key.department_id,
                channel,
                error.code,
            )
