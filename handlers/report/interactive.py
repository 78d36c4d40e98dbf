"""`/kpi report <kpi> <value> [period] [note…]`; with no arguments it opens the report modal."""

from __future__ import annotations

from bot import render
from bot.database import transaction
from bot.idempotency import first_time
from bot.reports.service import Reported, ReportError, report
from handlers.commands import CommandRequest, subcommand
from handlers.report.followup import after_reports
from handlers.report.modal import open_report_modal


@subcommand("report", "報告", "r")
def report_command(request: CommandRequest) -> None:
    if not request.text:
        open_report_modal(request)
        return
    with transaction(request.deps.engine) as session:
        # Slack may deliver a command again (X-Slack-Retry-Num); its trigger_id is the same.
        if not first_time(session, f"command:{request.trigger_id}"):
            return
        try:
            reported = report(
                session,
                text=request.text,
                user_id=request.user_id,
                is_admin=lambda: request.deps.is_admin(request.user_id),
            )
        except ReportError as error:
            # Rendered before the rollback: the error may name KPIs loaded in this session.
            answer = render.message(f"report.error.{error.code}", request.locale(), **error.params)
            session.rollback()
            request.reply(answer)
            return
    request.reply(confirmation(reported, request.locale(reported.department)))
    after_reports(request.deps, request.client, [reported])


def confirmation(reported: Reported, locale: str) -> str:
    previous = reported.recorded.previous
    return render.template(
        "report_confirmation.md",
        locale,
        kpi=reported.kpi,
        period=reported.period,
        value=reported.recorded.actual.value,
        previous=None if previous is None else previous.value,
        score=reported.score,
        note=reported.recorded.actual.note,
    )
