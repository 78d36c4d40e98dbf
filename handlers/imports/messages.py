"""What a CSV import says: the preview with Save / Cancel, and the outcome."""

from __future__ import annotations

from typing import Any

from bot import render
from bot.reports.batch import Stored
from bot.reports.csvimport import Preview
from bot.reports.rows import FormatError, Problem
from handlers.blocks import split_text

SAVE_ACTION = "import_save"
CANCEL_ACTION = "import_cancel"
MAX_LISTED = 30  # lines of each kind shown; the rest counted


def problem_text(problem: Problem, locale: str) -> str:
    params = dict(problem.params)
    if params.pop("from_report", False):
        text = render.message(f"report.error.{problem.code}", locale, **params)
    elif f"imports.problem.{problem.code}" in render.message_keys(locale):
        text = render.message(f"imports.problem.{problem.code}", locale, **params)
    else:
        text = render.message(f"push.problem.{problem.code}", locale, **params)
    return render.message("imports.problem_line", locale, row=problem.row, field=problem.field, text=text)


def _listed(lines: list[str], locale: str) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return [*lines[:MAX_LISTED], render.message("imports.more", locale, count=len(lines) - MAX_LISTED)]


def preview(found: Preview, file_id: str, name: str, locale: str) -> tuple[str, list[dict[str, Any]]]:
    summary = render.message(
        "imports.summary",
        locale,
        name=name,
        new=len(found.new),
        corrected=len(found.corrections),
        unchanged=len(found.unchanged),
        problems=len(found.problems),
    )
    lines = [summary]
    lines += _listed(
        [
            render.message(
                "imports.new_line",
                locale,
                kpi=item.kpi.name(locale),
                period=render.period_label(item.period, locale),
                value=render.localized(item.value, item.kpi.unit.value, locale, exact=True),
            )  # fmt: skip
            for item in found.new
        ],
        locale,
    )
    lines += _listed(
        [
            render.message(
                "imports.correction_line",
                locale,
                kpi=item.kpi.name(locale),
                period=render.period_label(item.period, locale),
                before=render.localized(before, item.kpi.unit.value, locale, exact=True),
                after=render.localized(item.value, item.kpi.unit.value, locale, exact=True),
            )  # fmt: skip
            for item, before in found.corrections
        ],
        locale,
    )
    lines += _listed([problem_text(problem, locale) for problem in found.problems], locale)
    if found.problems:
        lines.append(render.message("imports.fix_and_resend", locale))
    elif not found.savable:
        lines.append(render.message("imports.nothing_to_save", locale))
    text = "\n".join(lines)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in split_text(text)[:45]
    ]
    if found.savable:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    _button(SAVE_ACTION, render.message("imports.save", locale), file_id, "primary"),
                    _button(CANCEL_ACTION, render.message("imports.cancel", locale), file_id, None),
                ],
            }
        )
    return summary, blocks


def _button(action: str, text: str, value: str, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def unreadable(error: FormatError, name: str, locale: str) -> str:
    key = f"imports.error.{error.code}"
    if key not in render.message_keys(locale):
        key = f"push.error.{error.code}"
    return render.message(
        "imports.unreadable", locale, name=name, reason=render.message(key, locale, **error.params)
    )


def saved(stored: Stored, name: str, locale: str) -> str:
    return render.message(
        "imports.saved", locale, name=name, new=stored.created, corrected=stored.corrected,
        unchanged=len(stored.unchanged),
    )  # fmt: skip


def refused_now(problems: list[Problem], name: str, locale: str) -> str:
    lines = [render.message("imports.refused_now", locale, name=name, count=len(problems))]
    return "\n".join(lines + _listed([problem_text(problem, locale) for problem in problems], locale))
