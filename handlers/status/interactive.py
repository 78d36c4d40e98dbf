"""`/kpi list` (the KPIs you can report) and `/kpi status [department]` (a department's scorecard).

Both answer ephemerally in Block Kit (handlers/status/messages.py); this module picks the data.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from bot import render
from bot.clock import today
from bot.models import Department, Kpi
from bot.reports.service import normalize_name, reportable_kpis
from bot.scorecard import Scorecard, all_departments, build_scorecard
from handlers.commands import CommandRequest, subcommand
from handlers.status import messages
from handlers.work import unit_of_work

_CHANNEL_MENTION = re.compile(r"^<#(?P<id>[CG][A-Z0-9]+)(?:\|[^>]*)?>$")


# -- /kpi list -------------------------------------------------------------------------------------


@subcommand("list", "一覧")
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


@subcommand("status", "状況")
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


def find_department(departments: Sequence[Department], text: str) -> Department | None:
    """A department by key, Japanese or English name (any case, width or spacing), `#key` or a
    channel mention (`<#C0123|name>`, when the command escapes channels)."""
    text = text.strip()
    if match := _CHANNEL_MENTION.match(text):
        return next((d for d in departments if d.channel_id == match["id"]), None)
    wanted = normalize_name(text.lstrip("#＃"))
    for department in departments:
        names = (department.key, department.name_ja, department.name_en)
        if wanted in {normalize_name(name) for name in names}:
            return department
    return None


def own_department(session: Session, departments: Sequence[Department], user_id: str) -> Department | None:
    """The department the user heads, else the one department whose KPIs they own; None if they
    own KPIs in several departments (they choose) or in none."""
    headed = [d for d in departments if d.head_user_id == user_id]
    if headed:
        return headed[0]
    owned = set(session.exec(select(Kpi.department_id).where(col(Kpi.owner_user_id) == user_id)).all())
    if len(owned) == 1:
        return next((d for d in departments if d.id in owned), None)
    return None
