"""Departments as people name them: the one a command names, and the one a user belongs to."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlmodel import Session, col, select

from bot.models import Department, Kpi
from bot.reports.service import normalize_name

_CHANNEL_MENTION = re.compile(r"^<#(?P<id>[CG][A-Z0-9]+)(?:\|[^>]*)?>$")


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
