"""`/kpi digest`, and the scheduler's jobs composed for Slack (`make_jobs`).

What a digest says and how it is posted once is bot.digests.flows; the jobs are
bot.schedule.jobs. Here they get the Slack poster and the Block Kit (handlers/digests/messages.py,
handlers/alerts/messages.py).
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from slack_sdk import WebClient
from sqlalchemy.engine import Engine

from bot import render
from bot.clock import today
from bot.config import Settings
from bot.database import transaction
from bot.departments import find_department
from bot.digests import flows
from bot.outbox import Outbox
from bot.schedule import jobs as scheduled
from bot.scorecard import all_departments
from handlers.alerts import messages as alert_messages
from handlers.commands import CommandRequest, subcommand
from handlers.digests import messages
from handlers.poster import SlackPoster


def make_jobs(client: WebClient, engine: Engine, settings: Settings) -> scheduled.ScheduledJobs:
    """What `kpibot scheduler` runs, posting to Slack through `client`."""
    return scheduled.ScheduledJobs(
        outbox=Outbox(engine, SlackPoster(client, in_flight=scheduled.POST_WORKERS)),
        digest_messages=messages,
        alert_messages=alert_messages,
        settings=settings,
    )


@subcommand("digest", "ダイジェスト", queued=True)
def digest_command(request: CommandRequest) -> None:
    """`/kpi digest [department]`: an admin posts a department's digest now (at most once a day)."""
    locale = request.locale()
    if not request.deps.is_admin(request.user_id):
        request.reply(render.message("digest.command_not_admin", locale))
        return
    with transaction(request.deps.engine) as session:
        departments = all_departments(session)
    department = find_department(departments, request.text) if request.text else request.channel_department
    if department is None:
        keys = ", ".join(f"`{d.key}`" for d in departments)
        request.reply(render.message("digest.command_which", locale, keys=keys))
        return
    locale = request.locale(department)
    name = department.name(locale)
    outbox = Outbox(request.deps.engine, SlackPoster(request.client))
    day = today(ZoneInfo(department.timezone))
    outcome = flows.post_on_request(outbox, messages, request.deps.settings, department, day)
    if outcome.status == "no_channel":
        request.reply(render.message("digest.command_no_channel", locale, department=name))
    elif outcome.status == "failed":
        request.reply(
            render.message(
                "digest.command_failed",
                locale,
                department=name,
                error=outcome.error,
                channel=department.channel_id,
            )
        )
    elif outcome.status in ("already", "busy"):
        ts = outcome.ts
        channel = department.channel_id
        link = (outbox.poster.permalink(channel, ts) if channel and ts else None) or ""
        request.reply(render.message("digest.command_already", locale, department=name, link=link))
    else:
        request.reply(
            render.message("digest.command_posted", locale, department=name, channel=department.channel_id)
        )
