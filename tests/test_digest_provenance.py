"""The digest marks values that came from a system (push API, HubSpot) and values corrected since
the department's last digest, with what that digest showed: posted by `/kpi digest` over signed
HTTP into the fake Slack, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlmodel import col, update

from bot.clock import set_clock
from bot.models import Department, Source
from bot.reports.actuals import record_actual
from bot.reports.service import kpi_by_key
from tests.fakeslack.harness import SlackHarness

JST = dt.timezone(dt.timedelta(hours=9))
ADMIN = "U0ADMIN"


def at(moment: dt.datetime) -> None:
    set_clock(lambda: moment.astimezone(dt.UTC))


def record(slack: SlackHarness, key: str, period: str, value: int, source: Source, by: str = "U0MKT1",
           name: str | None = None) -> None:  # fmt: skip
    with slack.session() as session:
        found = kpi_by_key(session, key)
        assert found is not None
        record_actual(session, kpi=found[0], period=period, value=Decimal(value), reported_by=by,
                      source=source, source_name=name)  # fmt: skip
        session.commit()


def digest_lines(slack: SlackHarness, locale_user: str = ADMIN) -> list[str]:
    """Post the marketing digest now (as an admin) and return the lines of the message posted."""
    before = len(slack.fake.calls("chat.postMessage"))
    answer = slack.command("digest marketing", user_id=locale_user)
    assert answer.args["response_type"] == "ephemeral"
    slack.settle()
    posted = slack.fake.calls("chat.postMessage")[before:]
    assert posted, "no digest posted"
    # The rows are in the table block; the message's text carries them as mrkdwn lines, marks included.
    texts = [call.args["text"] for call in posted]
    return [line for text in texts for line in text.splitlines()]


def row(lines: list[str], name: str) -> str:
    return next(line for line in lines if f"*{name}*" in line)


def test_values_from_systems_and_corrections_since_the_last_digest_are_marked(slack: SlackHarness) -> None:
    slack.fake.set_user(ADMIN, is_admin=True)
    at(dt.datetime(2026, 11, 30, 9, 0, tzinfo=JST))
    record(slack, "mqls", "2026-10", 190, Source.COMMAND)
    record(slack, "cost_per_lead", "2026-10", 9000, Source.API, by="source:crm", name="crm")
    record(slack, "website_visits", "2026-W48", 4000, Source.HUBSPOT, by="source:hs", name="hs")
    record(slack, "mqls", "2026-11", 150, Source.MODAL)  # the month in progress, reviewed next month
    at(dt.datetime(2026, 11, 30, 10, 0, tzinfo=JST))
    first = digest_lines(slack)
    assert row(first, "MQL 数").endswith("_2026年10月_")  # typed in Slack, never corrected: no mark
    assert row(first, "リード獲得単価").endswith("_2026年10月_ ・ :satellite_antenna: _API crm から_")
    assert ":satellite_antenna: _HubSpot hs から_" in row(first, "Web サイト訪問数")
    assert not any(":pencil2:" in line for line in first)  # no digest before this one

    at(dt.datetime(2026, 12, 2, 15, 0, tzinfo=JST))
    record(slack, "mqls", "2026-11", 160, Source.COMMAND)  # corrected after the first digest
    record(slack, "cost_per_lead", "2026-11", 8000, Source.API, by="source:crm", name="crm")
    record(slack, "cost_per_lead", "2026-11", 8000, Source.COMMAND)  # corrected, but to the same value
    at(dt.datetime(2026, 12, 7, 10, 0, tzinfo=JST))
    second = digest_lines(slack)
    assert row(second, "MQL 数").endswith(
        "_2026年11月_ ・ :pencil2: _前回のダイジェスト以降に修正(前回 150件)_"
    )
    assert row(second, "リード獲得単価").endswith("_2026年11月_")  # a person's value now, and first seen


def test_the_marks_in_english(slack: SlackHarness) -> None:
    slack.fake.set_user(ADMIN, is_admin=True, locale="en-US")
    with slack.session() as session:  # a digest speaks its department's language
        session.exec(update(Department).where(col(Department.key) == "marketing").values(locale="en"))
        session.commit()
    at(dt.datetime(2026, 11, 2, 9, 0, tzinfo=JST))
    record(slack, "mqls", "2026-10", 180, Source.API, by="source:crm", name="crm")
    at(dt.datetime(2026, 11, 2, 10, 0, tzinfo=JST))
    digest_lines(slack)
    at(dt.datetime(2026, 11, 4, 10, 0, tzinfo=JST))
    record(slack, "mqls", "2026-10", 185, Source.HUBSPOT, by="source:hs", name="hs")
    at(dt.datetime(2026, 11, 9, 10, 0, tzinfo=JST))
    line = row(digest_lines(slack), "MQLs")
    assert line.endswith(
        "_Oct 2026_ · :satellite_antenna: _from HubSpot hs_"
        " · :pencil2: _corrected since the last digest (was 180)_"
    )
