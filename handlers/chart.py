"""`/kpi chart [department]`: the department's PNG grid (actual against target, period by period)
uploaded to the channel where it was asked for, the same file the digest used to carry.

No ledger: a person asking twice gets two charts, as asking twice means. The drawing (about a
second of matplotlib) runs after the command's ack, like every subcommand.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bot import render
from bot.clock import today
from bot.database import transaction
from bot.departments import find_department
from bot.digests import flows
from bot.outbox import PostFailed
from bot.scorecard import all_departments
from handlers.commands import CommandRequest, subcommand
from handlers.poster import SlackPoster


@subcommand("chart", "グラフ", queued=True)
def chart_command(request: CommandRequest) -> None:
    locale = request.locale()
    with transaction(request.deps.engine) as session:
        departments = all_departments(session)
    department = find_department(departments, request.text) if request.text else request.channel_department
    charted = [d for d in departments if not d.is_division]
    keys = ", ".join(f"`{d.key}`" for d in charted)
    if department is None:
        key = "chart.command.unknown" if request.text else "chart.command.which"
        request.reply(render.message(key, locale, keys=keys, text=request.text))
        return
    # The file is read in the channel by the department's team: in the department's language.
    language = department.locale
    name = department.name(locale)
    day = today(ZoneInfo(department.timezone))
    drawn = flows.draw_chart(request.deps.engine, department, day, language)
    if drawn is None:
        request.reply(render.message("chart.command.no_kpis", locale, department=name, keys=keys))
        return
    upload = flows.chart_upload(department, day, drawn, language)
    try:
        SlackPoster(request.client).upload(request.channel_id, upload)
    except PostFailed as failed:
        # Where the bot is no member, Slack says so in one of two ways; the fix is the same.
        if failed.code in ("not_in_channel", "channel_not_found"):
            request.reply(render.message("chart.command.not_in_channel", locale, department=name))
        else:
            request.reply(render.message("chart.command.failed", locale, department=name, error=failed.code))
