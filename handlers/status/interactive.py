"""`/kpi list` (the KPIs you can report) and `/kpi status [department]` (a department's scorecard).

Both answer ephemerally in Block Kit (handlers/status/messages.py); this module picks the data.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from bot import render
from bot.clock import today
from bot.departments import find_department, own_department
from bot.reports.service import reportable_kpis
from bot.scorecard import Scorecard, all_departments, build_scorecard
from handlers.commands import CommandRequest, subcommand
from handlers.status import messages
from handlers.work import unit_of_work

# -- /kpi list -------------------------------------------------------------------------------------


@subcommand("list", "一覧", queued=True)
def list_command(request: CommandRequest) -> None:
    locale = request.locale()
    is_admin = request.deps.admin_check(request.user_id)  # the headline asks too: at most once
    with unit_of_work(request.deps.engine) as session:
        mine = reportable_kpis(session, user_id=request.user_id, is_admin=is_admin)
    if not mine:
        admins = sorted(request.deps.settings.admins)
        request.reply(
            render.message("kpi_list.none", locale, department=request.channel_department, admins=admins)
        )
        return
    request.reply(*messages.kpi_list_message(mine, locale, is_admin=is_admin()))


# -- /kpi status [department] ----------------------------------------------------------------------


@subcommand("status", "状況", queued=True)
def status_command(request: CommandRequest) -> None:
    scored: tuple[Scorecard, dt.date] | None = None
    with unit_of_work(request.deps.engine) as session:
        departments = all_departments(session)
        if request.text:
            department = find_department(departments, request.text)
        else:
            department = request.channel_department or own_department(session, departments, request.user_id)
        if department is not None:
            day = today(ZoneInfo(department.timezone))
            # The period in progress and the one before it, for the trend arrow.
            scored = build_scorecard(session, department, day, history_length=2, current=True), day
    if scored is None:
        key = "kpi_status.unknown_department" if request.text else "kpi_status.choose"
        request.reply(render.message(key, request.locale(), text=request.text, departments=departments))
        return
    card, day = scored
    request.reply(*messages.scorecard_message(card, request.locale(card.department), day))
