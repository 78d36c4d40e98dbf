"""Alerts as Block Kit messages: the words from templates/<locale>/alerts/ and
templates/<locale>/messages/alerts.yaml, the layout here. This module is the
`bot.alerts.flows.AlertMessages` the edge passes to the flows.

One alert is one message (what, how far off, why, who should act; buttons). Many alerts raised
at once in one channel are one grouped message listing them, each with its buttons, continued in
thread replies when they do not fit; nothing is truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, PlainTextObject

from bot import render
from bot.alerts.service import AlertView
from bot.countermeasures.playbooks import playbooks_of
from bot.funnel.service import Funnel, HandOff
from bot.models import AlertReason, AlertStatus, Department, Severity
from bot.outbox import Message
from handlers.blocks import MAX_BLOCKS, context, section, sections
from handlers.digests.messages import MAX_MESSAGE_CHARS

ACTION_COUNTERMEASURE = "alert_log_countermeasure"
ACTION_ACKNOWLEDGE = "alert_acknowledge"
ACTION_ADOPT = "alert_adopt_playbook"  # value "<alert id>:<playbook index>": logs it in one click
ACTION_ADOPT_EDIT = "alert_adopt_playbook_edit"  # the same value: the countermeasure form, prefilled
SEVERITY_EMOJI = {Severity.RED: "🔴", Severity.AMBER: "🟡", Severity.MISSING: "⚠️"}
RESOLVED_EMOJI = "✅"


def emoji(view: AlertView) -> str:
    if view.resolved:
        return RESOLVED_EMOJI
    return SEVERITY_EMOJI[view.alert.severity]


def severity_word(severity: Severity, locale: str) -> str:
    return render.message(f"alert.severity.{severity.value}", locale)


def _context(view: AlertView, locale: str) -> dict[str, Any]:
    return {"v": view, "emoji": emoji(view), "previous": view.period.previous()}


def line(view: AlertView, locale: str) -> str:
    """One alert in one line: a grouped message's entry, and a single alert's notification text."""
    return render.template("alerts/line.md", locale, **_context(view, locale)).strip()


def _state(view: AlertView, locale: str) -> str:
    alert = view.alert
    if alert.status is AlertStatus.RESOLVED:
        return render.message("alert.state.resolved", locale)
    if alert.status is AlertStatus.ACKNOWLEDGED:
        return render.message("alert.state.acknowledged", locale, user=alert.acknowledged_by)
    return render.message("alert.state.open", locale, severity=severity_word(alert.severity, locale))


def _buttons(view: AlertView, locale: str) -> list[Block]:
    alert = view.alert
    if alert.status is AlertStatus.RESOLVED:
        return []
    elements = [
        ButtonElement(
            text=PlainTextObject(text=render.message("alert.button.countermeasure", locale), emoji=True),
            action_id=ACTION_COUNTERMEASURE,
            value=str(alert.id),
            style="primary",
        )
    ]
    if alert.status is AlertStatus.OPEN:
        elements.append(
            ButtonElement(
                text=PlainTextObject(text=render.message("alert.button.acknowledge", locale), emoji=True),
                action_id=ACTION_ACKNOWLEDGE,
                value=str(alert.id),
            )
        )
    return [ActionsBlock(block_id=f"alert-{alert.id}", elements=elements)]


def _playbooks(view: AlertView, locale: str) -> list[Block]:
    """The countermeasures agreed in advance for this KPI, each with Adopt (one click) and
    Edit first (the countermeasure form, prefilled)."""
    books = playbooks_of(view.kpi)
    if not books or view.resolved or view.alert.reason is AlertReason.MISSING:
        return []
    blocks: list[Block] = [context(render.message("alert.playbook.title", locale))]
    for index, book in enumerate(books):
        value = f"{view.alert.id}:{index}"
        blocks.append(
            section(
                render.message(
                    "alert.playbook.line",
                    locale,
                    text=render.mrkdwn_text(book.text_for(locale)),
                    owner=book.owner_for(view.kpi),
                    days=book.due_days,
                )
            )
        )
        blocks.append(
            ActionsBlock(
                block_id=f"playbook-{value}",
                elements=[
                    ButtonElement(
                        text=PlainTextObject(text=render.message("alert.playbook.adopt", locale), emoji=True),
                        action_id=ACTION_ADOPT,
                        value=value,
                    ),
                    ButtonElement(
                        text=PlainTextObject(text=render.message("alert.playbook.edit", locale), emoji=True),
                        action_id=ACTION_ADOPT_EDIT,
                        value=value,
                    ),
                ],
            )
        )
    return blocks


def alert_message(view: AlertView) -> Message:
    """A single alert: the root of its discussion thread."""
    locale = view.locale
    blocks: list[Block] = [
        *sections(render.template("alerts/body.md", locale, **_context(view, locale))),
        context(_state(view, locale)),
        *_buttons(view, locale),
        *_playbooks(view, locale),
    ]
    return Message(line(view, locale), [block.to_dict() for block in blocks])


# -- many alerts at once ---------------------------------------------------------------------------


def _entry(view: AlertView, locale: str) -> list[Block]:
    return [section(line(view, locale)), *_buttons(view, locale), *_playbooks(view, locale)]


def _size(blocks: Sequence[Block]) -> int:
    total = 0
    for block in blocks:
        data = block.to_dict()
        if "text" in data:
            total += len(data["text"].get("text", ""))
        total += sum(
            len(e.get("text", "")) for e in data.get("elements", []) if isinstance(e.get("text"), str)
        )
    return total


def _group_head(group: Sequence[AlertView], locale: str) -> list[Block]:
    open_ = [v for v in group if v.alert.status is not AlertStatus.RESOLVED]
    names = {v.department.id: v.department.name(locale) for v in group}
    header = render.message(
        "alert.group.header",
        locale,
        count=len(group),
        departments=("、" if locale == "ja" else ", ").join(names.values()),
        red=sum(v.alert.severity is Severity.RED for v in open_),
        amber=sum(v.alert.severity is Severity.AMBER for v in open_),
        missing=sum(v.alert.severity is Severity.MISSING for v in open_),
        resolved=len(group) - len(open_),
    )
    return [section(header), context(render.message("alert.group.hint", locale))]


def _group_fallback(group: Sequence[AlertView], locale: str) -> str:
    names = {v.department.id: v.department.name(locale) for v in group}
    return render.message(
        "alert.group.fallback",
        locale,
        count=len(group),
        departments=("、" if locale == "ja" else ", ").join(names.values()),
    )


def group_part(
    shown: Sequence[AlertView], group: Sequence[AlertView], part: int, parts: int, locale: str
) -> Message:
    """Message `part` (1 = the root) of a grouped alert message listing `shown` out of `group`."""
    fallback = _group_fallback(group, locale)
    if part == 1:
        head = _group_head(group, locale)
    else:
        note = render.message("alert.group.continued", locale, part=part, parts=parts)
        head = [context(note)]
        fallback = f"{fallback} {note}"
    blocks = [*head, *(block for view in shown for block in _entry(view, locale))]
    return Message(fallback, [block.to_dict() for block in blocks])


def group_messages(views: Sequence[AlertView], locale: str) -> list[tuple[Message, list[AlertView]]]:
    """Alerts raised together in one channel: one root listing them, continued in thread replies
    (at most MAX_BLOCKS blocks and MAX_MESSAGE_CHARS characters each). Each message comes with
    the alerts it lists, so each alert knows which message to update later."""
    group = sorted(views, key=lambda view: view.sort_key)
    chunks: list[list[AlertView]] = [[]]
    used_blocks, used_chars = len(_group_head(group, locale)), _size(_group_head(group, locale))
    for view in group:
        entry = _entry(view, locale)
        if chunks[-1] and (
            used_blocks + len(entry) > MAX_BLOCKS or used_chars + _size(entry) > MAX_MESSAGE_CHARS
        ):
            chunks.append([])
            used_blocks, used_chars = 1, 40  # a reply's "continued" line
        chunks[-1].append(view)
        used_blocks += len(entry)
        used_chars += _size(entry)
    return [
        (group_part(chunk, group, number, len(chunks), locale), chunk)
        for number, chunk in enumerate(chunks, start=1)
    ]


# -- thread notes ----------------------------------------------------------------------------------


def note(event: str, view: AlertView, before: Severity | None = None) -> str:
    """What changed, said in the alert's thread: "changed", "reopened", "resolved", "acknowledged",
    "streak" (escalated to the head)."""
    locale, alert = view.locale, view.alert
    name = view.kpi.name(locale)
    pct = None if alert.achievement_pct is None else Decimal(alert.achievement_pct)
    if event == "changed":
        assert before is not None
        return render.message(
            "alert.note.changed",
            locale,
            kpi=name,
            before_emoji=SEVERITY_EMOJI[before],
            after_emoji=SEVERITY_EMOJI[alert.severity],
            before=severity_word(before, locale),
            after=severity_word(alert.severity, locale),
            pct=pct,
            direction=view.kpi.direction,
        )
    if event == "reopened":
        return render.message(
            "alert.note.reopened",
            locale,
            kpi=name,
            emoji=SEVERITY_EMOJI[alert.severity],
            severity=severity_word(alert.severity, locale),
            pct=pct,
            direction=view.kpi.direction,
        )
    if event == "streak":
        return render.message(
            "alert.note.streak",
            locale,
            kpi=name,
            count=view.kpi.streak,
            pct=pct,
            direction=view.kpi.direction,
            head=view.department.head_user_id,
        )
    if event == "acknowledged":
        return render.message("alert.note.acknowledged", locale, kpi=name, user=alert.acknowledged_by)
    return render.message("alert.note.resolved", locale, kpi=name)


# -- the funnel's own alert (bot.funnel.flows) -----------------------------------------------------


def _funnel_words(hand_off: HandOff, funnel: Funnel, locale: str) -> dict[str, Any]:
    both = (hand_off.before.department.head_user_id, hand_off.after.department.head_user_id)
    heads = list(dict.fromkeys(head for head in both if head))
    return {
        "before": hand_off.before.kpi.name(locale),
        "after": hand_off.after.kpi.name(locale),
        "from_department": hand_off.before.department.name(locale),
        "to_department": hand_off.after.department.name(locale),
        "period": render.period_label(funnel.period, locale),
        "actual": hand_off.actual_pct,
        "planned": hand_off.planned_pct,
        "vs_plan": hand_off.vs_plan_pct,
        "leak": hand_off.leak_pct,
        "before_value": render.localized(hand_off.before.actual, hand_off.before.kpi.unit, locale),
        "after_value": render.localized(hand_off.after.actual, hand_off.after.kpi.unit, locale),
        "heads": heads,
    }


def funnel_alert(hand_off: HandOff, funnel: Funnel, division: Department) -> Message:
    """A leaking hand-off, in the division channel: both stages, the conversion against plan, and
    the heads of both departments (once when one department hands off to itself)."""
    locale = division.locale
    words = _funnel_words(hand_off, funnel, locale)
    blocks: list[Block] = [
        section(render.message("alert.funnel.body", locale, **words)),
        context(render.message("alert.funnel.hint", locale, **words)),
    ]
    return Message(render.message("alert.funnel.fallback", locale, **words), [b.to_dict() for b in blocks])


def funnel_resolved(hand_off: HandOff, funnel: Funnel, division: Department) -> Message:
    """The hand-off converts at or past its threshold again: said in its alert's thread."""
    return Message(
        render.message(
            "alert.funnel.resolved", division.locale, **_funnel_words(hand_off, funnel, division.locale)
        )
    )
