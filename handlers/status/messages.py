"""What `/kpi list` and `/kpi status` say, in Block Kit.

Words come from templates/<locale>/ (`kpi_list.md.j2`, `kpi_status_row.md.j2`,
messages/status.yaml); answers are fitted into Slack's limits with handlers/blocks.py: long
answers are split into more sections, and whatever still does not fit is counted in a closing
line, never dropped silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from slack_sdk.models.blocks import Block

from bot import render
from bot.reports.service import ReportableKpi
from bot.scorecard import Scorecard
from handlers.blocks import MAX_BLOCKS, context, fit_blocks, pack, section, sections


def kpi_list_message(
    mine: Sequence[ReportableKpi], locale: str, *, is_admin: bool
) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the blocks of the KPIs a user can report, by department."""
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

    return headline, fit_blocks([section(headline)], body, [footer], overflow)


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
