"""App Home in Slack: the tab published on `app_home_opened`, refreshed when what it shows changes.

- `app_home_opened` (the Home tab): acked at once (Bolt acks events), then the tab is built from
  bot.home.service and published with views.publish in the user's language.
- `HomeRefresher.changed(users)`: after a report, a countermeasure closed or an alert acknowledged,
  for those who opened their tab within the last hour (bot.home.service.WATCHED_FOR: it is
  published afresh whenever it is opened, so a publish to a tab nobody has open is waste).
  Debounced per user (several changes within DEBOUNCE_SECONDS publish once), published on the
  worker's post-ack pool (two at a time, handlers/work.py) after the request's own answer, so it
  never delays a report nor, in a burst, crowds the next acks off the interpreter; rate limits are
  retried by the Web API client (handlers/client.py, Retry-After), any other failure is logged.
- The tab's buttons: Report (the report form on that KPI's period) and Done / Dropped (the same
  close as the countermeasure's buttons in its thread, bot.countermeasures.flows.close).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.views import View

from bot import render
from bot.countermeasures import flows
from bot.countermeasures import service as countermeasures
from bot.home.service import build_home, record_opened, watching
from handlers.countermeasures import messages as countermeasure_messages
from handlers.deps import Deps
from handlers.home import messages
from handlers.poster import SlackPoster
from handlers.report.interactive import form_view
from handlers.work import PostAckPool, answer_in, unit_of_work

log = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 1.0
_PERMALINK_TS = re.compile(r"/p(\d{10})(\d{6})")


class HomeRefresher:
    """Publishes users' Home tabs: now (`publish`) or debounced after a change (`changed`)."""

    def __init__(
        self, deps: Deps, client: WebClient, executor: Executor, debounce: float | None = None
    ) -> None:
        self._deps = deps
        self._client = client
        self._executor = executor
        self._debounce = DEBOUNCE_SECONDS if debounce is None else debounce  # read when built
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._flushing = False
        self._links: dict[tuple[str, str], str] = {}  # permalinks never change

    def changed(self, users: Iterable[str | None]) -> None:
        """Refresh these users' tabs soon, once however many changes arrive meanwhile. One timer
        at a time waits out the debounce, on a thread of its own: a pool thread must not sleep."""
        with self._lock:
            self._pending.update(user for user in users if user)
            start = bool(self._pending) and not self._flushing
            self._flushing = self._flushing or start
        if not start:
            return
        if self._debounce <= 0:
            self._flush()
            return
        timer = threading.Timer(self._debounce, self._flush)
        timer.daemon = True  # a worker stopping does not wait for tabs nobody may be looking at
        timer.start()

    def _flush(self) -> None:
        with self._lock:
            changed, self._pending, self._flushing = sorted(self._pending), set(), False
        try:
            with unit_of_work(self._deps.engine) as session:
                users = sorted(watching(session, changed))
        except Exception:
            log.exception("finding which of %d Home tabs to refresh failed", len(changed))
            return
        for user in users:
            try:
                # On the worker's post-ack pool a tab is a follow-up: it yields to saves and acks.
                if isinstance(self._executor, PostAckPool):
                    self._executor.submit_later(self.publish, user)
                else:
                    self._executor.submit(self.publish, user)
            except RuntimeError:  # shutting down
                return

    def view_for(self, user: str, locale: str | None = None) -> View:
        """The user's tab as it stands now, in their language (or `locale`)."""
        with unit_of_work(self._deps.engine) as session:
            home = build_home(session, user, self._deps.admin_check(user))
        locale = locale or self._deps.locale_for(user)
        return messages.home_view(home, locale, self._permalinks(messages.alert_threads(home)))

    def opened(self, user: str) -> bool:
        """`app_home_opened`: remember it (a change refreshes tabs opened lately), then publish."""
        try:
            with unit_of_work(self._deps.engine) as session:
                record_opened(session, user)
        except Exception:
            log.exception("recording that %s opened the Home tab failed", user)
        return self.publish(user)

    def publish(self, user: str) -> bool:
        """Build and publish one user's tab; never raises (a failure is logged)."""
        try:
            self._client.views_publish(user_id=user, view=self.view_for(user))
            return True
        except SlackApiError as error:
            log.error("views.publish for %s failed: %s", user, error.response.get("error"))
        except Exception:
            log.exception("publishing the Home tab of %s failed", user)
        return False

    def _permalinks(self, threads: list[tuple[int, str, str]]) -> dict[int, str]:
        links: dict[int, str] = {}
        poster = SlackPoster(self._client)
        for alert_id, channel, ts in threads:
            link = self._links.get((channel, ts))
            if link is None:
                link = poster.permalink(channel, ts)
                if link:
                    self._links[(channel, ts)] = link
            if link:
                links[alert_id] = link
        return links


def register(app: App, deps: Deps, refresher: HomeRefresher) -> None:
    @app.event("app_home_opened")
    def home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return  # the Messages tab
        refresher.opened(event["user"])

    @app.action(messages.REPORT_ACTION)
    def report_clicked(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        ack()
        user_id = body["user"]["id"]
        _, _, period = str((body.get("actions") or [{}])[0].get("value") or "").partition(":")
        locale = deps.locale_for(user_id)
        answer_in(context, locale=locale, slack_error="modal.open_failed")
        # The Home tab has no channel: the form's confirmation goes to the user's DM with kpibot.
        dm = client.conversations_open(users=user_id)["channel"]["id"]
        view = form_view(deps, user_id, dm, locale, period or "current")
        if isinstance(view, str):
            _tell_in_home(client, user_id, view)
            return
        client.views_open(trigger_id=body["trigger_id"], view=view)

    @app.action(re.compile(f"^(?:{messages.DONE_ACTION}|{messages.DROPPED_ACTION})$"))
    def close_clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        user_id = body["user"]["id"]
        action = body["actions"][0]
        try:
            countermeasure_id = int(action.get("value") or "")
        except ValueError:
            log.warning("home countermeasure button with a bad value %r", action.get("value"))
            return
        with unit_of_work(deps.engine) as session:
            item = countermeasures.item_of(session, countermeasure_id)
        channel, message_ts = _confirmation_of(item)
        status = (
            countermeasure_messages.CLOSING[countermeasure_messages.DONE_ACTION]
            if action["action_id"] == messages.DONE_ACTION
            else countermeasure_messages.CLOSING[countermeasure_messages.DROPPED_ACTION]
        )
        closing = flows.close(
            deps.engine,
            SlackPoster(client),
            countermeasure_messages,
            countermeasure_id=countermeasure_id,
            status=status,
            user_id=user_id,
            is_admin=deps.admin_check(user_id),
            channel=channel,
            message_ts=message_ts,
        )
        if item is not None and closing.outcome == "changed":
            deps.changed.about_kpis(
                deps.engine, [item.kpi.id or 0], user_id, item.countermeasure.owner_user_id
            )
        locale = deps.locale_for(user_id, closing.department)
        if closing.outcome == "gone":
            _tell_in_home(client, user_id, render.message("countermeasure.gone", locale))
        elif closing.outcome == "not_allowed":
            text = render.message("countermeasure.change_not_allowed", locale, department=closing.department)
            _tell_in_home(client, user_id, text)
        elif closing.outcome == "already" and closing.change is not None:
            status_now, by = closing.change.countermeasure.status.value, closing.change.by
            text = render.message("countermeasure.already", locale, status=status_now, by=by)
            _tell_in_home(client, user_id, text)


def _confirmation_of(item: countermeasures.Item | None) -> tuple[str, str]:
    """Where the countermeasure's confirmation (with its buttons) is: its channel, and the ts in
    its permalink, so closing it from the Home tab updates that message too."""
    if item is None or not item.countermeasure.channel_id or not item.countermeasure.permalink:
        return "", ""
    match = _PERMALINK_TS.search(item.countermeasure.permalink)
    if match is None:
        return "", ""
    return item.countermeasure.channel_id, f"{match[1]}.{match[2]}"


def _tell_in_home(client: WebClient, user_id: str, text: str) -> None:
    """An answer to a click in the Home tab: it has no channel, so in the user's DM with kpibot
    (the Messages tab, beside Home); a failure to deliver it is logged, never raised."""
    try:
        client.chat_postMessage(channel=user_id, text=text)
    except SlackApiError as error:
        log.error("answer to %s in the Messages tab failed: %s", user_id, error.response.get("error"))
