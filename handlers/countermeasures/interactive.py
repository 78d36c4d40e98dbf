"""Countermeasures in Slack: logged from alert threads, closed by button, followed up in the thread.

Four ways to log one, each confirmed in the alert's thread with its owner and due date:
- the "Log countermeasure" button on an alert (`alert_log_countermeasure`, value = the alert id)
  opens the form (`countermeasure_modal`);
- the message shortcut `log_countermeasure` on a reply in an alert's thread opens the same form,
  prefilled with the reply;
- `/kpi countermeasure <kpi> <text…> [@owner] [due]` (slash commands don't work in threads);
- `@kpibot 対策: …` / `@kpibot countermeasure: …` in an alert's thread.

The confirmation carries Done / Dropped buttons; follow-ups (the effect when the KPI's next actual
arrives, the reminder on the due date) are posted in the same thread, once each, through the ledger.
The rules live in bot/countermeasures/; every word in templates/<locale>/messages/countermeasures.yaml.
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
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    DatePickerElement,
    InputBlock,
    PlainTextInputElement,
    PlainTextObject,
    UserSelectElement,
)
from slack_sdk.models.views import View
from slack_sdk.webhook import WebhookClient
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from bot import outbox, render
from bot.clock import utcnow
from bot.countermeasures import service
from bot.countermeasures.service import CountermeasureError, Draft, Item
from bot.database import transaction
from bot.errors import DatabaseUnavailable
from bot.idempotency import first_time
from bot.models import Alert, Countermeasure, CountermeasureStatus, Department, Kpi, PostKind
from bot.outbox import Message, Outbox
from bot.reports.service import Reported
from bot.scorecard import all_departments
from handlers.blocks import context, fit_blocks, section, sections
from handlers.commands import CommandRequest, subcommand
from handlers.deps import Deps
from handlers.poster import SlackPoster
from handlers.status.interactive import find_department, own_department

log = logging.getLogger(__name__)

CALLBACK_ID = "countermeasure_modal"
SHORTCUT_ID = "log_countermeasure"
LOG_ACTION = "alert_log_countermeasure"  # the button on an alert (posted by handlers/alerts/interactive.py)
DONE_ACTION = "countermeasure_done"
DROPPED_ACTION = "countermeasure_dropped"
TEXT_BLOCK, OWNER_BLOCK, DUE_BLOCK, EFFECT_BLOCK = "text", "owner", "due", "effect"
VALUE = "value"
_CLOSING = {DONE_ACTION: CountermeasureStatus.DONE, DROPPED_ACTION: CountermeasureStatus.DROPPED}


# -- where a countermeasure goes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a form logs against: an alert (and its thread) and its KPI."""

    alert: Alert | None
    kpi: Kpi
    department: Department

    def metadata(self) -> str:
        alert = self.alert
        return json.dumps(
            {
                "alert": None if alert is None else alert.id,
                "kpi": self.kpi.id,
                "channel": None if alert is None else alert.channel_id,
                "thread_ts": None if alert is None else alert.thread_ts,
            },
            separators=(",", ":"),
        )


def target_of_alert(session: Session, alert: Alert | None) -> Target | None:
    if alert is None:
        return None
    found = service.kpi_and_department(session, alert.kpi_id)
    return None if found is None else Target(alert, *found)


# -- the form ----------------------------------------------------------------------------------------


def countermeasure_view(target: Target, locale: str, prefill: str | None = None) -> View:
    """The form. slack_sdk's View checks Slack's limits (title, lengths, metadata) when validated."""
    kpi = target.kpi
    blocks: list[Block] = [
        section(render.message("countermeasure.modal.intro", locale, kpi=kpi, alert=target.alert)),
        InputBlock(
            block_id=TEXT_BLOCK,
            label=PlainTextObject(text=render.message("countermeasure.modal.text_label", locale)),
            element=PlainTextInputElement(
                action_id=VALUE,
                multiline=True,
                max_length=service.TEXT_MAX_LENGTH,
                initial_value=(prefill or "").strip()[: service.TEXT_MAX_LENGTH] or None,
                placeholder=PlainTextObject(
                    text=render.message("countermeasure.modal.text_placeholder", locale)
                ),
            ),
        ),
        InputBlock(
            block_id=OWNER_BLOCK,
            label=PlainTextObject(text=render.message("countermeasure.modal.owner_label", locale)),
            element=UserSelectElement(action_id=VALUE, initial_user=kpi.owner_user_id),
        ),
        InputBlock(
            block_id=DUE_BLOCK,
            optional=True,
            label=PlainTextObject(text=render.message("countermeasure.modal.due_label", locale)),
            hint=PlainTextObject(text=render.message("countermeasure.modal.due_hint", locale)),
            element=DatePickerElement(action_id=VALUE),
        ),
        InputBlock(
            block_id=EFFECT_BLOCK,
            optional=True,
            label=PlainTextObject(text=render.message("countermeasure.modal.effect_label", locale)),
            element=PlainTextInputElement(
                action_id=VALUE,
                max_length=service.EFFECT_MAX_LENGTH,
                placeholder=PlainTextObject(
                    text=render.message("countermeasure.modal.effect_placeholder", locale)
                ),
            ),
        ),
    ]
    view = View(
        type="modal",
        callback_id=CALLBACK_ID,
        title=PlainTextObject(text=render.message("countermeasure.modal.title", locale)),
        submit=PlainTextObject(text=render.message("countermeasure.modal.submit", locale)),
        close=PlainTextObject(text=render.message("countermeasure.modal.close", locale)),
        private_metadata=target.metadata(),
        blocks=blocks,
    )
    view.validate_json()
    return view


def open_form(
    deps: Deps,
    client: WebClient,
    *,
    trigger_id: str,
    user_id: str,
    find: Callable[[Session], Alert | None],
    missing: str,
    tell: Callable[[str, str | None], None],
    prefill: str | None = None,
) -> None:
    """Open the form for the alert `find` returns (or `tell` the `missing` message). The trigger_id
    dies ~3 s after the click, so only a database read and the cached user lookup precede views.open."""
    try:
        with transaction(deps.engine) as session:
            target = target_of_alert(session, find(session))
            allowed = target is not None and service.may_log(
                session, target.department, user_id, lambda: deps.is_admin(user_id)
            )
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable opening the countermeasure form for %s", user_id)
        tell(render.message("countermeasure.error.database", deps.locale_for(user_id)), None)
        return
    if target is None:
        tell(render.message(missing, deps.locale_for(user_id)), None)
        return
    locale = deps.locale_for(user_id, target.department)
    thread_ts = None if target.alert is None else target.alert.thread_ts
    if not allowed:
        department = target.department
        text = render.message(
            "countermeasure.error.not_allowed", locale, department=department, head=department.head_user_id
        )
        tell(text, thread_ts)
        return
    try:
        client.views_open(trigger_id=trigger_id, view=countermeasure_view(target, locale, prefill))
    except SlackApiError as error:
        code = str(error.response.get("error", "unknown"))
        log.warning("views.open (countermeasure) failed for %s: %s", user_id, code)
        tell(render.message("countermeasure.modal.open_failed", locale, error=code), thread_ts)


@dataclass(frozen=True)
class Submission:
    view_id: str
    user_id: str
    alert_id: int | None
    kpi_id: int | None
    channel_id: str | None
    thread_ts: str | None
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
        channel_id=metadata.get("channel"),
        thread_ts=metadata.get("thread_ts"),
        text=field(TEXT_BLOCK, "value") or "",
        owner=field(OWNER_BLOCK, "selected_user"),
        due=field(DUE_BLOCK, "selected_date"),
        effect=field(EFFECT_BLOCK, "value"),
    )


def submit_form(deps: Deps, ack: Ack, form: Submission, client: WebClient) -> None:
    """Check everything while the form is open (per-field errors); only then close it, log the
    countermeasure once per view id and confirm it in the thread."""
    user_id = form.user_id
    try:
        with transaction(deps.engine) as session:
            alert = session.get(Alert, form.alert_id) if form.alert_id else None
            # The alert decides the KPI (the metadata's KPI only stands in when the alert is gone).
            kpi_id = alert.kpi_id if alert is not None else form.kpi_id
            found = service.kpi_and_department(session, kpi_id) if kpi_id else None
            if found is None:
                _refuse(
                    ack, {TEXT_BLOCK: render.message("countermeasure.alert_gone", deps.locale_for(user_id))}
                )
                return
            kpi, department = found
            locale = deps.locale_for(user_id, department)
            allowed = service.may_log(session, department, user_id, lambda: deps.is_admin(user_id))
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable checking the countermeasure form of %s", user_id)
        _refuse(ack, {TEXT_BLOCK: render.message("countermeasure.error.database", deps.locale_for(user_id))})
        return
    today = service.today_for(department)
    try:
        due = dt.date.fromisoformat(form.due) if form.due else None
    except ValueError:  # Slack's date picker sends ISO dates; anything else was not typed in it
        due = None
    problems = service.check_fields(text=form.text, due=due, expected_effect=form.effect, today=today)
    if form.due and due is None:
        problems["due"] = CountermeasureError("due_malformed", text=form.due)
    if not allowed:
        problems.setdefault(
            TEXT_BLOCK,
            CountermeasureError("not_allowed", department=department, head=department.head_user_id),
        )
    if problems:
        texts = {
            block: render.message(f"countermeasure.error.{problem.code}", locale, **problem.params)
            for block, problem in problems.items()
        }
        _refuse(ack, texts)
        return
    ack()  # closes the form; logging and confirming happen after, outside Slack's 3 s
    draft = Draft(kpi, department, alert, form.text, form.owner or user_id, due, form.effect)
    channel = alert.channel_id if alert is not None else department.channel_id
    thread_ts = alert.thread_ts if alert is not None else None
    try:
        with transaction(deps.engine) as session:
            # A retried submission carries the same view id: log once, confirm once.
            if not first_time(session, f"view:{form.view_id}"):
                return
            # Where it goes comes from the alert, never from the form's metadata (a client could forge it).
            countermeasure = service.log(session, draft, logged_by=user_id, source="modal")
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable logging the countermeasure of %s", user_id)
        if channel:
            ephemeral(
                client, channel, user_id, render.message("countermeasure.error.database", locale), thread_ts
            )
        return
    posted = announce(deps, client, countermeasure, kpi, department)
    if posted.error is not None and channel:
        text = render.message("countermeasure.logged_unposted", locale, kpi=kpi, error=posted.error)
        ephemeral(client, channel, user_id, text, thread_ts)


def _refuse(ack: Ack, errors: dict[str, str]) -> None:
    ack(response_action="errors", errors=errors)


# -- the confirmation and its buttons ----------------------------------------------------------------


def confirmation_message(
    countermeasure: Countermeasure, kpi: Kpi, locale: str, by: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The message in the thread: what, owner, due, expected effect, status; Done/Dropped while open."""
    cm = countermeasure
    text = render.message("countermeasure.fallback", locale, kpi=kpi, text=cm.text[:200])
    blocks: list[Block] = [
        *sections(render.message("countermeasure.confirmation", locale, cm=cm, kpi=kpi)),
        context(render.message("countermeasure.status_line", locale, cm=cm, kpi=kpi, by=by)),
    ]
    if cm.status in service.OPEN:
        value = str(cm.id)
        blocks.append(
            ActionsBlock(
                block_id=f"countermeasure:{cm.id}",
                elements=[
                    ButtonElement(
                        text=render.message("countermeasure.button.done", locale),
                        action_id=DONE_ACTION,
                        value=value,
                        style="primary",
                    ),
                    ButtonElement(
                        text=render.message("countermeasure.button.dropped", locale),
                        action_id=DROPPED_ACTION,
                        value=value,
                        confirm=ConfirmObject(
                            title=render.message("countermeasure.confirm_drop.title", locale),
                            text=render.message("countermeasure.confirm_drop.text", locale),
                            confirm=render.message("countermeasure.confirm_drop.confirm", locale),
                            deny=render.message("countermeasure.confirm_drop.deny", locale),
                        ),
                    ),
                ],
            )
        )
    return text, [block.to_dict() for block in blocks]


@dataclass(frozen=True)
class Announced:
    link: str | None
    error: str | None  # a Slack error code, or "no_channel"


def announce(
    deps: Deps, client: WebClient, countermeasure: Countermeasure, kpi: Kpi, department: Department
) -> Announced:
    """Confirm a logged countermeasure: in its alert's thread, else as a new message in the department's
    channel (which starts its thread); then store where it is and the link to it."""
    assert countermeasure.id is not None
    channel = countermeasure.channel_id or department.channel_id
    if not channel:
        return Announced(None, "no_channel")
    text, blocks = confirmation_message(countermeasure, kpi, department.locale)
    try:
        response = client.chat_postMessage(
            channel=channel, thread_ts=countermeasure.thread_ts, text=text, blocks=blocks
        )
    except SlackApiError as error:
        code = str(error.response.get("error") or error)
        log.error("confirming countermeasure %s in %s failed: %s", countermeasure.id, channel, code)
        return Announced(None, code)
    ts = str(response["ts"])
    link = permalink(client, channel, ts)
    thread_ts = countermeasure.thread_ts or ts
    try:
        with transaction(deps.engine) as session:
            service.set_thread(session, countermeasure.id, channel, thread_ts, link)
    except (DatabaseUnavailable, OperationalError):
        log.exception("storing the thread of countermeasure %s failed", countermeasure.id)
    countermeasure.channel_id, countermeasure.thread_ts, countermeasure.permalink = channel, thread_ts, link
    return Announced(link, None)


def change_status(deps: Deps, client: WebClient, body: dict[str, Any]) -> None:
    """Done / Dropped: one change however many clicks; the confirmation shows it, a late click is told."""
    action = body["actions"][0]
    status = _CLOSING[action["action_id"]]
    user_id = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
    message = body.get("message") or {}
    message_ts = (body.get("container") or {}).get("message_ts") or message.get("ts")
    thread_ts = message.get("thread_ts")
    try:
        countermeasure_id = int(action.get("value") or "")
    except ValueError:
        log.warning("countermeasure button with a bad value %r", action.get("value"))
        return
    try:
        with transaction(deps.engine) as session:
            countermeasure = session.get(Countermeasure, countermeasure_id)
            found = service.kpi_and_department(session, countermeasure.kpi_id) if countermeasure else None
            allowed = (
                countermeasure is not None
                and found is not None
                and service.may_change(
                    session, countermeasure, found[1], user_id, lambda: deps.is_admin(user_id)
                )
            )
        if countermeasure is None or found is None:
            ephemeral(
                client,
                channel,
                user_id,
                render.message("countermeasure.gone", deps.locale_for(user_id)),
                thread_ts,
            )
            return
        kpi, department = found
        locale = deps.locale_for(user_id, department)
        if not allowed:
            text = render.message("countermeasure.change_not_allowed", locale, department=department)
            ephemeral(client, channel, user_id, text, thread_ts)
            return
        with transaction(deps.engine) as session:
            change = service.set_status(session, countermeasure_id, status, user_id=user_id, source="button")
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable changing countermeasure %s", countermeasure_id)
        ephemeral(
            client, channel, user_id, render.message("error.database", deps.locale_for(user_id)), thread_ts
        )
        return
    if change is None:  # deleted since it was read
        ephemeral(client, channel, user_id, render.message("countermeasure.gone", locale), thread_ts)
        return
    if not change.changed:
        text = render.message(
            "countermeasure.already", locale, status=change.countermeasure.status.value, by=change.by
        )
        ephemeral(client, channel, user_id, text, thread_ts)
        return
    text, blocks = confirmation_message(change.countermeasure, kpi, department.locale, by=user_id)
    try:
        client.chat_update(channel=channel, ts=message_ts, text=text, blocks=blocks)
    except SlackApiError as error:
        log.error(
            "updating countermeasure %s in %s failed: %s",
            countermeasure_id,
            channel,
            error.response.get("error"),
        )


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
    try:
        with transaction(deps.engine) as session:
            target = target_of_alert(
                session, service.alert_in_thread(session, channel, thread_ts) if thread_ts else None
            )
            allowed = target is not None and service.may_log(
                session, target.department, user_id, lambda: deps.is_admin(user_id)
            )
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable for the mention %s", event_id)
        return
    department = None if target is None else target.department
    locale = deps.locale_for(user_id, department)
    public_locale = department.locale if department is not None else locale

    def reply_once(text: str, *, private: bool) -> None:
        with transaction(deps.engine) as session:
            if not first_time(session, f"event:{event_id}"):
                return
        if private:
            ephemeral(client, channel, user_id, text, reply_ts)
        else:
            post(client, channel, text, reply_ts)

    if problem is None and typed is None:
        reply_once(render.message("countermeasure.mention.hint", public_locale), private=False)
        return
    if target is None:
        reply_once(render.message("countermeasure.mention.not_in_alert_thread", public_locale), private=False)
        return
    assert department is not None
    if not allowed:
        problem = CountermeasureError("not_allowed", department=department, head=department.head_user_id)
    due = None
    if problem is None and typed is not None:
        today = service.today_for(department)
        try:
            due = service.parse_due(typed.due, today) if typed.due else None
            problems = service.check_fields(text=typed.text, due=due, expected_effect=None, today=today)
            problem = next(iter(problems.values()), None)
        except CountermeasureError as error:
            problem = error
    if problem is not None or typed is None:
        assert problem is not None
        reply_once(
            render.message(f"countermeasure.error.{problem.code}", locale, **problem.params), private=True
        )
        return
    draft = Draft(target.kpi, department, target.alert, typed.text, typed.owner or user_id, due)
    try:
        with transaction(deps.engine) as session:
            if not first_time(session, f"event:{event_id}"):
                return
            countermeasure = service.log(session, draft, logged_by=user_id, source="mention")
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable logging the countermeasure of mention %s", event_id)
        ephemeral(client, channel, user_id, render.message("countermeasure.error.database", locale), reply_ts)
        return
    posted = announce(deps, client, countermeasure, target.kpi, department)
    if posted.error is not None:
        text = render.message("countermeasure.logged_unposted", locale, kpi=target.kpi, error=posted.error)
        ephemeral(client, channel, user_id, text, reply_ts)


# -- /kpi countermeasure <kpi> <text…> [@owner] [due] ------------------------------------------------


@subcommand("countermeasure", "対策", "cm")
def countermeasure_command(request: CommandRequest) -> None:
    locale = request.locale()
    if not request.text:
        request.reply(render.message("countermeasure.error.usage", locale))
        return
    with transaction(request.deps.engine) as session:
        # Slack may deliver a command again (X-Slack-Retry-Num); its trigger_id is the same.
        if not first_time(session, f"command:{request.trigger_id}"):
            return
        try:
            draft = service.from_command(
                session,
                text=request.text,
                user_id=request.user_id,
                is_admin=lambda: request.deps.is_admin(request.user_id),
            )
        except CountermeasureError as error:
            # Rendered before the rollback: the error may name KPIs loaded in this session.
            answer = render.message(f"countermeasure.error.{error.code}", locale, **error.params)
            session.rollback()
            request.reply(answer)
            return
        countermeasure = service.log(session, draft, logged_by=request.user_id, source="command")
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


@subcommand("countermeasures", "対策一覧", "cms")
def list_command(request: CommandRequest) -> None:
    with transaction(request.deps.engine) as session:
        department, departments = department_for(request, session)
        items = [] if department is None else service.for_department(session, department, utcnow())
    if department is None:
        ask_which_department(request, departments, "countermeasures")
        return
    locale = request.locale(department)
    days = service.RECENTLY_CLOSED.days
    if not items:
        request.reply(render.message("countermeasures.none", locale, department=department, days=days))
        return
    today = service.today_for(department)
    headline = render.message("countermeasures.headline", locale, department=department, days=days)
    groups = []
    for status, group in service.status_order(items):
        lines = [render.message("countermeasures.group", locale, status=status.value, count=len(group))]
        lines += [_row(item, today, locale) for item in group]
        groups.append((sections("\n".join(lines)), len(group)))
    footer = context(render.message("countermeasures.footer", locale))

    def overflow(left: list[int]) -> Block:
        return context(render.message("countermeasures.more", locale, count=sum(left)))

    request.reply(headline, blocks=fit_blocks([section(headline)], groups, [footer], overflow))


def _row(item: Item, today: dt.date, locale: str) -> str:
    return render.message(
        "countermeasures.row", locale, cm=item.countermeasure, kpi=item.kpi, overdue=item.overdue(today)
    )


# -- follow-up ---------------------------------------------------------------------------------------


def on_reported(deps: Deps, client: WebClient, reported: Reported) -> None:
    """Post the measured effect of the KPI's countermeasures in their threads: before → after,
    % of target; once per countermeasure and period."""
    kpi, department, period = reported.kpi, reported.department, reported.period
    assert department.id is not None
    with transaction(deps.engine) as session:
        effects = service.effects(
            session,
            kpi=kpi,
            period=period,
            value=reported.recorded.actual.value,
            kpi_score=reported.score,
            is_correction=reported.recorded.is_correction,
        )
    locale = department.locale
    posts = Outbox(deps.engine, SlackPoster(client))
    for effect in effects:
        cm = effect.countermeasure
        if not cm.channel_id or not cm.thread_ts:
            continue
        text = render.message(
            "countermeasure.effect",
            locale,
            cm=cm,
            kpi=kpi,
            before_period=effect.before_period,
            before=effect.before,
            before_pct=effect.before_pct,
            period=effect.period,
            after=effect.after,
            score=effect.score,
            change=effect.change,
        )
        key = outbox.Key(department.id, PostKind.FOLLOWUP, period.key, f"effect:{cm.id}:{period.key}")
        try:
            posts.send(key, cm.channel_id, [Message(text)], thread_ts=cm.thread_ts)
        except Exception:
            log.exception("effect of countermeasure %s for %s failed", cm.id, period.key)


def remind_due(engine: Engine, client: WebClient, now: dt.datetime) -> int:
    """Remind each open countermeasure's owner in its thread on its due date (from REMIND_AT in its
    department's time zone), once; returns how many were posted. One failure never stops the rest."""
    with transaction(engine) as session:
        items = service.reminders_due(session, now)
    posts = Outbox(engine, SlackPoster(client))
    sent = 0
    for item in items:
        cm, department = item.countermeasure, item.department
        if not cm.channel_id or not cm.thread_ts or cm.due_date is None or department.id is None:
            continue
        locale = department.locale
        text = render.message(
            "countermeasure.due_today", locale, cm=cm, kpi=item.kpi, owner=cm.owner_user_id or cm.logged_by
        )
        key = outbox.Key(department.id, PostKind.FOLLOWUP, cm.due_date.isoformat(), f"due:{cm.id}")
        try:
            posted = posts.send(key, cm.channel_id, [Message(text)], thread_ts=cm.thread_ts)
        except Exception:
            log.exception("due-date reminder of countermeasure %s failed", cm.id)
            continue
        sent += posted.status == "posted"
    return sent


# -- Slack plumbing ----------------------------------------------------------------------------------


def ephemeral(client: WebClient, channel: str, user_id: str, text: str, thread_ts: str | None = None) -> None:
    """An answer only `user_id` sees; a failure is logged, never raised."""
    try:
        client.chat_postEphemeral(channel=channel, user=user_id, text=text, thread_ts=thread_ts)
    except SlackApiError as error:
        log.error("ephemeral answer to %s in %s failed: %s", user_id, channel, error.response.get("error"))


def post(client: WebClient, channel: str, text: str, thread_ts: str | None = None) -> None:
    try:
        client.chat_postMessage(channel=channel, text=text, thread_ts=thread_ts)
    except SlackApiError as error:
        log.error("reply in %s failed: %s", channel, error.response.get("error"))


def permalink(client: WebClient, channel: str | None, ts: str | None) -> str | None:
    if not channel or not ts:
        return None
    try:
        return str(client.chat_getPermalink(channel=channel, message_ts=ts)["permalink"])
    except SlackApiError as error:
        log.warning("chat.getPermalink for %s %s failed: %s", channel, ts, error.response.get("error"))
        return None


def register(app: App, deps: Deps) -> None:
    """Actions, views, shortcuts and events of countermeasures."""

    @app.action(LOG_ACTION)
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
            tell=lambda text, thread_ts: ephemeral(client, channel, user_id, text, thread_ts),
        )

    @app.shortcut(SHORTCUT_ID)
    def log_shortcut(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        message = body.get("message") or {}
        channel, user_id = (body.get("channel") or {}).get("id", ""), body["user"]["id"]
        thread_ts = message.get("thread_ts") or message.get("ts") or ""
        response_url = body.get("response_url")
        open_form(
            deps,
            client,
            trigger_id=body["trigger_id"],
            user_id=user_id,
            find=lambda session: service.alert_in_thread(session, channel, thread_ts),
            missing="countermeasure.not_in_alert_thread",
            tell=lambda text, _thread_ts: respond_ephemeral(client, response_url, channel, user_id, text),
            # The alert itself is not a countermeasure: only a reply's words prefill the form.
            prefill=message.get("text") if message.get("ts") != thread_ts else None,
        )

    @app.view(CALLBACK_ID)
    def submit(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        submit_form(deps, ack, read_submission(body), client)

    @app.action(re.compile(f"^(?:{DONE_ACTION}|{DROPPED_ACTION})$"))
    def close_button(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        change_status(deps, client, body)

    @app.event("app_mention")
    def mention(body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        on_mention(deps, client, body, context.bot_user_id)


def respond_ephemeral(
    client: WebClient, response_url: str | None, channel: str, user_id: str, text: str
) -> None:
    """Through the shortcut's response_url (it works where kpibot is not a member), else
    chat.postEphemeral; a failure is logged, never raised."""
    if response_url:
        try:
            response = WebhookClient(response_url, timeout=10).send(text=text, response_type="ephemeral")
            if response.status_code == 200:
                return
            log.warning("response_url answer to %s failed: HTTP %s", user_id, response.status_code)
        except Exception:
            log.exception("response_url answer to %s failed", user_id)
    ephemeral(client, channel, user_id, text)
