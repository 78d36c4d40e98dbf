"""Editing the plan in Slack, for department heads (their department) and admins (all):

- `/kpi target <kpi> <value|range> [period | from period]`: a KPI's target, confirmed before → after;
- `/kpi edit <kpi>`: the form for its names, owner and thresholds (`kpi_edit_modal`); two people
  saving the same KPI at once: the first wins, the second is told who changed it (its version);
- `/kpi department <department> channel #channel | head @user` (admins).

Every change is an AuditEvent (bot/plan/edit.py); alerts follow at once (shown in Slack here, after
the change commits) and so do the Home tabs that list the KPI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from sqlmodel import Session

from bot import render
from bot.departments import find_department, own_department
from bot.models import Department, Kpi
from bot.plan import edit
from bot.plan.edit import KpiFields, NewKpi, PlanEditError
from bot.scorecard import all_departments
from handlers.alerts.interactive import sync_alerts
from handlers.commands import CommandRequest, subcommand
from handlers.deps import Deps
from handlers.plan import messages
from handlers.work import answer_in, tell, unit_of_work

log = logging.getLogger(__name__)


def _after_change(request_deps: Deps, client: WebClient, kpi_id: int | None, user_id: str) -> None:
    """Alerts shown as they now stand, and the Home tabs listing the KPI; never raises."""
    if kpi_id is None:
        return
    try:
        sync_alerts(request_deps, client, kpi_ids=[kpi_id])
    except Exception:
        log.exception("showing the alerts of KPI %s after a plan change failed", kpi_id)
    request_deps.changed.about_kpis(request_deps.engine, [kpi_id], user_id)


def _kpi_command(request: CommandRequest, change: Callable[..., Any]) -> Any | None:
    """One change to a KPI from a command (`edit.set_target`, `edit.retire_kpi`): done once however
    often Slack delivers the command, or refused in words with nothing written (None)."""
    with unit_of_work(request.deps.engine, f"command:{request.trigger_id}") as session:
        try:
            return change(
                session,
                text=request.text,
                user_id=request.user_id,
                is_admin=request.deps.admin_check(request.user_id),
            )
        except PlanEditError as error:
            answer = messages.error_text(error, request.locale())
            session.rollback()
            request.reply(answer)
            return None


@subcommand("target", "目標")
def target_command(request: CommandRequest) -> None:
    change = _kpi_command(request, edit.set_target)
    if change is None:
        return
    request.reply(messages.target_confirmation(change, request.locale(change.department)))
    _after_change(request.deps, request.client, change.kpi.id, request.user_id)


def _open_kpi_form(
    request: CommandRequest, usage: str, form: Callable[[Session, Kpi, Department], Any]
) -> None:
    """`/kpi edit <kpi>`, `/kpi targets <kpi>`: the form `form` builds for a KPI the user may edit
    (inside the read, which it may need), or the usage or the refusal in words."""
    locale = request.locale()
    if not request.text:
        request.reply(render.message(usage, locale))
        return
    with unit_of_work(request.deps.engine) as session:
        try:
            kpi, department = edit.find_editable_kpi(
                session, request.text, request.user_id, request.deps.admin_check(request.user_id)
            )
        except PlanEditError as error:
            request.reply(messages.error_text(error, locale))
            return
        view = form(session, kpi, department)
    answer_in(request.context, locale=locale, slack_error="plan_edit.form.open_failed")
    request.client.views_open(trigger_id=request.trigger_id, view=view)


@subcommand("edit", "編集")
def edit_command(request: CommandRequest) -> None:
    locale = request.locale()
    _open_kpi_form(
        request,
        "plan_edit.error.edit_usage",
        lambda _session, kpi, department: messages.kpi_form(kpi, department, request.channel_id, locale),
    )


@subcommand("targets", "目標一覧")
def targets_command(request: CommandRequest) -> None:
    """`/kpi targets <kpi>`: the form with the KPI's target period by period."""
    locale = request.locale()

    def form(session: Session, kpi: Kpi, department: Department) -> Any:
        periods = edit.target_periods(kpi, department)
        now = edit.current_targets(session, kpi, periods)
        return messages.targets_form(kpi, department, periods, now, request.channel_id, locale)

    _open_kpi_form(request, "plan_edit.error.targets_usage", form)


def _accepted(
    ack: Ack, context: BoltContext, metadata: dict[str, Any], locale: str, errors: dict[str, str]
) -> bool:
    """A submitted plan form: its errors shown beside their fields (False), or the form closed and
    what follows answered in the channel it was opened from (True)."""
    if errors:
        ack(response_action="errors", errors=errors)
        return False
    ack()
    answer_in(context, channel=metadata.get("channel") or None, locale=locale)
    return True


def submit_targets(
    deps: Deps, ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext
) -> None:
    user_id = body["user"]["id"]
    metadata, value = _state(body)
    locale = deps.locale_for(user_id)
    blocks = (body["view"].get("state") or {}).get("values") or {}
    typed = {
        block.removeprefix(messages.PERIOD_PREFIX): value(block) or ""
        for block in blocks
        if block.startswith(messages.PERIOD_PREFIX)
    }
    with unit_of_work(deps.engine) as session:
        found = edit.kpi_and_department(session, int(metadata.get("kpi") or 0))
        if found is None:
            first = next(iter(blocks), "")
            ack(
                response_action="errors",
                errors={first: messages.error_text(PlanEditError("kpi_gone"), locale)},
            )
            return
        kpi, _ = found
        checked, problems = edit.check_period_targets(kpi, typed)
    errors = {f"{messages.PERIOD_PREFIX}{key}": messages.error_text(p, locale) for key, p in problems.items()}
    if not _accepted(ack, context, metadata, locale, errors):
        return
    channel = metadata.get("channel") or None
    try:
        with unit_of_work(deps.engine, f"view:{body['view']['id']}") as session:
            changes = edit.set_period_targets(
                session,
                kpi_id=kpi.id or 0,
                targets=checked,
                user_id=user_id,
                is_admin=deps.admin_check(user_id),
            )
    except PlanEditError as error:
        tell(client, body, messages.error_text(error, locale), channel=channel)
        return
    tell(client, body, messages.targets_confirmation(changes, kpi, locale), channel=channel)
    if changes:
        _after_change(deps, client, kpi.id, user_id)


@subcommand("retire", "廃止")
def retire_command(request: CommandRequest) -> None:
    retired = _kpi_command(request, edit.retire_kpi)
    if retired is None:
        return
    request.reply(render.message("plan_edit.retired", request.locale(retired.department), retired=retired))
    _after_change(request.deps, request.client, retired.kpi.id, request.user_id)


@subcommand("add", "追加")
def add_command(request: CommandRequest) -> None:
    """`/kpi add [department]`: the form for a new KPI (the department of the channel, or the one
    the user heads, when none is named)."""
    locale = request.locale()
    with unit_of_work(request.deps.engine) as session:
        departments = [d for d in all_departments(session) if not d.is_division]
        if request.text:
            department = find_department(departments, request.text)
        else:
            department = request.channel_department or own_department(session, departments, request.user_id)
        if department is None or department.is_division:
            request.reply(render.message("plan_edit.error.add_usage", locale))
            return
        try:
            edit.check_allowed(department, request.user_id, request.deps.admin_check(request.user_id))
        except PlanEditError as error:
            request.reply(messages.error_text(error, locale))
            return
    answer_in(request.context, locale=locale, slack_error="plan_edit.form.open_failed")
    request.client.views_open(
        trigger_id=request.trigger_id, view=messages.add_form(department, request.channel_id, locale)
    )


@subcommand("department", "部門")
def department_command(request: CommandRequest) -> None:
    locale = request.locale()
    words = request.text.split()
    if len(words) < 3:
        request.reply(render.message("plan_edit.error.department_usage", locale))
        return
    name, what, value = " ".join(words[:-2]), words[-2].lower(), words[-1]
    what = {"チャンネル": "channel", "責任者": "head"}.get(what, what)
    with unit_of_work(request.deps.engine, f"command:{request.trigger_id}") as session:
        department = find_department(all_departments(session), name)
        try:
            if department is None:
                raise PlanEditError("department_unknown", text=name)
            change = edit.set_department(
                session,
                department=department,
                what=what,
                value=value,
                user_id=request.user_id,
                is_admin=request.deps.is_admin(request.user_id),
            )
        except PlanEditError as error:
            answer = messages.error_text(error, locale)
            session.rollback()
            request.reply(answer)
            return
    request.reply(messages.department_confirmation(change, locale))
    request.deps.changed([request.user_id, change.before if what == "head" else None, change.after])


def read_form(body: dict[str, Any]) -> tuple[dict[str, Any], KpiFields]:
    metadata, value = _state(body)
    fields = KpiFields(
        name_ja=value("name_ja") or "",
        name_en=value("name_en") or "",
        owner_user_id=value("owner_user_id"),
        amber=value("amber_pct") or "",
        red=value("red_pct") or "",
    )
    return metadata, fields


def _state(body: dict[str, Any]) -> tuple[dict[str, Any], Callable[[str], str | None]]:
    """The view's private metadata, and the value of an input by block id (text, user or choice)."""
    view = body["view"]
    state: dict[str, Any] = view.get("state", {}).get("values", {})

    def value(block: str) -> str | None:
        element = (state.get(block) or {}).get(messages.VALUE) or {}
        chosen = (element.get("selected_option") or {}).get("value")
        return element.get("selected_user") or chosen or element.get("value")

    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        metadata = {}
    return metadata, value


def submit_new_kpi(
    deps: Deps, ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext
) -> None:
    user_id = body["user"]["id"]
    metadata, value = _state(body)
    locale = deps.locale_for(user_id)
    fields = NewKpi(
        key=value("key") or "",
        name_ja=value("name_ja") or "",
        name_en=value("name_en") or "",
        owner_user_id=value("owner_user_id"),
        unit=value("unit") or "",
        direction=value("direction") or "",
        cadence=value("cadence") or "",
        kind=value("kind") or "",
        target=value("target") or "",
    )
    with unit_of_work(deps.engine) as session:
        kpi, target, problems = edit.check_new_kpi(session, fields)
    errors = {b: messages.error_text(p, locale) for b, p in problems.items()}
    if not _accepted(ack, context, metadata, locale, errors) or kpi is None:
        return
    channel = metadata.get("channel") or None
    try:
        with unit_of_work(deps.engine, f"view:{body['view']['id']}") as session:
            kpi, department = edit.add_kpi(
                session,
                department_id=int(metadata.get("department") or 0),
                kpi=kpi,
                target=target,
                user_id=user_id,
                is_admin=deps.admin_check(user_id),
            )
    except PlanEditError as error:
        tell(client, body, messages.error_text(error, locale), channel=channel)
        return
    tell(client, body, messages.added_confirmation(kpi, department, target, locale), channel=channel)
    deps.changed.about_kpis(deps.engine, [kpi.id or 0], user_id)


def register(app: App, deps: Deps) -> None:
    @app.view(messages.TARGETS_CALLBACK_ID)
    def submit_targets_form(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        submit_targets(deps, ack, body, client, context)

    @app.view(messages.ADD_CALLBACK_ID)
    def submit_add(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        submit_new_kpi(deps, ack, body, client, context)

    @app.view(messages.CALLBACK_ID)
    def submit(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        user_id = body["user"]["id"]
        metadata, fields = read_form(body)
        locale = deps.locale_for(user_id)
        is_admin = deps.admin_check(user_id)
        # Checked while the form is open: problems show beside their field, nothing is saved.
        with unit_of_work(deps.engine) as session:
            found = edit.kpi_and_department(session, int(metadata.get("kpi") or 0))
            if found is None:
                ack(
                    response_action="errors",
                    errors={"name_ja": messages.error_text(PlanEditError("kpi_gone"), locale)},
                )
                return
            kpi, department = found
            values, problems = edit.check_kpi_fields(kpi, fields)
            try:
                edit.check_allowed(department, user_id, is_admin)
            except PlanEditError as error:
                problems["name_ja"] = error
            else:
                if edit.version_of(kpi) != metadata.get("version"):
                    by = edit.last_editor(session, kpi.key)
                    problems["name_ja"] = PlanEditError("changed_meanwhile", kpi=kpi, by=by)
        errors = {block: messages.error_text(problem, locale) for block, problem in problems.items()}
        if not _accepted(ack, context, metadata, locale, errors):
            return
        channel = metadata.get("channel") or None
        try:
            # A retried submission carries the same view id: saved once.
            with unit_of_work(deps.engine, f"view:{body['view']['id']}") as session:
                change = edit.update_kpi(
                    session,
                    kpi_id=kpi.id or 0,
                    version=str(metadata.get("version")),
                    values=values,
                    user_id=user_id,
                    is_admin=is_admin,
                )
        except PlanEditError as error:  # someone saved between the check and now
            tell(client, body, messages.error_text(error, locale), channel=channel or user_id)
            return
        tell(client, body, messages.kpi_confirmation(change, locale), channel=channel or user_id)
        if change.changes:
            _after_change(deps, client, change.kpi.id, user_id)
            if "owner_user_id" in change.changes:
                deps.changed(change.changes["owner_user_id"])
