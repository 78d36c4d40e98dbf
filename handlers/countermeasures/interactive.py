"""Countermeasures in Slack: logged from alert threads, closed by button, followed up in the thread.

Four ways to log one, each confirmed in the alert's thread with its owner and due date:
- the "Log countermeasure" button on an alert (`alert_log_countermeasure`, value = the alert id)
  opens the form (`countermeasure_modal`);
- the message shortcut `log_countermeasure` on a reply in an alert's thread opens the same form,
  prefilled with the reply;
- `/kpi countermeasure <kpi> <text…> [@owner] [due]` (slash commands don't work in threads);
- `@kpibot 対策: …` / `@kpibot countermeasure: …` in an alert's thread.

The confirmation carries Done / Dropped buttons; follow-ups (the effect when the KPI's next actual
arrives, the reminder on the due date) are posted in the same thread, once each, through the outbox.
Listeners only: the checks are bot/countermeasures/service.py, the orchestration
bot/countermeasures/flows.py, the Block Kit messages.py; what escapes goes to app.error (handlers/work.py).
Every word in templates/<locale>/messages/countermeasures.yaml.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from bot import render
from bot.clock import utcnow
from bot.countermeasures import flows, service
from bot.countermeasures.service import CountermeasureError
from bot.departments import find_department, own_department
from bot.errors import DatabaseUnavailable
from bot.models import Alert, Countermeasure, Department, Kpi
from bot.outbox import Message, Outbox
from bot.reports.service import Reported
from bot.scorecard import all_departments
from handlers.commands import CommandRequest, subcommand
from handlers.countermeasures import messages
from handlers.countermeasures.messages import TEXT_BLOCK, VALUE
from handlers.deps import Deps
from handlers.poster import SlackPoster, error_code
from handlers.work import AlreadyHandled, database_error, tell, unit_of_work

log = logging.getLogger(__name__)

SHORTCUT_ID = "log_countermeasure"


# -- for the callers outside: the flows bound to Slack and this surface's Block Kit ------------------


def announce(
    deps: Deps, client: WebClient, countermeasure: Countermeasure, kpi: Kpi, department: Department
) -> flows.Announced:
    return flows.announce(deps.engine, SlackPoster(client), messages, countermeasure, kpi, department)


def on_reported(deps: Deps, client: WebClient, reported: Reported) -> None:
    flows.on_reported(Outbox(deps.engine, SlackPoster(client)), reported)


def remind_due(engine: Engine, client: WebClient, now: dt.datetime) -> int:
    return flows.remind_due(Outbox(engine, SlackPoster(client)), now)


def tell_in(client: WebClient, channel: str, user_id: str, text: str, thread_ts: str | None = None) -> None:
    """chat.postEphemeral in the thread the answer is about (a response_url answer lands in the channel)."""
    tell(client, {"user": {"id": user_id}, "channel": {"id": channel}}, text, thread_ts=thread_ts)


def refusal(problem: CountermeasureError, locale: str) -> str:
    return render.message(f"countermeasure.error.{problem.code}", locale, **problem.params)


# -- the form ----------------------------------------------------------------------------------------


def open_form(
    deps: Deps,
    client: WebClient,
    *,
    trigger_id: str,
    user_id: str,
    find: Callable[[Session], Alert | None],
    missing: str,
    answer: Callable[[str, str | None], None],
    prefill: str | None = None,
    owner: str | None = None,
    due: dt.date | None = None,
) -> None:
    """Open the form for the alert `find` returns (or `answer` the `missing` message). The trigger_id
    dies ~3 s after the click, so only a database read and the cached user lookup precede views.open."""
    with unit_of_work(deps.engine) as session:
        target = service.target_of_alert(session, find(session))
        allowed = target is not None and service.may_log(
            session, target.department, user_id, deps.admin_check(user_id)
        )
    if target is None:
        answer(render.message(missing, deps.locale_for(user_id)), None)
        return
    locale = deps.locale_for(user_id, target.department)
    thread_ts = None if target.alert is None else target.alert.thread_ts
    if not allowed:
        answer(refusal(service.not_allowed(target.department), locale), thread_ts)
        return
    try:
        client.views_open(
            trigger_id=trigger_id,
            view=messages.countermeasure_view(target, locale, prefill, owner=owner, due=due),
        )
    except SlackApiError as error:
        # Not a failure to log only: the person is told the form could not open, and why.
        code = error_code(error)
        log.warning("views.open (countermeasure) failed for %s: %s", user_id, code)
        answer(render.message("countermeasure.modal.open_failed", locale, error=code), thread_ts)


@dataclass(frozen=True)
class Submission:
    view_id: str
    user_id: str
    alert_id: int | None
    kpi_id: int | None
    text: str
    owner: str | None
    due: str | None
    effect: str | None


def read_submission(body: dict[str, Any]) -> Submission:
    view = body["view"]
    state: dict[str, Any] = view.get("state", {}).get("values", {})

    def field(block: str, key: str) -> Any:
        return (state.get(block, {}).get(VALUE) or {}).get(key)

    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        metadata = {}
    return Submission(
        view_id=view["id"],
        user_id=body["user"]["id"],
        alert_id=metadata.get("alert"),
        kpi_id=metadata.get("kpi"),
        text=field(messages.TEXT_BLOCK, "value") or "",
        owner=field(messages.OWNER_BLOCK, "selected_user"),
        due=field(messages.DUE_BLOCK, "selected_date"),
        effect=field(messages.EFFECT_BLOCK, "value"),
    )


def submit_form(deps: Deps, ack: Ack, form: Submission, client: WebClient) -> None:
    """Check everything while the form is open (per-field errors); only then close it, log the
    countermeasure once per view id and confirm it in the thread.

    The database is handled here, not by app.error: before the ack the answer is the ack itself,
    and after it a view's body names no channel for app.error to answer in."""
    user_id = form.user_id
    try:
        with unit_of_work(deps.engine) as session:
            # Where it goes comes from the alert, never from the form's metadata (a client could forge it).
            target = service.target_of_form(session, form.alert_id, form.kpi_id)
            allowed = target is not None and service.may_log(
                session, target.department, user_id, deps.admin_check(user_id)
            )
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable checking the countermeasure form of %s", user_id)
        _refuse(ack, {TEXT_BLOCK: render.message("countermeasure.error.database", deps.locale_for(user_id))})
        return
    if target is None:
        _refuse(ack, {TEXT_BLOCK: render.message("countermeasure.alert_gone", deps.locale_for(user_id))})
        return
    department, alert = target.department, target.alert
    locale = deps.locale_for(user_id, department)
    checked = service.check(
        target,
        user_id=user_id,
        allowed=allowed,
        text=form.text,
        owner=form.owner,
        due=form.due,
        expected_effect=form.effect,
        read_due=service.iso_due,
    )
    if checked.problems:
        _refuse(ack, {block: refusal(problem, locale) for block, problem in checked.problems.items()})
        return
    ack()  # closes the form; logging and confirming happen after, outside Slack's 3 s
    channel = alert.channel_id if alert is not None else department.channel_id
    thread_ts = alert.thread_ts if alert is not None else None
    try:
        # A retried submission carries the same view id: log once, confirm once.
        with unit_of_work(deps.engine, f"view:{form.view_id}") as session:
            countermeasure = service.log(session, checked.draft, logged_by=user_id, source="modal")
    except AlreadyHandled:
        # Returned, not raised: an exception this soon after ack() can reach Bolt before it has
        # seen the ack, and Slack would get a 404 for the retry instead of the ack.
        return
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable logging the countermeasure of %s", user_id)
        if channel:
            tell_in(
                client, channel, user_id, render.message("countermeasure.error.database", locale), thread_ts
            )
        return
    posted = announce(deps, client, countermeasure, target.kpi, department)
    if posted.error is not None and channel:
        text = render.message("countermeasure.logged_unposted", locale, kpi=target.kpi, error=posted.error)
        tell_in(client, channel, user_id, text, thread_ts)


def _refuse(ack: Ack, errors: dict[str, str]) -> None:
    ack(response_action="errors", errors=errors)


# -- Done / Dropped ----------------------------------------------------------------------------------


def change_status(deps: Deps, client: WebClient, body: dict[str, Any]) -> None:
    """Done / Dropped: one change however many clicks; the confirmation shows it, a late click is told."""
    action = body["actions"][0]
    user_id = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
    message = body.get("message") or {}
    message_ts = (body.get("container") or {}).get("message_ts") or message.get("ts") or ""
    try:
        countermeasure_id = int(action.get("value") or "")
    except ValueError:
        log.warning("countermeasure button with a bad value %r", action.get("value"))
        return
    closing = flows.close(
        deps.engine,
        SlackPoster(client),
        messages,
        countermeasure_id=countermeasure_id,
        status=messages.CLOSING[action["action_id"]],
        user_id=user_id,
        is_admin=deps.admin_check(user_id),
        channel=channel,
        message_ts=message_ts,
    )
    if closing.change is not None and closing.outcome == "changed":  # the Home tabs listing it
        cm = closing.change.countermeasure
        deps.changed.about_kpis(deps.engine, [cm.kpi_id], user_id, cm.owner_user_id)
    locale = deps.locale_for(user_id, closing.department)
    if closing.outcome == "gone":
        text = render.message("countermeasure.gone", locale)
    elif closing.outcome == "not_allowed":
        text = render.message("countermeasure.change_not_allowed", locale, department=closing.department)
    elif closing.outcome == "already" and closing.change is not None:
        status, by = closing.change.countermeasure.status.value, closing.change.by
        text = render.message("countermeasure.already", locale, status=status, by=by)
    else:
        return
    tell_in(client, channel, user_id, text, message.get("thread_ts"))


# -- @kpibot 対策: … -----------------------------------------------------------------------------------


def on_mention(deps: Deps, client: WebClient, body: dict[str, Any], bot_user_id: str | None) -> None:
    """A mention in a thread. `対策:`/`countermeasure:` in an alert's thread logs a countermeasure
    (once per event id, so Slack's retries log nothing more); anything else gets a short hint."""
    event = body.get("event") or {}
    event_id = str(body.get("event_id") or f"{event.get('channel')}:{event.get('ts')}")
    user_id, channel = event.get("user") or "", event.get("channel") or ""
    thread_ts = event.get("thread_ts")
    reply_ts = thread_ts or event.get("ts")
    try:
        typed = service.parse_mention(event.get("text") or "", bot_user_id)
        problem: CountermeasureError | None = None
    except CountermeasureError as error:
        typed, problem = None, error
    with unit_of_work(deps.engine) as session:
        # An alert's thread, or a funnel alert's in the division channel.
        found = service.in_thread(session, channel, thread_ts) if thread_ts else None
        target = None if found is None else found.target
        allowed = found is not None and found.allows(session, user_id, deps.admin_check(user_id))
    department = None if target is None else target.department
    locale = deps.locale_for(user_id, department)
    public_locale = department.locale if department is not None else locale

    def reply_once(text: str, *, private: bool) -> None:
        with unit_of_work(deps.engine, f"event:{event_id}"):
            pass
        if private:
            tell_in(client, channel, user_id, text, reply_ts)
        else:
            SlackPoster(client).post(channel, Message(text), thread_ts=reply_ts)

    if problem is None and typed is None:
        reply_once(render.message("countermeasure.mention.hint", public_locale), private=False)
        return
    if target is None:
        reply_once(render.message("countermeasure.mention.not_in_alert_thread", public_locale), private=False)
        return
    checked = None
    if typed is not None:
        checked = service.check(
            target, user_id=user_id, allowed=allowed, text=typed.text, owner=typed.owner, due=typed.due
        )
        problem = checked.refusal
    elif not allowed:
        problem = service.not_allowed(target.department)
    if problem is not None or checked is None:
        assert problem is not None
        reply_once(refusal(problem, locale), private=True)
        return
    with unit_of_work(deps.engine, f"event:{event_id}") as session:
        countermeasure = service.log(
            session,
            checked.draft,
            logged_by=user_id,
            source="mention",
            channel_id=channel,
            thread_ts=thread_ts,
        )
    posted = announce(deps, client, countermeasure, target.kpi, target.department)
    if posted.error is not None:
        text = render.message("countermeasure.logged_unposted", locale, kpi=target.kpi, error=posted.error)
        tell_in(client, channel, user_id, text, reply_ts)


# -- /kpi countermeasure <kpi> <text…> [@owner] [due] ------------------------------------------------


@subcommand("countermeasure", "対策", "cm")
def countermeasure_command(request: CommandRequest) -> None:
    locale = request.locale()
    if not request.text:
        request.reply(render.message("countermeasure.error.usage", locale))
        return
    refused: str | None = None
    # Slack may deliver a command again (X-Slack-Retry-Num); its trigger_id is the same.
    with unit_of_work(request.deps.engine, f"command:{request.trigger_id}") as session:
        try:
            draft = service.from_command(
                session,
                text=request.text,
                user_id=request.user_id,
                is_admin=request.deps.admin_check(request.user_id),
            )
        except CountermeasureError as error:
            # Rendered before the rollback: the error may name KPIs loaded in this session. The
            # rollback takes the idempotency key too, so a retry is answered again.
            refused = refusal(error, locale)
            session.rollback()
        else:
            countermeasure = service.log(session, draft, logged_by=request.user_id, source="command")
    if refused is not None:
        request.reply(refused)
        return
    locale = request.locale(draft.department)
    posted = announce(request.deps, request.client, countermeasure, draft.kpi, draft.department)
    if posted.error is not None:
        error = None if posted.error == "no_channel" else posted.error
        request.reply(render.message("countermeasure.logged_unposted", locale, kpi=draft.kpi, error=error))
        return
    request.reply(
        render.message("countermeasure.logged", locale, kpi=draft.kpi, alert=draft.alert, link=posted.link)
    )


# -- /kpi countermeasures [department] ---------------------------------------------------------------


def department_for(request: CommandRequest, session: Session) -> tuple[Department | None, list[Department]]:
    """The department named in the command, else the channel's, else the user's own."""
    departments = [d for d in all_departments(session) if not d.is_division]
    if request.text:
        return find_department(departments, request.text), departments
    department = request.channel_department
    if department is None or department.is_division:
        department = own_department(session, departments, request.user_id)
    return department, departments


def ask_which_department(request: CommandRequest, departments: list[Department], command: str) -> None:
    """No department named or implied: say which ones there are."""
    request.reply(
        render.message(
            "countermeasures.which",
            request.locale(),
            text=request.text,
            departments=departments,
            command=command,
        )
    )


@subcommand("countermeasures", "対策一覧", "cms", queued=True)
def list_command(request: CommandRequest) -> None:
    with unit_of_work(request.deps.engine) as session:
        department, departments = department_for(request, session)
        items = [] if department is None else service.for_department(session, department, utcnow())
    if department is None:
        ask_which_department(request, departments, "countermeasures")
        return
    locale = request.locale(department)
    if not items:
        days = service.RECENTLY_CLOSED.days
        request.reply(render.message("countermeasures.none", locale, department=department, days=days))
        return
    listed = messages.list_message(department, items, service.today_for(department), locale)
    request.reply(listed.text, blocks=listed.blocks)


def register(app: App, deps: Deps) -> None:
    """Actions, views, shortcuts and events of countermeasures."""
    # Where the database fails, app.error answers in this surface's words.
    database = [database_error("countermeasure.error.database")]

    @app.action(messages.LOG_ACTION, middleware=database)
    def log_button(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        value = body["actions"][0].get("value") or ""
        alert_id = int(value) if value.isdigit() else None
        channel, user_id = (body.get("channel") or {}).get("id", ""), body["user"]["id"]
        open_form(
            deps,
            client,
            trigger_id=body["trigger_id"],
            user_id=user_id,
            find=lambda session: session.get(Alert, alert_id) if alert_id is not None else None,
            missing="countermeasure.alert_gone",
            answer=lambda text, thread_ts: tell_in(client, channel, user_id, text, thread_ts),
        )

    @app.shortcut(SHORTCUT_ID, middleware=database)
    def log_shortcut(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id", "")
        thread_ts = message.get("thread_ts") or message.get("ts") or ""
        open_form(
            deps,
            client,
            trigger_id=body["trigger_id"],
            user_id=body["user"]["id"],
            find=lambda session: service.alert_in_thread(session, channel, thread_ts),
            missing="countermeasure.not_in_alert_thread",
            # Through the shortcut's response_url: it works where kpibot is not a member.
            answer=lambda text, _thread_ts: tell(client, body, text),
            # The alert itself is not a countermeasure: only a reply's words prefill the form.
            prefill=message.get("text") if message.get("ts") != thread_ts else None,
        )

    @app.view(messages.CALLBACK_ID)
    def submit(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        submit_form(deps, ack, read_submission(body), client)

    @app.action(re.compile(f"^(?:{messages.DONE_ACTION}|{messages.DROPPED_ACTION})$"))
    def close_button(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        change_status(deps, client, body)

    @app.event("app_mention", middleware=database)
    def mention(body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        on_mention(deps, client, body, context.bot_user_id)
