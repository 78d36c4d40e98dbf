"""Work after an ack runs on the web worker's PostAckPool: a burst of it never delays the next
request's ack, a full pool runs work where it is handed over (nothing dropped), and a pool
stopping finishes what it holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from bot.config import load_settings
from handlers import work
from handlers.app import create_app
from handlers.web import make_wsgi_app
from handlers.work import PostAckPool
from tests.fakeslack.client import SignedSlackClient
from tests.fakeslack.harness import SIGNING_SECRET
from tests.fakeslack.server import FakeSlack, WsgiServer
from tests.plans import EXAMPLE_PLAN, import_plan_into_empty


class SlowWork:
    """Work that holds its thread until released, recording who ran it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        self.release.wait(30)
        with self._lock:
            self.ran.append((n, threading.current_thread().name))


@pytest.fixture
def served(engine: Engine) -> Iterator[tuple[SignedSlackClient, PostAckPool]]:
    """kpibot over HTTP with two listener threads: as few as a burst could hold."""
    import_plan_into_empty(engine, EXAMPLE_PLAN)
    fake = FakeSlack().start()
    settings = load_settings(
        {
            "DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url,
            "KPIBOT_LISTENER_THREADS": "2",
        },
        env_file=None,
    )
    wsgi = make_wsgi_app(create_app(settings, engine), engine, settings)
    server = WsgiServer(wsgi).start()
    try:
        yield SignedSlackClient(server.url, SIGNING_SECRET, fake=fake), wsgi.post_ack
    finally:
        wsgi.post_ack.shutdown()
        server.stop()
        fake.stop()


def test_a_burst_of_slow_work_after_acks_does_not_delay_the_next_ack(
    served: tuple[SignedSlackClient, PostAckPool],
) -> None:
    client, pool = served
    slow = SlowWork()
    # More slow work than the worker has listener threads (2) and pool threads (2) together.
    for n in range(6):
        pool.submit(slow, n)
    answer = client.command("help", user_id="U0SALESHEAD")
    # The ack came while every piece of the slow work was still running or waiting.
    assert answer.status == 200 and slow.ran == []
    slow.release.set()
    pool.shutdown()
    assert sorted(n for n, _ in slow.ran) == list(range(6))
    assert {thread for _, thread in slow.ran} <= {"kpibot-after-ack_0", "kpibot-after-ack_1"}


def test_a_full_pool_runs_work_where_it_is_handed_over() -> None:
    pool = PostAckPool(threads=1, queue=1)
    slow = SlowWork()
    pool.submit(slow, 0)  # running
    pool.submit(slow, 1)  # waiting
    handed_over = threading.Thread(target=pool.submit, args=(slow, 2), name="listener")
    handed_over.start()
    slow.release.set()
    handed_over.join(10)
    pool.shutdown()
    assert sorted(slow.ran) == [(0, "kpibot-after-ack_0"), (1, "kpibot-after-ack_0"), (2, "listener")]


def test_a_stopping_pool_finishes_what_it_holds_and_runs_later_work_in_place() -> None:
    pool = PostAckPool(threads=1, queue=5)
    slow = SlowWork()
    for n in range(6):
        pool.submit(slow, n)
    stopping = threading.Thread(target=pool.shutdown)
    stopping.start()
    slow.release.set()
    stopping.join(10)
    assert not stopping.is_alive() and sorted(n for n, _ in slow.ran) == list(range(6))
    pool.submit(slow, 6)
    assert slow.ran[-1] == (6, threading.current_thread().name)


def test_work_that_fails_is_logged_and_frees_its_place(caplog: pytest.LogCaptureFixture) -> None:
    pool = PostAckPool(threads=1, queue=0)

    def broken() -> None:
        raise RuntimeError("follow-up broke")

    pool.submit(broken).exception(10)
    ran = pool.submit(threading.current_thread)
    pool.shutdown()
    assert ran.result().name == "kpibot-after-ack_0"  # the place was freed: not run in place
    assert "work after an ack failed" in caplog.text


def test_follow_ups_wait_for_the_requests_in_flight_and_the_saves_go_first() -> None:
    pool = PostAckPool(threads=1, queue=5, idle=0.05, patience=30)
    ran: list[str] = []
    done = threading.Event()
    with pool.answering():  # a request is being answered
        pool.submit_later(ran.append, "follow-up")
        pool.submit(ran.append, "save").result(10)  # queued after it, run before it
        time.sleep(0.2)  # the follow-up had every chance to start, and did not
        assert ran == ["save"]
    pool.submit_later(lambda: done.set())
    assert done.wait(10)  # answered: the follow-ups run, in their order
    pool.shutdown()
    assert ran == ["save", "follow-up"]


def test_a_follow_up_runs_after_its_patience_even_while_requests_keep_coming() -> None:
    pool = PostAckPool(threads=1, queue=5, idle=0.05, patience=0.2)
    done = threading.Event()
    with pool.answering():
        pool.submit_later(done.set)
        assert done.wait(10)  # without the patience it would wait for the request to end
    pool.shutdown()


def test_a_pool_with_nothing_to_do_ends_its_threads_and_starts_one_for_new_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(work, "THREAD_IDLE_S", 0.1)
    pool = PostAckPool(threads=2, queue=5)

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("kpibot-after-ack") and t in mine]

    mine: set[threading.Thread] = set()
    mine.add(pool.submit(threading.current_thread).result(10))
    deadline = time.monotonic() + 10
    while threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threads() == []  # ended, not left waiting forever (a test makes a pool each)
    assert pool.submit(lambda: 42).result(10) == 42
    pool.shutdown()
