"""HTTP serving: `POST /slack/events` (Bolt), `GET /healthz`, the push API (`/api/v1/…`,
handlers/api) and HubSpot's webhooks (`/hooks/hubspot/<source>`, handlers/hubspot), under
gunicorn in production."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from gunicorn.app.base import BaseApplication
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.errors import SlackApiError
from sqlalchemy.engine import Engine

from bot import render
from bot.config import Settings, load_settings
from bot.database import check_connection, make_engine, require_current_schema
from bot.errors import DatabaseUnavailable, SlackRefused
from bot.reports.service import Reported
from handlers.api.endpoint import PushApi
from handlers.client import make_web_client
from handlers.deps import Deps
from handlers.gate import verified
from handlers.hubspot.receiver import PREFIX as HUBSPOT_PREFIX
from handlers.hubspot.receiver import HubSpotReceiver
from handlers.process import settle
from handlers.report.followup import after_reports
from handlers.users import UserDirectory
from handlers.work import PostAckPool, post_ack_pool

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
API_PREFIX = "/api/"


def _push_api(app: App, engine: Engine, settings: Settings | None, pool: PostAckPool) -> PushApi:
    """The push API; values it stores get their follow-ups in Slack (alerts, countermeasure
    effects) on the worker's post-ack pool, after the API has answered."""
    if settings is None:  # a test's app: the defaults
        url = engine.url.render_as_string(hide_password=False)
        settings = load_settings({"DATABASE_URL": url}, env_file=None)
    deps = Deps(settings=settings, engine=engine, users=UserDirectory(app.client, settings.admins))

    def after_commit(saved: list[Reported]) -> None:
        pool.submit_later(after_reports, deps, app.client, saved)

    return PushApi(engine, default_locale=settings.locale, after_commit=after_commit)


def make_wsgi_app(
    app: App, engine: Engine, settings: Settings | None = None, pool: PostAckPool | None = None
) -> Any:
    bolt = SlackRequestHandler(app, path=EVENTS_PATH)
    # Verified on the raw body before Bolt parses anything (handlers/gate.py).
    events = verified(bolt, app._signing_secret)  # noqa: SLF001 (the secret the app was built with)
    # One per worker: listeners reach it through `after_ack`, the push API and HubSpot directly
    # (and the app's Home refreshes, when it was built with the same pool).
    pool = pool or PostAckPool()
    app.use(post_ack_pool(pool))
    api = _push_api(app, engine, settings, pool)
    # Values HubSpot counts get the same follow-ups in Slack as pushed ones.
    hooks = HubSpotReceiver(engine, locale=api.default_locale, after_commit=api.after_commit)

    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or ""
        if path == "/healthz" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return _healthz(engine, start_response)
        # Each app answers with a list: the request is answered once it returns. Follow-ups wait
        # while any is in flight (PostAckPool.submit_later).
        with pool.answering():
            if path == EVENTS_PATH:
                return events(environ, start_response)
            if path.startswith(API_PREFIX):
                return api(environ, start_response)
            if path.startswith(HUBSPOT_PREFIX):
                return hooks(environ, start_response)
            return bolt(environ, start_response)

    wsgi.post_ack = pool  # type: ignore[attr-defined]  # drained when the worker stops
    return wsgi


def _drain_post_ack(server: Any, worker: Any) -> None:
    """gunicorn's worker_exit hook: what was handed over after an ack is done before the worker goes."""
    pool = getattr(getattr(worker, "wsgi", None), "post_ack", None)
    if pool is not None:
        pool.shutdown()


def _healthz(engine: Engine, start_response: Any) -> list[bytes]:
    try:
        check_connection(engine)
        status, body = "200 OK", {"ok": True, "database": "ok"}
    except DatabaseUnavailable:
        # The URL stays out of the body: this endpoint is public.
        status, body = "503 Service Unavailable", {"ok": False, "database": "unavailable"}
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def build(settings: Settings) -> Any:
    """The WSGI app for one worker process: its own engine and Bolt app."""
    from handlers.app import create_app

    engine = make_engine(settings.database_url)
    require_current_schema(engine)
    pool = PostAckPool()
    return make_wsgi_app(create_app(settings, engine, post_ack=pool), engine, settings, pool)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return build(self._settings)


def check_slack_tokens(settings: Settings, locale: str | None = None, *, socket_mode: bool = False) -> None:
    """Ask Slack whether it takes our tokens, in this process and before serving: otherwise
    Bolt's own auth.test fails inside every gunicorn worker (a traceback each, then "Worker
    failed to boot"), or inside the Socket Mode client."""
    locale = locale or settings.locale
    client = make_web_client(settings)
    checks: list[tuple[str, Any]] = [("SLACK_BOT_TOKEN", client.auth_test)]
    if socket_mode:
        # An app-level token is only good for apps.connections.open; the URL it issues goes unused.
        checks.append(
            ("SLACK_APP_TOKEN", lambda: client.apps_connections_open(app_token=settings.slack_app_token))
        )
    for variable, call in checks:
        try:
            with _silenced("slack_sdk"):
                call()
        except SlackApiError as error:
            code = error.response.get("error") or error.response.status_code
            raise SlackRefused(
                render.message("cli.slack_refused_token", locale, variable=variable, error=code)
            ) from None
        except OSError as error:  # URLError, refused connection, timeout
            reason = getattr(error, "reason", None) or error
            raise SlackRefused(
                render.message("cli.slack_unreachable", locale, url=settings.slack_api_url, error=reason)
            ) from None


@contextmanager
def _silenced(name: str) -> Iterator[None]:
    """The client logs each failed attempt; the one line that follows says it all."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def serve(
    settings: Settings, *, host: str = "0.0.0.0", workers: int | None = None, locale: str | None = None
) -> None:
    settings.require_slack()
    # Fail in the parent, with one clear line, before gunicorn forks workers that would each fail.
    require_current_schema(make_engine(settings.database_url))
    check_slack_tokens(settings, locale)
    options = {
        "bind": f"{host}:{settings.port}",
        "workers": workers or settings.web_concurrency,
        # Threads, not async workers: Bolt's App is synchronous and acks from its own thread pool.
        "worker_class": "gthread",
        "threads": settings.web_threads,
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "worker_exit": _drain_post_ack,
    }
    render.warm()  # before the fork: every worker starts with the compiled messages
    # ...and never walks them in a garbage collection (nor copies their pages by touching them).
    settle()
    _Gunicorn(settings, options).run()


def serve_socket_mode(settings: Settings, *, locale: str | None = None) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from handlers.app import create_app

    settings.require_slack(socket_mode=True)
    engine = make_engine(settings.database_url)
    require_current_schema(engine)
    check_slack_tokens(settings, locale, socket_mode=True)
    render.warm()
    settle()
    SocketModeHandler(create_app(settings, engine, socket_mode=True), settings.slack_app_token).start()
