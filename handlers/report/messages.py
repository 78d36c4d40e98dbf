"""What reporting says in Slack: the report modal's view, refusals and confirmations.

The modal has one input per KPI for its current period, prefilled with the live value, and a note;
its private metadata keeps the channel and the period each KPI was shown for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

from slack_sdk.models.blocks import (
    Block,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot import render
from bot.config import LOCALES
from bot.periods import PeriodError, parse_key
from bot.reports.periods_open import PeriodChoice
from bot.reports.service import (
    NOTE_MAX_LENGTH,
    ReportableKpi,
    Reported,
    ReportError,
    SavedReports,
    plain_number,
)
from bot.text import clean_text
from handlers.blocks import MODAL_MAX_BLOCKS, context, modal, section

CALLBACK_ID = "report_modal"
KPI_BLOCK_PREFIX = "kpi:"
VALUE_ACTION = "value"
NOTE_BLOCK = NOTE_ACTION = "note"
PERIOD_BLOCK = "period"
PERIOD_ACTION = "report_period"
CURRENT = "current"  # the picker's option for the periods in progress
# The intro (with the period picker beside it) and the note always take a block; the "N more"
# notice one more when needed.
_FIXED_BLOCKS = 2


def report_view(
    kpis: Sequence[ReportableKpi],
    channel_id: str,
    locale: str,
    *,
    choices: Sequence[PeriodChoice] = (),
    period: str = CURRENT,
) -> View:
    """The form, on the periods in progress (`period` CURRENT) or on one finished period; the
    picker offers `choices`, the finished periods still open for reports. slack_sdk's View
    validates Slack's limits (title, blocks, metadata) when serialized."""
    room = MODAL_MAX_BLOCKS - _FIXED_BLOCKS
    shown = list(kpis) if len(kpis) <= room else list(kpis[: room - 1])
    intro = "modal.intro" if period == CURRENT else "modal.intro_period"
    text = render.message(intro, locale, period=period)
    blocks: list[Block] = [
        SectionBlock(
            block_id=PERIOD_BLOCK,
            text=MarkdownTextObject(text=text),
            accessory=_period_picker(choices, period, locale),
        )
        if choices
        else section(text)
    ]
    blocks += [_kpi_input(item, locale) for item in shown]
    if len(shown) < len(kpis):
        blocks.append(context(render.message("modal.more_kpis", locale, count=len(kpis) - len(shown))))
    blocks.append(
        InputBlock(
            block_id=NOTE_BLOCK,
            optional=True,
            label=PlainTextObject(text=render.message("modal.note_label", locale)),
            hint=PlainTextObject(text=render.message("modal.note_hint", locale)),
            element=PlainTextInputElement(action_id=NOTE_ACTION, multiline=True, max_length=NOTE_MAX_LENGTH),
        )
    )
    return modal(
        callback_id=CALLBACK_ID,
        title=render.message("modal.title", locale),
        submit=render.message("modal.submit", locale),
        close=render.message("modal.close", locale),
        private_metadata=_metadata(channel_id, shown, locale),
        blocks=blocks,
    )


def _period_picker(choices: Sequence[PeriodChoice], period: str, locale: str) -> StaticSelectElement:
    options = [Option(value=CURRENT, text=render.message("modal.period.current", locale))]
    options += [
        Option(
            value=choice.period.key,
            text=render.message(
                "modal.period.finished", locale, period=choice.period.key, count=choice.unreported
            ),
        )
        for choice in choices
    ]
    selected = next((option for option in options if option.value == period), options[0])
    return StaticSelectElement(
        action_id=PERIOD_ACTION,
        placeholder=render.message("modal.period.placeholder", locale),
        options=options,
        initial_option=selected,
    )


def _kpi_input(item: ReportableKpi, locale: str) -> InputBlock:
    kpi = item.kpi
    hint = render.message(
        "modal.hint",
        locale,
        period=item.period.key,
        target=render.localized_target(item.target, kpi.unit.value, locale),
        unit=kpi.unit.value,
    )
    return InputBlock(
        block_id=f"{KPI_BLOCK_PREFIX}{kpi.key}",
        optional=True,
        label=PlainTextObject(text=kpi.name(locale)),
        hint=PlainTextObject(text=hint),
        element=PlainTextInputElement(
            action_id=VALUE_ACTION,
            initial_value=None if item.value is None else plain_number(item.value),
            placeholder=PlainTextObject(text=render.message("modal.placeholder", locale)),
        ),
    )


def _metadata(channel_id: str, shown: Sequence[ReportableKpi], locale: str) -> str:
    # KPI ids grouped by the period shown, so a submission just after midnight (or a month end)
    # saves into the period the user saw. Ids, not keys: 97 keys of up to 64 characters would
    # not fit in Slack's 3,000 characters; ids under a handful of period keys always do.
    periods: dict[str, list[int]] = {}
    for item in shown:
        assert item.kpi.id is not None
        periods.setdefault(item.period.key, []).append(item.kpi.id)
    # The form's language too: a refusal is the ack itself, and asking Slack for the user's
    # language then (users.info) would spend the 3 s on a lookup the opening already made.
    return json.dumps({"channel": channel_id, "periods": periods, "locale": locale}, separators=(",", ":"))


METADATA_MAX = 3000  # Slack's limit on private_metadata
_KEYS = {"channel", "periods", "locale"}
_REQUIRED_KEYS = {"channel", "periods"}  # "locale" is missing in forms opened before it was kept


class FormMetadata(NamedTuple):
    channel: str
    periods: dict[int, str]  # KPI id → period key shown
    locale: str | None  # the form's language; None in a form opened before it was kept


def read_metadata(raw: str | None) -> FormMetadata | None:
    """What `_metadata` wrote; None for anything else (empty, not JSON, another shape, a period
    that is none, a language kpibot does not speak, longer than Slack allows)."""
    if not raw or len(raw) > METADATA_MAX:
        return None
    try:
        metadata = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(metadata, dict) or not _REQUIRED_KEYS <= set(metadata) <= _KEYS:
        return None
    channel, periods, locale = metadata["channel"], metadata["periods"], metadata.get("locale")
    if not isinstance(channel, str) or not isinstance(periods, dict):
        return None
    if locale is not None and locale not in LOCALES:
        return None
    shown: dict[int, str] = {}
    for key, ids in periods.items():
        try:
            parse_key(key)
        except PeriodError:
            return None
        if not isinstance(ids, list) or not all(type(kpi_id) is int for kpi_id in ids):
            return None
        shown.update(dict.fromkeys(ids, key))
    return FormMetadata(channel, shown, locale)


def error_text(error: ReportError, locale: str) -> str:
    """A report refused, as the command's answer or a form field's error. What it quotes of the
    words typed is quoted without their control characters (a NUL would come back as typed)."""
    params = {name: clean_text(v).text if isinstance(v, str) else v for name, v in error.params.items()}
    return render.message(f"report.error.{error.code}", locale, **params)


def report_confirmation(reported: Reported, locale: str) -> str:
    """The answer to `/kpi report <kpi> <value>`."""
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


def modal_confirmation(outcome: SavedReports, note: str | None, locale: str) -> str:
    return render.message("modal.saved", locale, saved=outcome.saved, unchanged=outcome.unchanged, note=note)
