"""`/kpi countermeasure <kpi> <text…> [@owner] [due]` as people type it, read by the pure rules.

The refusals tests/test_countermeasures.py sends over signed HTTP, each asserted on the rule that
decides it: split_command (the KPI and the text), split_trailing (an owner and a due date at the
end), parse_due, check_fields; and the words the user sees, rendered as the handler renders them.
"""

from __future__ import annotations

import datetime as dt

import pytest

from bot import render
from bot.clock import set_clock
from bot.countermeasures import service
from bot.countermeasures.service import (
    CommandText,
    CountermeasureError,
    Typed,
    check_fields,
    parse_due,
    split_command,
    split_trailing,
)
from bot.models import Department, Kpi
from bot.render import mrkdwn_text
from bot.reports.service import ReportError, find_kpi, normalize_name
from tests.unit.plan import example_kpis

TODAY = dt.date(2026, 11, 30)
SALES1 = "U0SALES1"  # owns new_approaches
SALES_HEAD = "U0SALESHEAD"
OUTSIDER = "U0MKT1"  # owns marketing KPIs only
NAMES = {normalize_name(name) for kpi, _ in example_kpis() for name in (kpi.key, kpi.name_ja, kpi.name_en)}


def is_kpi(words: str) -> bool:
    return normalize_name(words) in NAMES


def refusal(
    error: pytest.ExceptionInfo[CountermeasureError] | CountermeasureError, locale: str = "ja"
) -> str:
    problem = error.value if isinstance(error, pytest.ExceptionInfo) else error
    return render.message(f"countermeasure.error.{problem.code}", locale, **problem.params)


def test_the_kpi_is_the_longest_run_of_leading_words_that_names_one() -> None:
    assert split_command("Close rate 提案書のテンプレートを刷新 tomorrow", is_kpi) == CommandText(
        "Close rate", Typed("提案書のテンプレートを刷新", None, "tomorrow")
    )
    assert split_command("new_approaches 架電リストを見直す <@U0SALES2> 12/15", is_kpi) == CommandText(
        "new_approaches", Typed("架電リストを見直す", "U0SALES2", "12/15")
    )


def test_an_unknown_kpi_is_named_with_a_suggestion() -> None:
    parts = split_command("new_aproaches 架電を増やす", is_kpi)
    assert parts.kpi == "new_aproaches"
    with pytest.raises(ReportError) as error:
        find_kpi(example_kpis(), parts.kpi, suggest_from=example_kpis())
    # from_command turns the report's unknown_kpi into the countermeasure's, with its params.
    assert "`new_approaches`" in refusal(CountermeasureError("unknown_kpi", **error.value.params))


def test_a_due_date_in_the_past_is_refused() -> None:
    parts = split_command("new_approaches 架電を増やす 2026-11-01", is_kpi)
    due = parse_due(parts.typed.due or "", TODAY)
    errors = check_fields(text=parts.typed.text, due=due, expected_effect=None, today=TODAY)
    assert list(errors) == ["due"] and "過去" in refusal(errors["due"])


def test_a_due_date_that_is_no_date_is_refused() -> None:
    parts = split_command("new_approaches 架電を増やす 2026-02-30", is_kpi)
    assert parts.typed.due == "2026-02-30"
    with pytest.raises(CountermeasureError) as error:
        parse_due("2026-02-30", TODAY)
    assert error.value.code == "due_malformed" and "日付として読めません" in refusal(error)


def test_an_at_name_slack_did_not_turn_into_a_mention_is_refused() -> None:
    with pytest.raises(CountermeasureError) as error:
        split_trailing("架電を増やす @someone")
    assert error.value.code == "owner_unresolved" and "誰か分かりません" in refusal(error)


@pytest.mark.parametrize("text", ["new_approaches", ""])
def test_a_kpi_without_what_to_do_is_the_usage(text: str) -> None:
    with pytest.raises(CountermeasureError) as error:
        split_command(text, is_kpi)
    assert error.value.code == "usage" and "KPI と実施すること" in refusal(error)


# -- due dates, owners, mentions, the one check (moved from tests/test_countermeasures.py) ------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-15", dt.date(2026, 12, 15)),
        ("12/15", dt.date(2026, 12, 15)),
        ("１２/１５", dt.date(2026, 12, 15)),
        ("1/10", dt.date(2027, 1, 10)),  # January, typed in late November: next year's
        ("11/29", dt.date(2026, 11, 29)),  # yesterday stays yesterday (and is refused as past)
        ("today", dt.date(2026, 11, 30)),
        ("今日", dt.date(2026, 11, 30)),
        ("明日", dt.date(2026, 12, 1)),
        ("Tomorrow", dt.date(2026, 12, 1)),
    ],
)
def test_due_dates_as_people_type_them(text: str, expected: dt.date) -> None:
    assert service.parse_due(text, dt.date(2026, 11, 30)) == expected


def test_trailing_owner_and_due_in_either_order() -> None:
    assert service.split_trailing("架電 <@U0A|a> 12/15") == service.Typed("架電", "U0A", "12/15")
    assert service.split_trailing("架電 12/15 <@U0A>") == service.Typed("架電", "U0A", "12/15")
    assert service.split_trailing("<@U0B> と架電する") == service.Typed("<@U0B> と架電する", None, None)
    mentioned = service.parse_mention("<@U0BOT> 対策： <@U0B> と架電する", "U0BOT")
    assert mentioned == service.Typed("<@U0B> と架電する", "U0B", None)
    assert service.parse_mention("<@U0BOT> こんにちは", "U0BOT") is None


def test_typed_text_is_escaped_for_mrkdwn_but_slack_markup_is_kept() -> None:
    typed = "CPL < 8000 & > 5000: ask <@U0A|a> in <#C0B|sales>, see <https://x.example|doc> &lt;"
    assert mrkdwn_text(typed) == (
        "CPL &lt; 8000 &amp; &gt; 5000: ask <@U0A|a> in <#C0B|sales>, see <https://x.example|doc> &lt;"
    )


def test_one_check_tells_a_form_every_field_and_a_command_the_first_problem() -> None:
    """bot.countermeasures.service.check serves the form, the mention and the command alike."""
    set_clock(lambda: dt.datetime(2026, 11, 30, 1, tzinfo=dt.UTC))  # 10:00 in Tokyo
    sales = Department(key="sales", name_ja="営業部", name_en="Sales", head_user_id=SALES_HEAD)
    target = service.Target(None, Kpi(key="new_approaches"), sales)

    def codes(problems: dict[str, service.CountermeasureError]) -> dict[str, str]:
        return {field: problem.code for field, problem in problems.items()}

    refused = service.check(target, user_id=OUTSIDER, allowed=False, text=" ", owner=None, due="2026-11-29")
    assert codes(refused.problems) == {"text": "text_required", "due": "due_past"}  # text's own first
    assert refused.refusal is not None and refused.refusal.code == "not_allowed"
    assert refused.refusal.params == {"department": sales, "head": SALES_HEAD}

    unread = service.check(target, user_id=SALES1, allowed=True, text=" ", owner=None, due="12/15")
    assert unread.refusal is not None and unread.refusal.code == "text_required"
    picked = service.check(
        target, user_id=SALES1, allowed=True, text="x", owner=None, due="12/15", read_due=service.iso_due
    )
    assert codes(picked.problems) == {"due": "due_malformed"} and picked.refusal is picked.problems["due"]

    ok = service.check(target, user_id=SALES1, allowed=True, text="架電", owner=None, due="明日")
    assert ok.refusal is None and ok.problems == {}
    assert (ok.draft.owner_user_id, ok.draft.due_date) == (SALES1, dt.date(2026, 12, 1))
