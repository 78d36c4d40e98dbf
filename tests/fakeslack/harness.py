"""The kpibot app served over real HTTP against the fake Slack, ready for a test to talk to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bot.clock import set_clock
from bot.config import Settings, load_settings
from bot.models import Actual, Kpi
from handlers.app import create_app
from handlers.web import make_wsgi_app
from tests.fakeslack.client import Response, SignedSlackClient
from tests.fakeslack.server import Call, FakeSlack, WsgiServer
from tests.plans import EXAMPLE_PLAN, import_plan

SIGNING_SECRET = "test-signing-secret"
# Monday 30 November 2026, 10:00 in Tokyo: current week 2026-W49, current month 2026-11.
NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))


@dataclass
class SlackHarness:
    fake: FakeSlack
    server: WsgiServer
    client: SignedSlackClient
    engine: Engine
    settings: Settings

    def command(self, text: str, *, user_id: str, channel_id: str = "C0SALES", **kwargs: Any) -> Call:
        """Send `/kpi <text>` and return the ephemeral answer Slack received on response_url."""
        before = len(self.fake.calls("response_url"))
        response = self.client.command(text, user_id=user_id, channel_id=channel_id, **kwargs)
        assert response.status == 200, response
        return self.fake.wait_for("response_url", count=before + 1)[before]

    def send(self, text: str, *, user_id: str, **kwargs: Any) -> Response:
        return self.client.command(text, user_id=user_id, **kwargs)

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
) -> SlackHarness:
    set_clock(lambda: now.astimezone(dt.UTC))
    if plan is not None:
        import_plan(engine, plan)
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
    app = create_app(settings, engine)
    server = WsgiServer(make_wsgi_app(app, engine)).start()
    client = SignedSlackClient(server.url, SIGNING_SECRET, fake=fake)
    return SlackHarness(fake, server, client, engine, settings)


def stop_harness(harness: SlackHarness) -> None:
    harness.server.stop()
    harness.fake.stop()
