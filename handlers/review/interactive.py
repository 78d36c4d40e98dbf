"""`/kpi review [department]`: the weekly review meeting's agenda, posted in the department's channel.

A header, then one message per item (a KPI in red or amber, a countermeasure due or overdue, an
owner's missing reports), so each item is its own thread to discuss in. Every post goes through
the Post ledger (kind REVIEW, period = the day, subject = the item's key): running it twice the same
day posts nothing twice, and a run cut short is completed by the next one. Posts are sequential
(Slack allows about one message a second per channel; slack_sdk waits out a 429). The agenda is
bot/review/service.py; the words are templates/<locale>/messages/review.yaml.
"""

from __future__ import annotations

from bot import outbox, render
from bot.countermeasures import service
from bot.database import transaction
from bot.models import PostKind
from bot.outbox import Message, Outbox
from bot.review.service import Agenda, build_agenda, due_key
from handlers.commands import CommandRequest, subcommand
from handlers.countermeasures.interactive import ask_which_department, department_for, permalink
from handlers.poster import SlackPoster

# Items beyond this are counted in the header, not posted: a meeting discusses a few dozen at most.
MAX_ITEMS = 30


@subcommand("review", "レビュー")
def review_command(request: CommandRequest) -> None:
    deps = request.deps
    with transaction(deps.engine) as session:
        department, departments = department_for(request, session)
        allowed = department is not None and service.may_log(
            session, department, request.user_id, lambda: deps.is_admin(request.user_id)
        )
    if department is None:
        ask_which_department(request, departments, "review")
        return
    locale = request.locale(department)
    if not allowed:
        request.reply(render.message("review.not_allowed", locale, department=department))
        return
    if not department.channel_id:
        request.reply(render.message("review.no_channel", locale, department=department))
        return
    day = service.today_for(department)
    with transaction(deps.engine) as session:
        agenda = build_agenda(session, department, day)
    status, ts, count, error = post_agenda(request, agenda)
    link = permalink(request.client, department.channel_id, ts)
    if status == "failed":
        request.reply(
            render.message(
                "review.failed", locale, department=department, error=error, channel=department.channel_id
            )
        )
    elif status == "already" and not count:
        request.reply(render.message("review.already", locale, department=department, link=link))
    else:
        request.reply(
            render.message(
                "review.posted",
                locale,
                department=department,
                channel=department.channel_id,
                count=count,
                link=link,
            )
        )


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
    return items


def post_agenda(request: CommandRequest, agenda: Agenda) -> tuple[str, str | None, int, str | None]:
    """Post the header and each item once. Returns the header's status ("posted", "already",
    "failed"), its ts, how many items were posted now, and a Slack error if one stopped it."""
    department = agenda.department
    assert department.id is not None and department.channel_id is not None
    locale = department.locale
    items = agenda_items(agenda, locale)
    shown = items[:MAX_ITEMS]
    header = render.message("review.header", locale, department=department, day=agenda.day, agenda=agenda)
    if len(items) > len(shown):
        header += "\n" + render.message("review.more", locale, count=len(items) - len(shown))

    posts = Outbox(request.deps.engine, SlackPoster(request.client))

    def once(subject: str, text: str) -> tuple[str, str | None, str | None]:
        key = outbox.Key(department.id, PostKind.REVIEW, agenda.day.isoformat(), subject)  # type: ignore[arg-type]
        # retry_failed: someone asked again, so what Slack refused last time is sent now.
        posted = posts.send(key, department.channel_id, [Message(text)], retry_failed=True)  # type: ignore[arg-type]
        return posted.status, posted.ts, posted.error

    status, ts, error = once("", header)
    if status == "failed":
        return status, ts, 0, error
    count = 0
    for key, text in shown:
        item_status, _, item_error = once(key, text)
        if item_status == "failed":
            return "failed", ts, count, item_error
        count += item_status == "posted"
    return ("already" if status in ("already", "busy") else status), ts, count, None
