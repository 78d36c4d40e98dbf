"""What `/kpi history` says: one line per value, oldest first, the live one marked."""

from __future__ import annotations

from bot import render
from bot.reports.history import Entry, KpiHistory


def who(entry: Entry, locale: str) -> str:
    """A Slack user as a mention; a system by its kind and name (API crm, HubSpot hs)."""
    kind = render.message(f"history.source.{entry.source.value}", locale)
    if entry.user_id is not None:
        return render.message("history.by_user", locale, user=entry.user_id, kind=kind)
    return render.message("history.by_source", locale, name=entry.source_name or "—", kind=kind)


def history_text(found: KpiHistory, locale: str) -> str:
    unit = found.kpi.unit.value
    lines = [
        render.message(
            "history.title",
            locale,
            kpi=found.kpi.name(locale),
            kpi_key=found.kpi.key,
            period=render.period_label(found.period, locale),
        )
    ]
    if not found.entries:
        lines.append(render.message("history.none", locale))
    previous = None
    for entry in found.entries:
        lines.append(
            render.message(
                "history.entry",
                locale,
                value=render.localized(entry.value, unit, locale, exact=True),
                previous=None if previous is None else render.localized(previous, unit, locale, exact=True),
                who=who(entry, locale),
                at=f"{render.day_label(entry.at, locale)} {entry.at:%H:%M}",
                note=entry.note,
                live=entry.live,
            )
        )
        previous = entry.value
    return "\n".join(lines)
