"""The Block Kit of countermeasures: the form, the confirmation in the thread (with Done / Dropped),
and `/kpi countermeasures`. As a module it satisfies bot.countermeasures.flows.CountermeasureMessages.
Every word comes from templates/<locale>/messages/countermeasures.yaml."""

from __future__ import annotations

import datetime as dt
import json

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    DatePickerElement,
    InputBlock,
    PlainTextInputElement,
    PlainTextObject,
    UserSelectElement,
)
from slack_sdk.models.views import View

from bot import render
from bot.countermeasures import service
from bot.countermeasures.service import Item, Target
from bot.models import Countermeasure, CountermeasureStatus, Department, Kpi
from bot.outbox import Message
from handlers.blocks import context, fit_blocks, modal, section, sections

CALLBACK_ID = "countermeasure_modal"
LOG_ACTION = "alert_log_countermeasure"  # the button on an alert (posted by handlers/alerts/messages.py)
DONE_ACTION = "countermeasure_done"
DROPPED_ACTION = "countermeasure_dropped"
CLOSING = {DONE_ACTION: CountermeasureStatus.DONE, DROPPED_ACTION: CountermeasureStatus.DROPPED}
TEXT_BLOCK, OWNER_BLOCK, DUE_BLOCK, EFFECT_BLOCK = "text", "owner", "due", "effect"
VALUE = "value"


def form_metadata(target: Target) -> str:
    """Where the form logs to; on submission the alert is read again (the metadata could be forged)."""
    alert = target.alert
    return json.dumps(
        {
            "alert": None if alert is None else alert.id,
            "kpi": target.kpi.id,
            "channel": None if alert is None else alert.channel_id,
            "thread_ts": None if alert is None else alert.thread_ts,
        },
        separators=(",", ":"),
    )


def countermeasure_view(
    target: Target,
    locale: str,
    prefill: str | None = None,
    *,
    owner: str | None = None,
    due: dt.date | None = None,
) -> View:
    """The form (prefilled with a playbook's text, owner and due date when one is edited before it is
    adopted). slack_sdk's View checks Slack's limits (title, lengths, metadata) when validated."""
    kpi = target.kpi
    blocks: list[Block] = [
        section(render.message("countermeasure.modal.intro", locale, kpi=kpi, alert=target.alert)),
        InputBlock(
            block_id=TEXT_BLOCK,
            label=PlainTextObject(text=render.message("countermeasure.modal.text_label", locale)),
            element=PlainTextInputElement(
                action_id=VALUE,
                multiline=True,
                max_length=service.TEXT_MAX_LENGTH,
                initial_value=(prefill or "").strip()[: service.TEXT_MAX_LENGTH] or None,
                placeholder=PlainTextObject(
                    text=render.message("countermeasure.modal.text_placeholder", locale)
                ),
            ),
        ),
        InputBlock(
            block_id=OWNER_BLOCK,
            label=PlainTextObject(text=render.message("countermeasure.modal.owner_label", locale)),
            element=UserSelectElement(action_id=VALUE, initial_user=owner or kpi.owner_user_id),
        ),
        InputBlock(
            block_id=DUE_BLOCK,
            optional=True,
            label=PlainTextObject(text=render.message("countermeasure.modal.due_label", locale)),
            hint=PlainTextObject(text=render.message("countermeasure.modal.due_hint", locale)),
            element=DatePickerElement(action_id=VALUE, initial_date=None if due is None else due.isoformat()),
        ),
        InputBlock(
            block_id=EFFECT_BLOCK,
            optional=True,
            label=PlainTextObject(text=render.message("countermeasure.modal.effect_label", locale)),
            element=PlainTextInputElement(
                action_id=VALUE,
                max_length=service.EFFECT_MAX_LENGTH,
                placeholder=PlainTextObject(
                    text=render.message("countermeasure.modal.effect_placeholder", locale)
                ),
            ),
        ),
    ]
    return modal(
        callback_id=CALLBACK_ID,
        title=render.message("countermeasure.modal.title", locale),
        submit=render.message("countermeasure.modal.submit", locale),
        close=render.message("countermeasure.modal.close", locale),
        private_metadata=form_metadata(target),
        blocks=blocks,
    )


def confirmation_message(
    countermeasure: Countermeasure, kpi: Kpi, locale: str, by: str | None = None
) -> Message:
    """The message in the thread: what, owner, due, expected effect, status; Done/Dropped while open."""
    cm = countermeasure
    text = render.message("countermeasure.fallback", locale, kpi=kpi, text=cm.text[:200])
    blocks: list[Block] = [
        *sections(render.message("countermeasure.confirmation", locale, cm=cm, kpi=kpi)),
        context(render.message("countermeasure.status_line", locale, cm=cm, kpi=kpi, by=by)),
    ]
    if cm.status in service.OPEN:
        blocks.append(status_buttons(cm, locale))
    return Message(text, [block.to_dict() for block in blocks])


def status_buttons(
    cm: Countermeasure,
    locale: str,
    *,
    done: str = DONE_ACTION,
    dropped: str = DROPPED_ACTION,
    block: str = "",
) -> ActionsBlock:
    """Done / Dropped (Dropped asks first), on the confirmation and on the Home tab (other action ids)."""
    value = str(cm.id)
    return ActionsBlock(
        block_id=f"{block or 'countermeasure'}:{cm.id}",
        elements=[
            ButtonElement(
                text=render.message("countermeasure.button.done", locale),
                action_id=done,
                value=value,
                style="primary",
            ),
            ButtonElement(
                text=render.message("countermeasure.button.dropped", locale),
                action_id=dropped,
                value=value,
                confirm=ConfirmObject(
                    title=render.message("countermeasure.confirm_drop.title", locale),
                    text=render.message("countermeasure.confirm_drop.text", locale),
                    confirm=render.message("countermeasure.confirm_drop.confirm", locale),
                    deny=render.message("countermeasure.confirm_drop.deny", locale),
                ),
            ),
        ],
    )


def list_message(department: Department, items: list[Item], today: dt.date, locale: str) -> Message:
    """`/kpi countermeasures`: grouped by status, each with owner, due date and thread; at Slack's
    block limit the groups that do not fit are counted."""
    days = service.RECENTLY_CLOSED.days
    headline = render.message("countermeasures.headline", locale, department=department, days=days)
    groups = []
    for status, group in service.status_order(items):
        lines = [render.message("countermeasures.group", locale, status=status.value, count=len(group))]
        lines += [
            render.message(
                "countermeasures.row",
                locale,
                cm=item.countermeasure,
                kpi=item.kpi,
                overdue=item.overdue(today),
            )
            for item in group
        ]
        groups.append((sections("\n".join(lines)), len(group)))
    footer = context(render.message("countermeasures.footer", locale))

    def overflow(left: list[int]) -> Block:
        return context(render.message("countermeasures.more", locale, count=sum(left)))

    return Message(headline, fit_blocks([section(headline)], groups, [footer], overflow))
