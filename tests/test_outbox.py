"""Exactly once through bot/outbox.py, over real HTTP to the fake Slack and on both databases: a
connection that drops after Slack accepted the post, a 5xx, a claim left by a process that died
between sending and recording. Every test counts what was attempted, what Slack holds and what the
ledger says."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from bot import outbox
from bot.clock import set_clock
from bot.config import load_settings
from bot.database import transaction
from bot.models import Department, Post, PostKind, PostStatus
from bot.outbox import Key, Message, Outbox
from handlers.cli import main
from handlers.client import make_web_client
from handlers.poster import SlackPoster, metadata
from tests.fakeslack.server import DROP_AFTER_SEND, HANG_AFTER_SEND, FakeSlack
from tests.plans import EXAMPLE_PLAN, import_plan

NOW = dt.datetime(2026, 11, 30, 0, 0, 30, tzinfo=dt.UTC)
CHANNEL = "C0SALES"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def sales(engine: Engine) -> int:
    with transaction(engine) as session:
        department = Department(key="sales", name_ja="営業部", name_en="Sales", channel_id=CHANNEL)
        session.add(department)
        session.flush()
        assert department.id is not None
        return department.id


def box(engine: Engine, fake: FakeSlack) -> Outbox:
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": fake.url}, env_file=None)
    return Outbox(engine, SlackPoster(make_web_client(settings)))


def post_row(engine: Engine, key: Key) -> Post:
    with transaction(engine) as session:
        return session.exec(select(Post).where(*key.where())).one()


def attempts(fake: FakeSlack) -> int:
    return len(fake.calls("chat.postMessage"))


def test_a_connection_dropped_after_slack_accepted_the_post_posts_once(
    engine: Engine, fake: FakeSlack, sales: int
) -> None:
    set_clock(lambda: NOW)
    key = Key(sales, PostKind.DIGEST, "2026-11-30")
    fake.fail("chat.postMessage", DROP_AFTER_SEND)

    sent = box(engine, fake).send(key, CHANNEL, [Message("digest")])

    [held] = fake.messages(CHANNEL)
    assert (sent.status, sent.ts) == ("posted", held["ts"])
    assert attempts(fake) == 1  # asked Slack instead of sending again
    assert held["metadata"] == metadata(key.token())
    row = post_row(engine, key)
    assert (row.status, row.ts, row.attempts) == (PostStatus.SENT, held["ts"], 1)


def test_a_5xx_that_slack_did_not_carry_out_is_sent_once_more_and_posted_once(
    engine: Engine, fake: FakeSlack, sales: int
) -> None:
    set_clock(lambda: NOW)
    key = Key(sales, PostKind.DIGEST, "2026-11-30")
    fake.fail("chat.postMessage", "http_500")

    sent = box(engine, fake).send(key, CHANNEL, [Message("digest")])

    [held] = fake.messages(CHANNEL)
    assert (sent.status, sent.ts) == ("posted", held["ts"])
    assert attempts(fake) == 2  # the client does not repeat it blindly; the outbox looked, then sent
    assert len(fake.calls("conversations.history")) == 1


def test_slack_unsure_twice_is_a_failure_that_says_so_and_posts_nothing_more(
    engine: Engine, fake: FakeSlack, sales: int
) -> None:
    set_clock(lambda: NOW)
    key = Key(sales, PostKind.DIGEST, "2026-11-30")
    fake.fail("chat.postMessage", "http_500", times=2)

    sent = box(engine, fake).send(key, CHANNEL, [Message("digest")])

    assert sent.status == "failed" and sent.error == "uncertain: http_500"
    assert fake.messages(CHANNEL) == [] and attempts(fake) == 2
    row = post_row(engine, key)
    assert (row.status, row.error) == (PostStatus.FAILED, "uncertain: http_500")


def test_a_claim_whose_holder_died_after_posting_is_recorded_not_posted_again(
    engine: Engine, fake: FakeSlack, sales: int
) -> None:
    key = Key(sales, PostKind.DIGEST, "2026-11-30")
    crashed_at = NOW - outbox.LEASE - dt.timedelta(minutes=1)
    set_clock(lambda: crashed_at)
    assert outbox.claim(engine, key, channel_id=CHANNEL) is not None
    # The dead process's message reached Slack, tagged with the key; its ts was never recorded.
    dead = box(engine, fake).poster.post(CHANNEL, Message("digest"), key=key.token())

    set_clock(lambda: NOW)
    sent = box(engine, fake).send(key, CHANNEL, [Message("digest"), Message("continued")])

    assert (sent.status, sent.ts) == ("already", dead)
    assert [m["ts"] for m in fake.messages(CHANNEL)] == [dead]
    assert attempts(fake) == 1  # only the dead process's own post
    row = post_row(engine, key)
    assert (row.status, row.ts, row.attempts) == (PostStatus.SENT, dead, 2)


def test_a_claim_whose_holder_died_before_posting_is_posted_after_the_lease(
    engine: Engine, fake: FakeSlack, sales: int
) -> None:
    key = Key(sales, PostKind.DIGEST, "2026-11-30")
    set_clock(lambda: NOW - outbox.LEASE - dt.timedelta(minutes=1))
    assert outbox.claim(engine, key, channel_id=CHANNEL) is not None

    set_clock(lambda: NOW)
    sent = box(engine, fake).send(key, CHANNEL, [Message("digest")])

    [held] = fake.messages(CHANNEL)
    assert (sent.status, sent.ts) == ("posted", held["ts"])
    assert post_row(engine, key).attempts == 2


def test_a_dropped_thread_note_and_a_dropped_dm_post_once(
    engine: Engine, fake: FakeSlack, sales: int
) -> None:
    set_clock(lambda: NOW)
    posts = box(engine, fake)
    root = posts.poster.post(CHANNEL, Message("alert"))
    note = Key(sales, PostKind.ALERT, "2026-11", "mqls:red")
    dm = Key(sales, PostKind.REMINDER, "2026-11-30", "U0OWNER")
    fake.fail("chat.postMessage", DROP_AFTER_SEND, times=2)

    in_thread = posts.send(note, CHANNEL, [Message("now red")], thread_ts=root)
    reminded = posts.send(dm, "U0OWNER", [Message("please report")])

    assert (in_thread.status, reminded.status) == ("posted", "posted")
    assert [m["text"] for m in fake.messages(CHANNEL)] == ["alert", "now red"]
    assert [m["text"] for m in fake.messages("D0OWNER")] == ["please report"]
    assert attempts(fake) == 3
    assert len(fake.calls("conversations.replies")) == 1 and len(fake.calls("conversations.open")) == 1


def test_a_process_killed_between_the_send_and_its_record_is_not_posted_again(
    engine: Engine, fake: FakeSlack
) -> None:
    """`kpibot digest` killed -9 while Slack has its message and the ledger has only the claim; once
    the lease has passed, the next run finds the message in Slack and records it instead."""
    import_plan(engine, EXAMPLE_PLAN)
    env = {
        **os.environ,
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": fake.url,
        "KPIBOT_LOCALE": "en",
    }
    argv = ["digest", "--department", "sales", "--period", "2026-W48"]
    fake.fail("chat.postMessage", HANG_AFTER_SEND)
    process = subprocess.Popen(
        [sys.executable, "-m", "handlers.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        fake.wait_for("chat.postMessage", timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    [held] = fake.messages(CHANNEL)
    with transaction(engine) as session:
        [claimed] = session.exec(select(Post).where(Post.kind == PostKind.DIGEST)).all()
    assert (claimed.status, claimed.ts) == (PostStatus.CLAIMED, None)

    later = claimed.claimed_at + outbox.LEASE + dt.timedelta(minutes=1)
    set_clock(lambda: later)
    monkeypatch_env = {k: env[k] for k in ("DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_API_URL")}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in monkeypatch_env.items():
            patch.setenv(name, value)
        assert main(["--locale", "en", *argv]) == 0

    assert [m["ts"] for m in fake.messages(CHANNEL)] == [held["ts"]]  # Slack holds one digest
    assert len(fake.calls("chat.postMessage")) == 1  # the killed process's, and nothing since
    with transaction(engine) as session:
        [post] = session.exec(select(Post).where(Post.kind == PostKind.DIGEST)).all()
    assert (post.status, post.ts, post.attempts) == (PostStatus.SENT, held["ts"], 2)
