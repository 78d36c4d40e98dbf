"""Reporting in Slack: `/kpi report <kpi> <value> [period] [note…]`, and with no arguments the
report modal (opened here, submitted to `submit_report`).

Submitting the modal: every field is checked first (per-field errors, nothing saved); only then
is the modal closed and everything saved in one transaction, and the user gets an ephemeral
confirmation in the channel the command ran in.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from slack_sdk.models.views import View
from sqlalchemy.exc import OperationalError

from bot import render
from bot.clock import today
from bot.database import reading
from bot.errors import DatabaseUnavailable
from bot.models import Cadence, Department, Source
from bot.periods import PeriodError, looks_like_period, parse_key, parse_period
from bot.reports import periods_open
from bot.reports.service import (
    CheckedReport,
    ReportError,
    check_note,
    check_reports,
    report,
    reportable_kpis,
    save_reports,
)
from handlers.commands import CommandRequest, subcommand
from handlers.deps import Deps, department_of_channel
from handlers.report import messages
from handlers.report.followup import after_reports
from handlers.report.messages import KPI_BLOCK_PREFIX, NOTE_ACTION, NOTE_BLOCK, VALUE_ACTION
from handlers.work import after_ack, answer_in, later, tell, unit_of_work

log = logging.getLogger(__name__)


# -- /kpi report -----------------------------------------------------------------------------------


@subcommand("report", "報告", "r")
def report_command(request: CommandRequest) -> None:
    if not request.text:
        open_report_modal(request)
        return
    if looks_like_period(request.text):  # `/kpi report 2026-10`: the form on that period
        open_report_modal(request, period_text=request.text)
        return
    # The save waits its turn on the worker's post-ack pool: a burst of reports queues there
    # instead of holding the listener threads that the next requests' acks need.
    after_ack(request.context, save_command, request)


def save_command(request: CommandRequest) -> None:
    """`/kpi report <kpi> <value> …` stored, confirmed and followed up (after the ack)."""
    # Slack may deliver a command again (X-Slack-Retry-Num); its trigger_id is the same.
    with unit_of_work(request.deps.engine, f"command:{request.trigger_id}") as session:
        try:
            reported = report(
                session,
                text=request.text,
                user_id=request.user_id,
                is_admin=request.deps.admin_check(request.user_id),
            )
        except ReportError as error:
            # Rendered before the rollback: the error may name KPIs loaded in this session.
            answer = messages.error_text(error, request.locale())
            session.rollback()
            request.reply(answer)
            return
    request.reply(messages.report_confirmation(reported, request.locale(reported.department)))
    later(request.context, after_reports, request.deps, request.client, [reported])


def open_report_modal(request: CommandRequest, period_text: str | None = None) -> None:
    """Open the form; the trigger_id dies ~3 s after the command, so nothing slow comes before views.open."""
    locale = request.locale()
    # An expired trigger_id (or any refusal) is told as modal.open_failed by app.error.
    answer_in(request.context, locale=locale, slack_error="modal.open_failed")
    period: str | None = None  # the form's default: the oldest period with something unreported
    if period_text is not None:
        period = period_key(period_text, today(request.deps.settings.timezone)) or ""
        if not period:
            request.reply(render.message("report.error.period_malformed", locale, text=period_text))
            return
    view = form_view(request.deps, request.user_id, request.channel_id, locale, period)
    if isinstance(view, str):
        request.reply(view)
        return
    request.client.views_open(trigger_id=request.trigger_id, view=view)


def period_key(text: str, day: dt.date) -> str | None:
    """A period typed alone (`2026-10`, `2026-W44`, `先月`, `last week`), as its key."""
    normalized = " ".join(text.strip().lower().split())
    for cadence in Cadence:
        try:
            return parse_period(normalized, cadence, day).key
        except PeriodError:
            continue
    return None


def form_view(deps: Deps, user_id: str, channel_id: str, locale: str, period: str | None) -> View | str:
    """The report form on `period` (a key, or messages.CURRENT), or the words saying why not.
    None opens it on the oldest finished period with something unreported, or on the periods in
    progress when everything is reported."""
    is_admin = deps.admin_check(user_id)
    # Only reads, before views.open: never waits for a save's write lock (bot.database.reading).
    with reading(deps.engine) as session:
        current = [
            item for item in reportable_kpis(session, user_id=user_id, is_admin=is_admin) if not item.derived
        ]
        choices = periods_open.finished_choices(session, current)
        if period is None:
            late = periods_open.first_unreported(choices)
            period = messages.CURRENT if late is None else late.key
        in_progress = {item.period.key for item in current}
        if period == messages.CURRENT:
            kpis = current
        elif period in in_progress:  # one period in progress (a Home tab's Report button)
            kpis = [item for item in current if item.period.key == period]
        elif period not in {choice.period.key for choice in choices}:
            return render.message("modal.period_closed", locale, period=period)
        else:
            kpis = periods_open.reportable_in(
                session, user_id=user_id, is_admin=is_admin, period=parse_key(period)
            )
    if not kpis:
        return render.message("modal.nothing_to_report", locale)
    return messages.report_view(kpis, channel_id, locale, choices=choices, period=period)


# -- the modal submitted ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    view_id: str
    user_id: str
    channel_id: str
    values: dict[str, str]  # KPI key → text typed (empty when left blank)
    periods: dict[int, str]  # KPI id → period key shown
    note: str | None
    first_block: str  # where an error about the whole form is shown
    locale: str | None = None  # the language the form was opened in
    foreign: bool = False  # its private_metadata is not what kpibot wrote


def read_submission(body: dict[str, Any]) -> Submission:
    view = body["view"]
    state: dict[str, Any] = view.get("state", {}).get("values", {})
    values = {
        block_id.removeprefix(KPI_BLOCK_PREFIX): (actions.get(VALUE_ACTION) or {}).get("value") or ""
        for block_id, actions in state.items()
        if block_id.startswith(KPI_BLOCK_PREFIX)
    }
    note = (state.get(NOTE_BLOCK, {}).get(NOTE_ACTION) or {}).get("value")
    metadata = messages.read_metadata(view.get("private_metadata"))
    channel_id, periods, locale = metadata or ("", {}, None)
    input_blocks = [block["block_id"] for block in view.get("blocks", []) if block.get("type") == "input"]
    first_block = next(iter(input_blocks or list(state) or [NOTE_BLOCK]))
    return Submission(
        view_id=view["id"],
        user_id=body["user"]["id"],
        channel_id=channel_id,
        values=values,
        periods=periods,
        note=note,
        first_block=first_block,
        locale=locale,
        foreign=metadata is None,
    )


def register(app: App, deps: Deps) -> None:
    @app.view(messages.CALLBACK_ID)
    def submit_report(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        submit(deps, ack, body, client, context)

    @app.action(messages.PERIOD_ACTION)
    def period_picked(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        ack()
        view = body.get("view") or {}
        user_id = body["user"]["id"]
        period = ((body.get("actions") or [{}])[0].get("selected_option") or {}).get(
            "value"
        ) or messages.CURRENT
        metadata = messages.read_metadata(view.get("private_metadata"))
        channel_id = metadata.channel if metadata else ""
        locale = deps.locale_for(user_id)
        answer_in(context, channel=channel_id or None, locale=locale, slack_error="modal.open_failed")
        new = form_view(deps, user_id, channel_id, locale, period)
        if isinstance(new, str):
            tell(client, body, new, channel=channel_id or None)
            return
        # The hash: a form changed meanwhile (typed into, picked again) is not overwritten blindly.
        client.views_update(view_id=view.get("id"), hash=view.get("hash"), view=new)


def submit(deps: Deps, ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
    form = read_submission(body)
    is_admin = deps.admin_check(form.user_id)  # asked only for KPIs the user neither owns nor heads
    department: Department | None = None
    note: str | None = None
    try:
        # Checking reads the database while the modal is still open: the answer is the ack, so a
        # database that is down shows as an error in the form, with everything typed still there.
        # Only reads, by unique keys: it never waits for another form's write lock.
        with reading(deps.engine) as session:
            department = department_of_channel(session, form.channel_id)
            checked, problems = check_reports(
                session, values=form.values, periods=form.periods, user_id=form.user_id, is_admin=is_admin
            )
        errors = {f"{KPI_BLOCK_PREFIX}{key}": problem for key, problem in problems.items()}
        try:
            note = check_note(form.note)
        except ReportError as problem:
            errors[NOTE_BLOCK] = problem
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable for the report modal of %s", form.user_id)
        _refuse(ack, {form.first_block: render.message("error.database", _form_locale(deps, form))})
        return
    except Exception:
        log.exception("checking the report modal of %s failed", form.user_id)
        _refuse(ack, {form.first_block: render.message("error.unexpected", _form_locale(deps, form))})
        return

    if department is None and checked:
        department = checked[0].department
    # Not the form kpibot opened (a forged or mangled private_metadata): which periods were shown
    # is unknown, so nothing is saved.
    if form.foreign or any(item.kpi.id not in form.periods for item in checked):
        locale = _form_locale(deps, form, department)
        _refuse(ack, {form.first_block: render.message("modal.foreign", locale)})
        return
    if errors:
        locale = _form_locale(deps, form, department)
        _refuse(ack, {block: messages.error_text(problem, locale) for block, problem in errors.items()})
        return

    ack()  # closes the modal; saving and confirming happen after, outside Slack's 3 s
    # What escapes from here is told by app.error, in the form's channel.
    answer_in(context, channel=form.channel_id)
    # On the worker's post-ack pool: a burst of forms queues there, not in the listener threads.
    after_ack(context, save_form, deps, client, body, context, form, checked, note, department)


def save_form(
    deps: Deps,
    client: WebClient,
    body: dict[str, Any],
    context: BoltContext,
    form: Submission,
    checked: list[CheckedReport],
    note: str | None,
    department: Department | None,
) -> None:
    """A checked form stored, confirmed and followed up (after the ack)."""
    locale = _form_locale(deps, form, department)
    answer_in(context, locale=locale)
    # A retried submission carries the same view id: save once, confirm once.
    with unit_of_work(deps.engine, f"view:{form.view_id}") as session:
        outcome = save_reports(session, checked, user_id=form.user_id, source=Source.MODAL, note=note)
    tell(client, body, messages.modal_confirmation(outcome, note, locale), channel=form.channel_id)
    later(context, after_reports, deps, client, outcome.saved)


def _form_locale(deps: Deps, form: Submission, department: Department | None = None) -> str:
    """The language the form was opened in, so a refusal (which is the ack itself) spends none of
    Slack's 3 s on a users.info call. Only a form without one (forged, or opened before forms
    kept it) asks."""
    return form.locale or deps.locale_for(form.user_id, department)


def _refuse(ack: Ack, errors: dict[str, str]) -> None:
    ack(response_action="errors", errors=errors)
