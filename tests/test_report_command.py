"""`/kpi report <kpi> <value> [period] [note]` over the signed HTTP path, against the fake Slack."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import col, select

from bot.models import Actual, AuditEvent, Kpi
from tests.fakeslack.harness import SlackHarness

OWNER = "U0SALES1"  # owns new_approaches and close_rate in the example plan


def live_values(slack: SlackHarness, key: str) -> dict[str, Decimal]:
    with slack.session() as session:
        rows = session.exec(
            select(Actual)
            .join(Kpi, col(Kpi.id) == Actual.kpi_id)
            .where(Kpi.key == key, col(Actual.superseded_at).is_(None))
        ).all()
        return {row.period: Decimal(row.value) for row in rows}


def test_report_stores_the_actual_and_confirms(slack: SlackHarness) -> None:
    answer = slack.command("report new_approaches 85", user_id=OWNER)
    assert answer.args["response_type"] == "ephemeral"
    text = answer.args["text"]
    assert "新規アプローチ数" in text and "2026-11" in text and "85" in text
    assert "100" in text and "85 %" in text and "注意" in text  # target, % of target, amber
    assert live_values(slack, "new_approaches") == {"2026-11": Decimal(85)}
    with slack.session() as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "actual.reported")).one()
        assert event.actor == OWNER and event.details["value"] == "85"
