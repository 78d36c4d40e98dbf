"""Alert roots and storm messages carry their ledger key, so an uncertain send is looked up in Slack
instead of posted again: a connection dropped after Slack accepted the message, and a claim left by
a process that died after posting, each end with the alert posted once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlmodel import col, select

from bot.alerts.flows import STORM
from bot.alerts.service import check_department, post_key, unshown
from bot.clock import set_clock
from bot.database import transaction
from bot.models import Alert, Department, Kpi, Post, PostKind, PostStatus, Source
from bot.outbox import LEASE, Key, claim
from bot.reports.actuals import record_actual
from handlers.alerts.interactive import sync_alerts
from handlers.client import make_web_client
from handlers.poster import metadata
from tests.fakeslack.harness import NOW, SlackHarness
from tests.fakeslack.server import DROP_AFTER_SEND
from tests.test_alert_posting import add_kpis

CHANNEL = "C0SALES"
OWNER = "U0SALES1"


def raise_alerts(slack: SlackHarness, kpi_keys: list[str]) -> list[int]:
    """What the hourly scan does for these KPIs only (the example plan has others it would raise)."""
    with transaction(slack.engine) as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
        ids = list(session.exec(select(Kpi.id).where(col(Kpi.key).in_(kpi_keys))).all())
        check_department(session, sales, NOW.date(), kpi_ids=ids)
    return [kpi_id for kpi_id in ids if kpi_id is not None]


def sync(slack: SlackHarness, kpi_ids: list[int]) -> None:
    sync_alerts(slack.engine, make_web_client(slack.settings), kpi_ids=kpi_ids)


def alerts(slack: SlackHarness) -> list[Alert]:
    with slack.session() as session:
        return list(session.exec(select(Alert).order_by(col(Alert.id))).all())


def alert_posts(slack: SlackHarness) -> list[Post]:
    with slack.session() as session:
        return list(session.exec(select(Post).where(Post.kind == PostKind.ALERT)).all())


def roots(slack: SlackHarness) -> list[dict[str, object]]:
    """What Slack holds in #sales outside threads (also messages whose answer was lost)."""
    return [m for m in slack.fake.messages(CHANNEL) if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]


def key_of(slack: SlackHarness, kpi_key: str, period: str = "2026-11") -> Key:
    with slack.session() as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
    assert sales.id is not None
    return Key(sales.id, PostKind.ALERT, period, kpi_key)


def test_an_alert_root_whose_answer_was_lost_is_posted_once(slack: SlackHarness) -> None:
    slack.fake.fail("chat.postMessage", DROP_AFTER_SEND)
    slack.command("report close_rate 10", user_id=OWNER)  # 10 % against 15–20 %: red
    slack.settle()
    sync(slack, raise_alerts(slack, ["close_rate"]))  # the next scan finds nothing left to post

    (held,) = roots(slack)
    assert held["metadata"] == metadata(key_of(slack, "close_rate").token())
    assert len(slack.fake.calls("chat.postMessage")) == 1  # asked Slack instead of sending again
    assert len(slack.fake.calls("conversations.history")) == 1
    (alert,) = alerts(slack)
    assert (alert.channel_id, alert.thread_ts) == (CHANNEL, held["ts"])
    (post,) = alert_posts(slack)
    assert (post.status, post.ts, post.attempts) == (PostStatus.SENT, held["ts"], 1)


def test_a_storm_whose_messages_lost_their_answers_is_posted_once(slack: SlackHarness) -> None:
    add_kpis(slack, 60, 10)  # 10 of 100 each: more than one message's worth: a grouped root and continuations
    kpi_ids = raise_alerts(slack, [f"extra_{index:02d}" for index in range(60)])
    slack.fake.fail("chat.postMessage", DROP_AFTER_SEND, times=None)
    sync(slack, kpi_ids)
    slack.fake.clear_failures()
    sync(slack, kpi_ids)

    rows = alerts(slack)
    assert len(rows) == 60 > STORM
    (root,) = roots(slack)
    continued = [m for m in slack.fake.messages(CHANNEL) if m.get("thread_ts") == root["ts"] != m["ts"]]
    assert continued  # the storm needed more than one message
    assert len(slack.fake.calls("chat.postMessage")) == 1 + len(continued)  # each sent once
    assert {alert.thread_ts for alert in rows} == {root["ts"]}
    posts = alert_posts(slack)
    assert len(posts) == 60 and all(p.status is PostStatus.SENT for p in posts)
    assert {p.ts for p in posts} == {root["ts"], *(m["ts"] for m in continued)}
    # Each message is tagged with the ledger key of an alert it lists.
    listed_in = {f"{p.department_id}:{p.kind.value}:{p.period}:{p.subject}": p.ts for p in posts}
    assert all(listed_in[m["metadata"]["event_payload"]["key"]] == m["ts"] for m in [root, *continued])


def test_a_claim_left_by_a_process_that_died_after_posting_is_recorded_not_posted_again(
    slack: SlackHarness,
) -> None:
    """A scan killed between Slack having the root and the ledger recording its ts: after the lease,
    the next scan finds the tagged message in Slack and records it."""
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "close_rate")).one()
        record_actual(
            session, kpi=kpi, period="2026-11", value=Decimal(10), reported_by="U0SEED", source=Source.CSV
        )
    # What the dead process did: raised the alert, claimed its post, posted it tagged, then died.
    kpi_ids = raise_alerts(slack, ["close_rate"])
    with transaction(slack.engine) as session:
        (view,) = unshown(session, kpi_ids=kpi_ids)
    key = post_key(view)
    assert claim(slack.engine, key, channel_id=CHANNEL) is not None
    client = make_web_client(slack.settings)
    posted = client.chat_postMessage(channel=CHANNEL, text="alert", metadata=metadata(key.token()))

    set_clock(lambda: (NOW + LEASE + dt.timedelta(minutes=1)).astimezone(dt.UTC))
    sync(slack, kpi_ids)

    assert len(roots(slack)) == 1 and len(slack.fake.calls("chat.postMessage")) == 1
    (alert,) = alerts(slack)
    assert alert.thread_ts == posted["ts"]
    (post,) = alert_posts(slack)
    assert (post.status, post.ts, post.attempts) == (PostStatus.SENT, posted["ts"], 2)
