"""The framework floor for ack latency: a Bolt app that acks `/kpi` and does nothing else.

Built like kpibot's (handlers/app.py: the same Web API client factory, signing secret and
signature verification) and wrapped like it (handlers/web.make_wsgi_app: the same WSGI
adapter and /healthz), so the only difference `bench/serve.py` leaves is the listeners. It
also acks the report modal's submission (callback `report_modal`) without looking at it, the
floor for that request kind.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App

from bot.config import Settings
from bot.database import make_engine, require_current_schema
from handlers.client import make_web_client
from handlers.report.messages import CALLBACK_ID
from handlers.web import make_wsgi_app


def create_bare_app(settings: Settings) -> App:
    settings.require_slack()
    app = App(
        name="kpibot-bench-bare",
        client=make_web_client(settings),
        signing_secret=settings.slack_signing_secret or "",
    )

    @app.command("/kpi")
    def kpi_command(ack: Ack) -> None:
        ack()

    @app.view(CALLBACK_ID)
    def report_modal(ack: Ack) -> None:
        ack()

    return app


def build(settings: Settings) -> Any:
    """The WSGI app for one worker, as handlers.web.build makes kpibot's."""
    engine = make_engine(settings.database_url)
    require_current_schema(engine)
    return make_wsgi_app(create_bare_app(settings), engine)
