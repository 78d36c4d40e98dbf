"""`/kpi countermeasure <kpi> <text…> [@owner] [due]` as people type it, read by the pure rules.

The refusals tests/test_countermeasures.py sends over signed HTTP, each asserted on the rule that
decides it: split_command (the KPI and the text), split_trailing (an owner and a due date at the
end), parse_due, check_fields; and the words the user sees, rendered as the handler renders them.
"""

from __future__ import annotations

import datetime as dt

import pytest

from bot import render
from bot.countermeasures.service import (
    CommandText,
    CountermeasureError,
    Typed,
    check_fields,
    parse_due,
    split_command,
    split_trailing,
)
from bot.reports.service import ReportError, find_kpi, normalize_name
from tests.unit.plan import example_kpis

TODAY = dt.date(2026, 11, 30)
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
