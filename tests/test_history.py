"""`/kpi history <kpi> [period]` over signed HTTP, on SQLite and PostgreSQL: the chain of values
with who or which source sent each and when, in the user's language, only to them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from bot.clock import set_clock
from bot.models import Source
from bot.reports.actuals import record_actual
from bot.reports.service import kpi_by_key
from tests.fakeslack.harness import NOW, SlackHarness


def record(
    slack: SlackHarness, key: str, period: str, value: int, by: str, source: Source, **kw: str
) -> None:
    with slack.session() as session:
        found = kpi_by_key(session, key)
        assert found is not None
        record_actual(
            session, kpi=found[0], period=period, value=Decimal(value), reported_by=by, source=source, **kw
        )
        session.commit()


def at(hour: int, minute: int = 0) -> None:
    moment = NOW.replace(day=28, hour=hour, minute=minute)
    set_clock(lambda: moment.astimezone(dt.UTC))


def test_the_chain_of_values_names_who_and_which_source_and_when(slack: SlackHarness) -> None:
    at(9, 5)
    slack.command("report mqls 120 2026-11 from the event", user_id="U0MKT1")
    at(11, 30)
    record(slack, "mqls", "2026-11", 125, "source:crm", Source.API, source_name="crm")
    at(15, 0)
    record(slack, "mqls", "2026-11", 126, "source:hs", Source.HUBSPOT, source_name="hs")
    set_clock(lambda: NOW.astimezone(dt.UTC))
    answer = slack.command("history mqls 2026-11", user_id="U0SALES1")
    assert answer.args["response_type"] == "ephemeral"
    lines = answer.args["text"].splitlines()
    assert lines[0].startswith("*MQL 数*(`mqls`)— 2026年11月")
    assert lines[1] == "• *120件* — <@U0MKT1>(/kpi report)、11月28日(土) 09:05 —「from the event」"
    assert lines[2] == "• 120件 → *125件* — API crm、11月28日(土) 11:30"
    assert lines[3] == "• 125件 → *126件*(現在の値) — HubSpot hs、11月28日(土) 15:00"
    assert len(lines) == 4


def test_without_a_period_the_latest_period_with_a_value_in_english(slack: SlackHarness) -> None:
    slack.fake.set_user("U0EN", locale="en-US")
    record(slack, "mqls", "2026-10", 90, "U0MKT1", Source.MODAL)
    record(slack, "mqls", "2026-09", 80, "U0MKT1", Source.CSV)
    answer = slack.command("history MQLs", user_id="U0EN")
    lines = answer.args["text"].splitlines()
    assert lines[0] == "*MQLs* (`mqls`) — Oct 2026: every value, oldest first"
    assert lines[1].startswith("• *90* (current) — <@U0MKT1> (report form), Mon, Nov 30 10:00")
    september = slack.command("history mqls 2026-09", user_id="U0EN").args["text"]
    assert "(CSV import)" in september


def test_a_period_without_values_and_bad_input_answer_clearly(slack: SlackHarness) -> None:
    slack.fake.set_user("U0EN", locale="en-US")
    empty = slack.command("history mqls", user_id="U0EN").args["text"]
    assert empty.splitlines()[1] == "No value has been reported for this period yet."
    assert "Usage: `/kpi history" in slack.command("history", user_id="U0EN").args["text"]
    unknown = slack.command("history mqlz", user_id="U0EN").args["text"]
    assert "mqlz" in unknown and "mqls" in unknown  # a suggestion
    future = slack.command("history mqls 2027-01", user_id="U0EN").args["text"]
    assert "hasn't started yet" in future
    weekly = slack.command("history mqls 2026-W48", user_id="U0EN")
    assert weekly.args["response_type"] == "ephemeral" and "2026-W48" in weekly.args["text"]
