"""The kpibot app served over real HTTP against the fake Slack, ready for a test to talk to."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from wsgiref.types import WSGIApplication

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bot.clock import set_clock
from bot.config import Settings, load_settings
from bot.models import Actual, Kpi
from handlers.app import create_app
from handlers.home import interactive as home
from handlers.web import make_wsgi_app
from handlers.work import PostAckPool
from tests.fakeslack.client import Response, SignedSlackClient
from tests.fakeslack.server import Call, FakeSlack, WsgiServer
from tests.plans import EXAMPLE_PLAN, import_plan_into_empty

SIGNING_SECRET = "test-signing-secret"
# Monday 30 November 2026, 10:00 in Tokyo: current week 2026-W49, current month 2026-11.
NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))


class Activity:
    """Counts the app's work in progress: requests being answered and listener tasks (which Bolt
    runs on its executor, also after ack())."""

    def __init__(self) -> None:
        self._busy = 0
        self._changed = threading.Condition()

    def _begin(self) -> None:
        with self._changed:
            self._busy += 1

    def _end(self, *_: object) -> None:
        with self._changed:
            self._busy -= 1
            self._changed.notify_all()

    def watch_wsgi(self, app: WSGIApplication) -> WSGIApplication:
        def watched(environ: dict[str, Any], start_response: Any) -> Any:
            self._begin()
            try:
                # Bolt answers with a list: the work is done once the app returns.
                return app(environ, start_response)
            finally:
                self._end()

        return watched

    def watch_executor(self, executor: Executor | PostAckPool) -> None:
        for name in ("submit", "submit_later"):
            if hasattr(executor, name):
                setattr(executor, name, self._watched(getattr(executor, name)))

    def _watched(self, submit: Callable[..., Future[Any]]) -> Callable[..., Future[Any]]:
        def watched(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            # Counted before the task is queued, so a request never ends with its listener unseen.
            self._begin()
            try:
                future = submit(fn, *args, **kwargs)
            except BaseException:
                self._end()
                raise
            future.add_done_callback(self._end)
            return future

        return watched

    def wait_idle(self, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._busy == 0, timeout):
                raise AssertionError(f"kpibot still busy after {timeout}s ({self._busy} in progress)")


@dataclass
class SlackHarness:
    fake: FakeSlack
    server: WsgiServer
    client: SignedSlackClient
    engine: Engine
    settings: Settings
    activity: Activity

    def command(self, text: str, *, user_id: str, channel_id: str = "C0SALES", **kwargs: Any) -> Call:
        """Send `/kpi <text>` and return the ephemeral answer Slack received on response_url."""
        before = len(self.fake.calls("response_url"))
        response = self.client.command(text, user_id=user_id, channel_id=channel_id, **kwargs)
        assert response.status == 200, response
        return self.fake.wait_for("response_url", count=before + 1)[before]

    def send(self, text: str, *, user_id: str, **kwargs: Any) -> Response:
        return self.client.command(text, user_id=user_id, **kwargs)

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until kpibot has finished all it was asked to do: no request in flight, no
        listener still running after its ack(). What a wrongly handled retry would have done
        by now has been done, so a test can assert it did not happen without sleeping."""
        self.activity.wait_idle(timeout)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def live_values(self, kpi_key: str) -> dict[str, Decimal]:
        """A KPI's live (not superseded) values by period, as stored."""
        with self.session() as session:
            rows = session.exec(
                select(Actual)
                .join(Kpi, col(Kpi.id) == Actual.kpi_id)
                .where(Kpi.key == kpi_key, col(Actual.superseded_at).is_(None))
            ).all()
            return {row.period: Decimal(row.value) for row in rows}


def start_harness(
    engine: Engine,
    *,
    plan: Path | None = EXAMPLE_PLAN,
    now: dt.datetime = NOW,
    environ: dict[str, str] | None = None,
    home_debounce: float = 0.0,
) -> SlackHarness:
    set_clock(lambda: now.astimezone(dt.UTC))
    if plan is not None:
        import_plan_into_empty(engine, plan)
    fake = FakeSlack().start()
    settings = load_settings(
        {
            "DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url,
            **(environ or {}),
        },
        env_file=None,
    )
    # The Home tabs' refresh after a change waits out a debounce (1 s) on the listeners' pool:
    # here it runs at once, so settle() and the teardown do not wait for it (or, once the fake
    # has stopped, for its publishes retried against a closed port).
    debounce, home.DEBOUNCE_SECONDS = home.DEBOUNCE_SECONDS, home_debounce
    try:
        pool = PostAckPool()
        app = create_app(settings, engine, post_ack=pool)
    finally:
        home.DEBOUNCE_SECONDS = debounce
    activity = Activity()
    activity.watch_executor(app.listener_runner.listener_executor)
    wsgi = make_wsgi_app(app, engine, pool=pool)
    activity.watch_executor(wsgi.post_ack)  # the follow-ups handed over after an ack, too
    server = WsgiServer(activity.watch_wsgi(wsgi)).start()
    client = SignedSlackClient(server.url, SIGNING_SECRET, fake=fake)
    return SlackHarness(fake, server, client, engine, settings, activity)


def stop_harness(harness: SlackHarness, settle_timeout: float = 10.0) -> None:
    # Listeners still running after the test would race the table emptying that follows
    # (PostgreSQL: TRUNCATE against their reads, a deadlock): the app's work drains first,
    # with Slack still answering (refused calls would be retried with back-off). Work still
    # going after a moment waits on a call the fake holds (HANG_AFTER_SEND): stopping the
    # fake ends it.
    with contextlib.suppress(AssertionError):
        harness.settle(1.0)
    harness.fake.stop()
    try:
        harness.settle(settle_timeout)
    finally:
        harness.server.stop()
