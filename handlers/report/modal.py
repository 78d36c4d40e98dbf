"""The report modal: `/kpi report` with no arguments opens a form with every KPI the user may report.

Opening: `views.open` with one input per KPI for its current period, prefilled with the live value.
Submitting: every field is checked first (per-field errors, nothing saved); only then is the modal
closed and everything saved in one transaction, and the user gets an ephemeral confirmation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import Block, InputBlock, PlainTextInputElement, PlainTextObject
from slack_sdk.models.views import View
from sqlalchemy.exc import OperationalError

from bot import render
from bot.database import transaction
from bot.errors import DatabaseUnavailable
from bot.idempotency import first_time
from bot.models import Department, Source
from bot.reports.service import (
    NOTE_MAX_LENGTH,
    ReportableKpi,
    ReportError,
    SavedReports,
    check_note,
    check_reports,
    plain_number,
    reportable_kpis,
    save_reports,
)
from handlers.blocks import MODAL_MAX_BLOCKS, context, section
from handlers.commands import CommandRequest
from handlers.deps import Deps, department_of_channel
from handlers.report.followup import after_reports

log = logging.getLogger(__name__)

CALLBACK_ID = "report_modal"
KPI_BLOCK_PREFIX = "kpi:"
VALUE_ACTION = "value"
NOTE_BLOCK = NOTE_ACTION = "note"
# The intro and the note always take a block; the "N more" notice one more when needed.
_FIXED_BLOCKS = 2


# -- opening ---------------------------------------------------------------------------------------


def open_report_modal(request: CommandRequest) -> None:
    """Open the form; the trigger_id dies ~3 s after the command, so nothing slow comes before views.open."""
    locale = request.locale()
    with transaction(request.deps.engine) as session:
        reportable = reportable_kpis(
            session, user_id=request.user_id, is_admin=lambda: request.deps.is_admin(request.user_id)
        )
    kpis = [item for item in reportable if not item.derived]  # calculated, never typed in
    if not kpis:
        request.reply(render.message("modal.nothing_to_report", locale))
        return
    try:
        request.client.views_open(
            trigger_id=request.trigger_id, view=report_view(kpis, request.channel_id, locale)
        )
    except SlackApiError as error:
        code = error.response.get("error", "unknown")
        log.warning("views.open failed for %s: %s", request.user_id, code)
        request.reply(render.message("modal.open_failed", locale, error=code))


def report_view(kpis: Sequence[ReportableKpi], channel_id: str, locale: str) -> View:
    """The form. slack_sdk's View validates Slack's limits (title, blocks, metadata) when serialized."""
    room = MODAL_MAX_BLOCKS - _FIXED_BLOCKS
    shown = list(kpis) if len(kpis) <= room else list(kpis[: room - 1])
    blocks: list[Block] = [section(render.message("modal.intro", locale))]
    blocks += [_kpi_input(item, locale) for item in shown]
    if len(shown) < len(kpis):
        blocks.append(context(render.message("modal.more_kpis", locale, count=len(kpis) - len(shown))))
    blocks.append(
        InputBlock(
            block_id=NOTE_BLOCK,
            optional=True,
            label=PlainTextObject(text=render.message("modal.note_label", locale)),
            hint=PlainTextObject(text=render.message("modal.note_hint", locale)),
            element=PlainTextInputElement(action_id=NOTE_ACTION, multiline=True, max_length=NOTE_MAX_LENGTH),
        )
    )
    view = View(
        type="modal",
        callback_id=CALLBACK_ID,
        title=PlainTextObject(text=render.message("modal.title", locale)),
        submit=PlainTextObject(text=render.message("modal.submit", locale)),
        close=PlainTextObject(text=render.message("modal.close", locale)),
        private_metadata=_metadata(channel_id, shown),
        blocks=blocks,
    )
    view.validate_json()
    return view


def _kpi_input(item: ReportableKpi, locale: str) -> InputBlock:
    kpi = item.kpi
    hint = render.message(
        "modal.hint",
        locale,
        period=item.period.key,
        target=render.target_text(item.target, kpi.unit.value, locale),
        unit=kpi.unit.value,
    )
    return InputBlock(
        block_id=f"{KPI_BLOCK_PREFIX}{kpi.key}",
        optional=True,
        label=PlainTextObject(text=kpi.name(locale)),
        hint=PlainTextObject(text=hint),
        element=PlainTextInputElement(
            action_id=VALUE_ACTION,
            initial_value=None if item.value is None else plain_number(item.value),
            placeholder=PlainTextObject(text=render.message("modal.placeholder", locale)),
        ),
    )


def _metadata(channel_id: str, shown: Sequence[ReportableKpi]) -> str:
    # KPI ids grouped by the period shown, so a submission just after midnight (or a month end)
    # saves into the period the user saw. Ids, not keys: 97 keys of up to 64 characters would
    # not fit in Slack's 3,000 characters; ids under a handful of period keys always do.
    periods: dict[str, list[int]] = {}
    for item in shown:
        assert item.kpi.id is not None
        periods.setdefault(item.period.key, []).append(item.kpi.id)
    return json.dumps({"channel": channel_id, "periods": periods}, separators=(",", ":"))


# -- submitting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    view_id: str
    user_id: str
    channel_id: str
    values: dict[str, str]  # KPI key → text typed (empty when left blank)
    periods: dict[int, str]  # KPI id → period key shown
    note: str | None
    first_block: str  # where an error about the whole form is shown


def read_submission(body: dict[str, Any]) -> Submission:
    view = body["view"]
    state: dict[str, Any] = view.get("state", {}).get("values", {})
    values = {
        block_id.removeprefix(KPI_BLOCK_PREFIX): (actions.get(VALUE_ACTION) or {}).get("value") or ""
        for block_id, actions in state.items()
        if block_id.startswith(KPI_BLOCK_PREFIX)
    }
    note = (state.get(NOTE_BLOCK, {}).get(NOTE_ACTION) or {}).get("value")
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        metadata = {}
    periods = {int(kpi_id): key for key, ids in metadata.get("periods", {}).items() for kpi_id in ids}
    input_blocks = [block["block_id"] for block in view.get("blocks", []) if block.get("type") == "input"]
    first_block = next(iter(input_blocks or list(state) or [NOTE_BLOCK]))
    return Submission(
        view_id=view["id"],
        user_id=body["user"]["id"],
        channel_id=metadata.get("channel") or "",
        values=values,
        periods=periods,
        note=note,
        first_block=first_block,
    )


def register(app: App, deps: Deps) -> None:
    @app.view(CALLBACK_ID)
    def submit_report(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        submit(deps, ack, read_submission(body), client)


def submit(deps: Deps, ack: Ack, form: Submission, client: WebClient) -> None:
    def is_admin() -> bool:  # asked only for KPIs the user neither owns nor heads
        return deps.is_admin(form.user_id)

    department: Department | None = None
    note: str | None = None
    try:
        # Checking reads the database while the modal is still open: a database that is down
        # shows as an error in the form, with everything the user typed still there.
        with transaction(deps.engine) as session:
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
        _refuse(ack, {form.first_block: render.message("error.database", deps.locale_for(form.user_id))})
        return
    except Exception:
        log.exception("checking the report modal of %s failed", form.user_id)
        _refuse(ack, {form.first_block: render.message("error.unexpected", deps.locale_for(form.user_id))})
        return

    if department is None and checked:
        department = checked[0].department
    if errors:
        locale = deps.locale_for(form.user_id, department)
        texts = {
            block: render.message(f"report.error.{problem.code}", locale, **problem.params)
            for block, problem in errors.items()
        }
        _refuse(ack, texts)
        return

    ack()  # closes the modal; saving and confirming happen after, outside Slack's 3 s
    locale = deps.locale_for(form.user_id, department)
    try:
        with transaction(deps.engine) as session:
            # A retried submission carries the same view id: save once, confirm once.
            if not first_time(session, f"view:{form.view_id}"):
                return
            outcome = save_reports(session, checked, user_id=form.user_id, source=Source.MODAL, note=note)
    except (DatabaseUnavailable, OperationalError):
        log.exception("database unavailable saving the report modal of %s", form.user_id)
        _tell(client, form, render.message("error.database", locale))
        return
    _tell(client, form, confirmation(outcome, note, locale))
    after_reports(deps, client, outcome.saved)


def confirmation(outcome: SavedReports, note: str | None, locale: str) -> str:
    return render.message("modal.saved", locale, saved=outcome.saved, unchanged=outcome.unchanged, note=note)


def _refuse(ack: Ack, errors: dict[str, str]) -> None:
    ack(response_action="errors", errors=errors)


def _tell(client: WebClient, form: Submission, text: str) -> None:
    """An ephemeral answer in the channel the command ran in; a failure is logged, never raised."""
    try:
        client.chat_postEphemeral(channel=form.channel_id, user=form.user_id, text=text)
    except SlackApiError as error:
        log.error("confirming the report modal to %s failed: %s", form.user_id, error.response.get("error"))
