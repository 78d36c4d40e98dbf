"""`/kpi review [department]`: the weekly review meeting's agenda, posted in the department's channel.

A header, then one message per item (a KPI in red or amber, a countermeasure due or overdue, an
owner's missing reports), so each item is its own thread to discuss in; each posted once through
the outbox (bot/review/flows.py). The agenda is bot/review/service.py; the words are
templates/<locale>/messages/review.yaml.
"""

from __future__ import annotations

from bot import render
from bot.countermeasures import service
from bot.outbox import Outbox
from bot.review.flows import post_agenda
from bot.review.service import build_agenda
from handlers.commands import CommandRequest, subcommand
from handlers.countermeasures.interactive import ask_which_department, department_for
from handlers.poster import SlackPoster
from handlers.work import unit_of_work


@subcommand("review", "レビュー", queued=True)
def review_command(request: CommandRequest) -> None:
    deps = request.deps
    with unit_of_work(deps.engine) as session:
        department, departments = department_for(request, session)
        allowed = department is not None and service.may_log(
            session, department, request.user_id, deps.admin_check(request.user_id)
        )
    if department is None:
        ask_which_department(request, departments, "review")
        return
    locale = request.locale(department)
    if not allowed:
        request.reply(render.message("review.not_allowed", locale, department=department))
        return
    channel = department.channel_id
    if not channel:
        request.reply(render.message("review.no_channel", locale, department=department))
        return
    day = service.today_for(department)
    with unit_of_work(deps.engine) as session:
        agenda = build_agenda(session, department, day)
    poster = SlackPoster(request.client)
    posted = post_agenda(Outbox(deps.engine, poster), agenda)
    link = poster.permalink(channel, posted.ts) if posted.ts else None
    if posted.status == "failed":
        request.reply(
            render.message(
                "review.failed", locale, department=department, error=posted.error, channel=channel
            )
        )
    elif posted.status == "already" and not posted.count:
        request.reply(render.message("review.already", locale, department=department, link=link))
    else:
        request.reply(
            render.message(
                "review.posted", locale, department=department, channel=channel, count=posted.count, link=link
            )
        )
