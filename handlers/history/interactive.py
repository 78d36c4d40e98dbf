"""`/kpi history <kpi> [period]` (`/kpi 履歴`): the chain of values, who or which source, when; ephemeral."""

from __future__ import annotations

from bot import render
from bot.periods import looks_like_period
from bot.reports.history import kpi_history
from bot.reports.service import ReportError
from handlers.commands import CommandRequest, subcommand
from handlers.history import messages
from handlers.report.messages import error_text
from handlers.work import unit_of_work


def split(text: str) -> tuple[str, str | None]:
    """`<kpi> [period]`: the KPI name may have spaces; a period is the last one or two words."""
    words = text.split()
    for size in (2, 1):
        if len(words) > size and looks_like_period(" ".join(words[-size:])):
            return " ".join(words[:-size]), " ".join(words[-size:])
    return text.strip(), None


@subcommand("history", "履歴", queued=True)
def history_command(request: CommandRequest) -> None:
    kpi_text, period_text = split(request.text)
    if not kpi_text:
        request.reply(render.message("history.usage", request.locale()))
        return
    with unit_of_work(request.deps.engine) as session:
        try:
            found = kpi_history(session, kpi_text, period_text)
        except ReportError as error:
            request.reply(error_text(error, request.locale()))  # rendered while the session is open
            return
        locale = request.locale(found.department)
        answer = messages.history_text(found, locale)
    request.reply(answer)
