"""`/kpi list` (the KPIs you can report) and `/kpi status [department]` (a department's scorecard).

Both answer ephemerally in Block Kit. Words come from templates/<locale>/ (`kpi_list.md.j2`,
`kpi_status_row.md.j2`, messages/status.yaml); this module picks the data and fits it into
Slack's limits (50 blocks, 3,000 characters per section): long answers are split into more
sections, and whatever still does not fit is counted in a closing line, never dropped silently.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import Block, ContextBlock, MarkdownTextObject, SectionBlock
from sqlmodel import Session, col, select

from bot import render
from bot.actuals import live_values
from bot.clock import today
from bot.database import transaction
from bot.models import Department, Kpi
from bot.periods import Period
from bot.permissions import can_report
from bot.reporting import all_kpis, normalize_name
from bot.scorecard import Scorecard, all_departments, build_scorecard, current_period, targets_for
from bot.scoring import TargetValue
from handlers.commands import CommandRequest, subcommand

MAX_BLOCKS = 50
# Slack allows 3,000 characters per section; packing stops a little short of it.
SECTION_TEXT_BUDGET = 2900
_CHANNEL_MENTION = re.compile(r"^<#(?P<id>[CG][A-Z0-9]+)(?:\|[^>]*)?>$")


# -- /kpi list -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListItem:
    kpi: Kpi
    period: Period  # the period in progress, where `/kpi report` puts a value
    target: TargetValue | None
    reported: Decimal | None  # the live value for `period`, if any


@dataclass(frozen=True)
class DepartmentList:
    department: Department
    items: list[ListItem]


@subcommand("list", "一覧")
def list_command(request: CommandRequest) -> None:
    locale = request.locale()
    # Asked once, up front: the same cached users.info the locale needed.
    is_admin = request.deps.is_admin(request.user_id)
    with transaction(request.deps.engine) as session:
        mine = [
            (kpi, department)
            for kpi, department in all_kpis(session)
            if can_report(kpi, department, request.user_id, lambda: is_admin)
        ]
        groups = reportable_by_department(session, mine)
    if not groups:
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
    count = sum(len(group.items) for group in groups)
    headline = render.message("kpi_list.headline", locale, count=count, is_admin=is_admin)
    body = [
        (sections(render.template("kpi_list.md", locale, group=group)), len(group.items)) for group in groups
    ]
    footer = context(render.message("kpi_list.footer", locale))

    def overflow(left: list[int]) -> Block:
        return context(render.message("kpi_list.more", locale, departments=len(left), kpis=sum(left)))

    request.reply(headline, blocks=fit_blocks([section(headline)], body, [footer], overflow))


def reportable_by_department(
    session: Session, kpis: Sequence[tuple[Kpi, Department]]
) -> list[DepartmentList]:
    """Each KPI with its current period, target and value so far, grouped by department in the
    order given; two queries in all."""
    periods: dict[int, Period] = {}
    for kpi, department in kpis:
        assert kpi.id is not None
        periods[kpi.id] = current_period(kpi.cadence, today(ZoneInfo(department.timezone)))
    keys = {period.key for period in periods.values()}
    targets = targets_for(session, list(periods), keys)
    values = live_values(session, list(periods), keys)
    groups: dict[int | None, DepartmentList] = {}
    for kpi, department in kpis:
        assert kpi.id is not None
        slot = (kpi.id, periods[kpi.id].key)
        item = ListItem(kpi, periods[kpi.id], targets.get(slot), values.get(slot))
        groups.setdefault(department.id, DepartmentList(department, [])).items.append(item)
    return list(groups.values())


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


# -- fitting into Block Kit --------------------------------------------------------------------------


def section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text))


def context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=text)])


def split_text(text: str, limit: int = SECTION_TEXT_BUDGET) -> list[str]:
    """Split at line ends into pieces of at most `limit` characters; a line longer than that
    (none of ours is) is cut into pieces rather than lost."""
    pieces: list[str] = []
    current = ""
    for line in text.strip().split("\n"):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            candidate = line
        current = candidate
    if current:
        pieces.append(current)
    return pieces


def sections(text: str) -> list[Block]:
    return [section(piece) for piece in split_text(text)]


def pack(
    entries: Sequence[str], max_sections: int, limit: int = SECTION_TEXT_BUDGET
) -> tuple[list[str], int]:
    """Entries (one per KPI) into at most `max_sections` section texts: one entry per section
    while there is room, several per section when there are many. Returns the texts and how
    many entries did not fit."""
    if max_sections <= 0:
        return [], len(entries)
    per_section = max(1, math.ceil(len(entries) / max_sections))
    texts: list[str] = []
    complete: list[int] = []  # after each text, how many entries it and those before hold whole
    current: list[str] = []
    started = 0  # entries started in `current`
    for index, entry in enumerate(entries):
        for number, piece in enumerate(split_text(entry, limit)):
            full = number == 0 and started >= per_section
            if current and (full or len("\n".join([*current, piece])) > limit):
                texts.append("\n".join(current))
                complete.append(index)
                current, started = [], 0
            current.append(piece)
            started += number == 0
    if current:
        texts.append("\n".join(current))
        complete.append(len(entries))
    if len(texts) <= max_sections:
        return texts, 0
    return texts[:max_sections], len(entries) - complete[max_sections - 1]


def fit_blocks(
    head: list[Block],
    groups: list[tuple[list[Block], int]],
    tail: list[Block],
    overflow: Callable[[list[int]], Block],
) -> list[dict[str, Any]]:
    """Head, as many whole groups as fit in MAX_BLOCKS, a line counting the groups left out
    (`overflow(weights of the groups left)`), then the tail."""
    total = len(head) + sum(len(blocks) for blocks, _ in groups) + len(tail)
    body: list[Block] = []
    left: list[int] = []
    if total <= MAX_BLOCKS:
        body = [block for blocks, _ in groups for block in blocks]
    else:
        room = MAX_BLOCKS - len(head) - len(tail) - 1
        for blocks, weight in groups:
            if not left and len(body) + len(blocks) <= room:
                body.extend(blocks)
            else:
                left.append(weight)
        body.append(overflow(left))
    return [block.to_dict() for block in [*head, *body, *tail]]
