"""`/kpi list` (the KPIs you can report) and `/kpi status [department]` (a department's scorecard).

Both answer ephemerally in Block Kit. Words come from templates/<locale>/ (`kpi_list.md.j2`,
`kpi_status_row.md.j2`, messages/status.yaml); this module picks the data and fits it into
Slack's limits with handlers/blocks.py: long answers are split into more sections, and whatever
still does not fit is counted in a closing line, never dropped silently.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import Block
from sqlmodel import Session, col, select

from bot import render
from bot.clock import today
from bot.database import transaction
from bot.models import Department, Kpi
from bot.reports.service import normalize_name, reportable_kpis
from bot.scorecard import Scorecard, all_departments, build_scorecard
from handlers.blocks import MAX_BLOCKS, context, fit_blocks, pack, section, sections
from handlers.commands import CommandRequest, subcommand

_CHANNEL_MENTION = re.compile(r"^<#(?P<id>[CG][A-Z0-9]+)(?:\|[^>]*)?>$")


# -- /kpi list -------------------------------------------------------------------------------------


@subcommand("list", "一覧")
def list_command(request: CommandRequest) -> None:
    locale = request.locale()
    # Asked once, up front: the same cached users.info the locale needed.
    is_admin = request.deps.is_admin(request.user_id)
    with transaction(request.deps.engine) as session:
        mine = reportable_kpis(session, user_id=request.user_id, is_admin=lambda: is_admin)
    if not mine:
        department = request.channel_department
        request.reply(
            render.message(
                "kpi_list.none",
                locale,
                department=department,
                admins=sorted(request.deps.settings.admins),
            )
        )
        return
    headline = render.message("kpi_list.headline", locale, count=len(mine), is_admin=is_admin)
    # Derived KPIs are listed too, as "calculated": reportable_kpis gives them in plan order,
    # so each department's KPIs come together.
    groups = [list(items) for _, items in groupby(mine, key=lambda item: item.department.id)]
    body = [
        (
            sections(render.template("kpi_list.md", locale, department=items[0].department, items=items)),
            len(items),
        )
        for items in groups
    ]
    footer = context(render.message("kpi_list.footer", locale))

    def overflow(left: list[int]) -> Block:
        return context(render.message("kpi_list.more", locale, departments=len(left), kpis=sum(left)))

    request.reply(headline, blocks=fit_blocks([section(headline)], body, [footer], overflow))


# -- /kpi status [department] ----------------------------------------------------------------------


@subcommand("status", "状況")
def status_command(request: CommandRequest) -> None:
    scored: tuple[Scorecard, dt.date] | None = None
    with transaction(request.deps.engine) as session:
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
    text, blocks = scorecard_message(card, request.locale(card.department), day)
    request.reply(text, blocks=blocks)


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


def scorecard_message(card: Scorecard, locale: str, day: dt.date) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the blocks of a department's scorecard."""
    department = card.department
    headline = render.message("kpi_status.headline", locale, department=department, day=day)
    if not card.rows:
        return headline, [section(headline), section(render.message("kpi_status.no_kpis", locale))]
    in_progress = sorted({row.period for row in card.rows}, key=lambda p: (p.cadence != "monthly", p.key))
    head: list[Block] = [
        section(headline),
        context(render.message("kpi_status.periods", locale, periods=in_progress, day=day)),
    ]
    footer = context(render.message("kpi_status.footer", locale, department=department))
    entries = [render.template("kpi_status_row.md", locale, row=row).strip() for row in card.rows]
    room = MAX_BLOCKS - len(head) - 1
    packed, left = pack(entries, max_sections=room)
    if left:
        packed, left = pack(entries, max_sections=room - 1)
    body = [section(text) for text in packed]
    if left:
        body.append(context(render.message("kpi_status.more", locale, count=left, department=department)))
    return headline, [block.to_dict() for block in [*head, *body, footer]]
