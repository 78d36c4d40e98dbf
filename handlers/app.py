"""The app factory: one Bolt App, built from settings and the database engine."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy.engine import Engine

from bot.config import Settings

# The modules imported as `_name` are imported for their @subcommand registrations.
from handlers import chart as _chart  # noqa: F401
from handlers import commands
from handlers.alerts import interactive as alerts
from handlers.client import make_web_client
from handlers.countermeasures import interactive as countermeasures
from handlers.deps import Deps
from handlers.digests import interactive as _digests  # noqa: F401
from handlers.history import interactive as _history  # noqa: F401
from handlers.home import interactive as home
from handlers.imports import interactive as imports
from handlers.plan import interactive as plan
from handlers.report import interactive as report
from handlers.review import interactive as _review  # noqa: F401
from handlers.status import interactive as _status  # noqa: F401
from handlers.users import UserDirectory
from handlers.work import PostAckPool, acknowledge_other_events, failures_told, keep_ack, on_error


def create_app(
    settings: Settings, engine: Engine, *, socket_mode: bool = False, post_ack: PostAckPool | None = None
) -> App:
    """The Bolt app. `post_ack` is the worker's pool for work after an ack (handlers/web.py makes one
    per worker and serves with it): the Home tabs' refreshes run there, two at a time, instead of on
    the listener pool, where a burst of reports set up to one publish per user against the acks."""
    settings.require_slack(socket_mode=socket_mode)
    client: WebClient = make_web_client(settings)
    app = App(
        name="kpibot",
        client=client,
        # Signature verification stays on (Bolt's default); Socket Mode has no HTTP to sign.
        signing_secret=settings.slack_signing_secret or "",
        request_verification_enabled=not socket_mode,
        # Bolt's default pool (5 threads) is too small; see Settings.listener_threads.
        listener_executor=(
            executor := ThreadPoolExecutor(
                max_workers=settings.listener_threads, thread_name_prefix="kpibot-listener"
            )
        ),
    )
    deps = Deps(settings=settings, engine=engine, users=UserDirectory(client, settings.admins))
    app.use(keep_ack)
    handle_error = on_error(lambda user: deps.locale_for(user) if user else settings.locale)
    app.error(handle_error)
    app.use(failures_told(handle_error))
    commands.register(app, deps)
    report.register(app, deps)
    alerts.register(app, deps)
    countermeasures.register(app, deps)
    refresher = home.HomeRefresher(deps, client, post_ack or executor)
    deps.changed.listen(refresher.changed)
    home.register(app, deps, refresher)
    plan.register(app, deps)
    imports.register(app, deps)
    acknowledge_other_events(app)  # last: only what no listener above took
    return app
