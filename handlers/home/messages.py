"""The Home tab's Block Kit, from bot.home.service.Home; every word in templates/<locale>/messages/home.yaml.

Slack allows 100 blocks in a Home tab. Each part has a share of them; what does not fit in its
share is counted in one line that points to the command showing everything (`/kpi status`, …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slack_sdk.models.blocks import (
    Block,
    ButtonElement,
    DividerBlock,
    HeaderBlock,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot import render
from bot.countermeasures.service import Item
from bot.home.service import DepartmentLine, Home, PlanLine, ReportLine
from handlers.blocks import MODAL_MAX_BLOCKS, context, pack, section
from handlers.countermeasures.messages import status_buttons

HOME_MAX_BLOCKS = MODAL_MAX_BLOCKS  # 100, as for a modal
REPORT_ACTION = "home_report"
DONE_ACTION = "home_countermeasure_done"
DROPPED_ACTION = "home_countermeasure_dropped"

# Each part's share of the 100 blocks (items, not counting its title and "more" line).
REPORTS_SHOWN = 30
COUNTERMEASURE_BLOCKS = 24  # two blocks each: the line and its buttons
DEPARTMENTS_SHOWN = 10
DIVISION_SECTIONS = 6
PLAN_SECTIONS = 4


@dataclass(frozen=True)
class Part:
    title: str
    items: list[list[Block]]  # each item's blocks, kept together
    budget: int  # blocks its items may take
    more: str  # where to see what does not fit
    empty: str | None = None


def home_view(home: Home, locale: str, links: Mapping[int, str] | None = None) -> View:
    """The tab. `links`: alert id → permalink of its thread, for those the edge could find."""
    links = links or {}
    head: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=render.message("home.header", locale, day=home.day))),
        context(render.message("home.intro", locale)),
    ]
    parts = [
        Part(
            render.message("home.reports.title", locale),
            [[_report(line, locale)] for line in home.reports],
            REPORTS_SHOWN,
            render.message("home.reports.where", locale),
            render.message("home.reports.none", locale),
        ),
        Part(
            render.message("home.countermeasures.title", locale),
            [_countermeasure(item, home, locale) for item in home.countermeasures],
            COUNTERMEASURE_BLOCKS,
            render.message("home.countermeasures.where", locale),
            render.message("home.countermeasures.none", locale),
        ),
    ]
    if home.departments:
        parts.append(
            Part(
                render.message("home.departments.title", locale),
                [[section(_department(line, locale, links))] for line in home.departments],
                DEPARTMENTS_SHOWN,
                render.message("home.departments.where", locale),
            )
        )
    if home.division:
        parts.append(_packed("home.division.title", home.division, locale, links, DIVISION_SECTIONS))
    if home.plan:
        parts.append(_plan(home.plan, locale))
    blocks = head + [block for part in parts for block in _fit(part, locale)]
    assert len(blocks) <= HOME_MAX_BLOCKS, len(blocks)
    view = View(type="home", blocks=blocks)
    view.validate_json()
    return view


def _fit(part: Part, locale: str) -> list[Block]:
    blocks: list[Block] = [DividerBlock(), section(f"*{part.title}*")]
    if not part.items and part.empty:
        return [*blocks, context(part.empty)]
    used = 0
    for index, item in enumerate(part.items):
        if used + len(item) > part.budget:
            left = len(part.items) - index
            blocks.append(context(render.message("home.more", locale, count=left, where=part.more)))
            break
        blocks.extend(item)
        used += len(item)
    return blocks


def _report(line: ReportLine, locale: str) -> SectionBlock:
    assert line.kpi.id is not None
    return SectionBlock(
        text=render.message("home.reports.line", locale, line=line),
        accessory=ButtonElement(
            text=render.message("home.reports.button", locale),
            action_id=REPORT_ACTION,
            value=f"{line.kpi.id}:{line.period.key}",
            style="primary" if line.finished else None,
        ),
    )


def _countermeasure(item: Item, home: Home, locale: str) -> list[Block]:
    cm = item.countermeasure
    text = render.message(
        "home.countermeasures.line", locale, cm=cm, kpi=item.kpi, overdue=item.overdue(home.day)
    )
    buttons = status_buttons(
        cm, locale, done=DONE_ACTION, dropped=DROPPED_ACTION, block="home_countermeasure"
    )
    return [section(text), buttons]


def _department(line: DepartmentLine, locale: str, links: Mapping[int, str]) -> str:
    return render.message("home.departments.line", locale, line=line, links=links)


def _packed(
    title_key: str, lines: Sequence[DepartmentLine], locale: str, links: Mapping[int, str], sections: int
) -> Part:
    texts, left = pack([_department(line, locale, links) for line in lines], sections)
    items: list[list[Block]] = [[section(text)] for text in texts]
    if left:
        items.append([context(render.message("home.more", locale, count=left, where=""))])
    return Part(
        render.message(title_key, locale),
        items,
        sections + 1,
        render.message("home.departments.where", locale),
    )


def _plan(lines: Sequence[PlanLine], locale: str) -> Part:
    entries = [
        render.message("home.plan.line", locale, department=p.department, kpis=p.kpi_count) for p in lines
    ]
    texts, left = pack(entries, PLAN_SECTIONS)
    items: list[list[Block]] = [[section(text)] for text in texts]
    if left:
        items.append([context(render.message("home.more", locale, count=left, where=""))])
    items.append([context(render.message("home.plan.hint", locale))])
    return Part(
        render.message("home.plan.title", locale),
        items,
        PLAN_SECTIONS + 2,
        render.message("home.plan.where", locale),
    )


def alert_threads(home: Home) -> list[tuple[int, str, str]]:
    """(alert id, channel, thread ts) of every alert the tab links to."""
    found = []
    for line in [*home.departments, *home.division]:
        for view in line.alerts:
            if view.alert.id is not None and view.alert.channel_id and view.alert.thread_ts:
                found.append((view.alert.id, view.alert.channel_id, view.alert.thread_ts))
    return found
