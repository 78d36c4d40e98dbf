"""The review agenda posted in the department's channel: a header, then one message per item, so
each item is its own thread to discuss in.

Every post goes through the outbox (kind REVIEW, period = the day, subject = the item's key):
running it twice the same day posts nothing twice, and a run cut short is completed by the next one.
Posts are sequential (Slack allows about one message a second per channel; slack_sdk waits out a 429).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot import outbox, render
from bot.models import PostKind
from bot.outbox import Message, Outbox, Status
from bot.review.service import Agenda, due_key

# Items beyond this are counted in the header, not posted: a meeting discusses a few dozen at most.
MAX_ITEMS = 30


def agenda_items(agenda: Agenda, locale: str) -> list[tuple[str, str]]:
    """(key, text) of every item, in the order they are discussed."""
    day = agenda.day
    items = [(item.key, render.message("review.kpi", locale, item=item)) for item in agenda.off_track]
    items += [
        (
            due_key(item),
            render.message(
                "review.due", locale, cm=item.countermeasure, kpi=item.kpi, overdue=item.overdue(day)
            ),
        )
        for item in agenda.due
    ]
    items += [(item.key, render.message("review.missing", locale, item=item)) for item in agenda.missing]
    if agenda.closed:
        items.append(("closed", render.message("review.closed", locale, closed=agenda.closed)))
    return items


@dataclass(frozen=True)
class AgendaPosted:
    """The header's status ("posted", "already", "failed"), its ts, how many items were posted now,
    and the Slack error that stopped it."""

    status: Status
    ts: str | None
    count: int
    error: str | None = None


def post_agenda(posts: Outbox, agenda: Agenda) -> AgendaPosted:
    """Post the header and each item once."""
    department = agenda.department
    assert department.id is not None and department.channel_id is not None
    department_id, channel = department.id, department.channel_id
    locale = department.locale
    items = agenda_items(agenda, locale)
    shown = items[:MAX_ITEMS]
    header = render.message("review.header", locale, department=department, day=agenda.day, agenda=agenda)
    if agenda.uncovered:
        header += "\n" + render.message("review.uncovered", locale, uncovered=agenda.uncovered)
    if len(items) > len(shown):
        header += "\n" + render.message("review.more", locale, count=len(items) - len(shown))

    def once(subject: str, text: str) -> outbox.Sent:
        key = outbox.Key(department_id, PostKind.REVIEW, agenda.day.isoformat(), subject)
        # retry_failed: someone asked again, so what Slack refused last time is sent now.
        return posts.send(key, channel, [Message(text)], retry_failed=True)

    posted = once("", header)
    if posted.status == "failed":
        return AgendaPosted("failed", posted.ts, 0, posted.error)
    count = 0
    for key, text in shown:
        item = once(key, text)
        if item.status == "failed":
            return AgendaPosted("failed", posted.ts, count, item.error)
        count += item.status == "posted"
    return AgendaPosted(
        "already" if posted.status in ("already", "busy") else posted.status, posted.ts, count
    )
