"""What editing the plan says in Slack: the KPI form, refusals and confirmations (before → after).
Every word in templates/<locale>/messages/plan_edit.yaml."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from slack_sdk.models.blocks import (
    InputBlock,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    StaticSelectElement,
    UserSelectElement,
)
from slack_sdk.models.views import View

from bot import render
from bot.models import Cadence, Department, Direction, Kpi, KpiKind, Unit
from bot.plan.edit import DepartmentChange, KpiChange, PlanEditError, TargetChange, version_of
from bot.reports.service import plain_number
from handlers.blocks import modal, section

CALLBACK_ID = "kpi_edit_modal"
VALUE = "value"
FIELDS = ("name_ja", "name_en", "owner_user_id", "amber_pct", "red_pct")
_USER_FIELDS = {"owner_user_id", "head"}


def error_text(error: PlanEditError, locale: str) -> str:
    code = error.code
    if code.startswith("period_"):  # the same periods as /kpi report, the same words
        return render.message(f"report.error.{code}", locale, **error.params)
    if code.startswith("threshold_") and code != "threshold_not_a_number":  # as when importing a plan
        return render.message(f"plan.{code}", locale, **error.params)
    return render.message(f"plan_edit.error.{code}", locale, **error.params)


def target_confirmation(change: TargetChange, locale: str) -> str:
    return render.message("plan_edit.target_set", locale, change=change)


def _shown(name: str, value: Any, locale: str) -> str:
    if value is None or value == "":
        return render.message("plan_edit.none", locale)
    if name in _USER_FIELDS:
        return f"<@{value}>"
    if name == "channel":
        return f"<#{value}>"
    return render.mrkdwn_text(str(value))


def kpi_confirmation(change: KpiChange, locale: str) -> str:
    if not change.changes:
        return render.message("plan_edit.kpi_unchanged", locale, change=change)
    rows = [
        (
            render.message(f"plan_edit.field.{name}", locale),
            _shown(name, before, locale),
            _shown(name, after, locale),
        )
        for name, (before, after) in change.changes.items()
    ]
    return render.message("plan_edit.kpi_updated", locale, change=change, rows=rows)


def department_confirmation(change: DepartmentChange, locale: str) -> str:
    return render.message(
        "plan_edit.department_set",
        locale,
        change=change,
        label=render.message(f"plan_edit.field.{change.field}", locale),
        before=_shown(change.field, change.before, locale),
        after=_shown(change.field, change.after, locale),
    )


def kpi_form(kpi: Kpi, department: Department, channel_id: str, locale: str) -> View:
    """The form: names, owner, thresholds; its metadata carries the KPI's version."""

    def text_input(name: str, label: str, value: str, hint: str | None = None) -> InputBlock:
        return InputBlock(
            block_id=name,
            label=PlainTextObject(text=render.message(label, locale)),
            hint=None if hint is None else PlainTextObject(text=hint),
            element=PlainTextInputElement(action_id=VALUE, initial_value=value, max_length=200),
        )

    hint = render.message("plan_edit.form.threshold_hint", locale, kpi=kpi)
    return modal(
        callback_id=CALLBACK_ID,
        title=render.message("plan_edit.form.title", locale),
        submit=render.message("plan_edit.form.submit", locale),
        close=render.message("plan_edit.form.close", locale),
        private_metadata=json.dumps(
            {"kpi": kpi.id, "version": version_of(kpi), "channel": channel_id}, separators=(",", ":")
        ),
        blocks=[
            section(render.message("plan_edit.form.intro", locale, kpi=kpi, department=department)),
            text_input("name_ja", "plan_edit.form.name_ja", kpi.name_ja),
            text_input("name_en", "plan_edit.form.name_en", kpi.name_en),
            InputBlock(
                block_id="owner_user_id",
                optional=True,
                label=PlainTextObject(text=render.message("plan_edit.form.owner", locale)),
                element=UserSelectElement(action_id=VALUE, initial_user=kpi.owner_user_id),
            ),
            text_input("amber_pct", "plan_edit.form.amber", _number(kpi.amber_pct), hint),
            text_input("red_pct", "plan_edit.form.red", _number(kpi.red_pct), hint),
        ],
    )


TARGETS_CALLBACK_ID = "kpi_targets_modal"
PERIOD_PREFIX = "period:"


def targets_form(
    kpi: Kpi, department: Department, periods: list[Any], now: dict[str, Any], channel_id: str, locale: str
) -> View:
    """One input per period, with the target it has now; empty keeps it."""
    blocks: list[Any] = [
        section(render.message("plan_edit.targets.intro", locale, kpi=kpi, department=department))
    ]
    for period in periods:
        target = now.get(period.key)
        blocks.append(
            InputBlock(
                block_id=f"{PERIOD_PREFIX}{period.key}",
                optional=True,
                label=PlainTextObject(text=render.period_label(period, locale)),
                element=PlainTextInputElement(
                    action_id=VALUE,
                    initial_value=None if target is None else _target_input(target),
                    placeholder=PlainTextObject(text=render.message("plan_edit.targets.placeholder", locale)),
                ),
            )
        )
    return modal(
        callback_id=TARGETS_CALLBACK_ID,
        title=render.message("plan_edit.targets.title", locale),
        submit=render.message("plan_edit.form.submit", locale),
        close=render.message("plan_edit.form.close", locale),
        private_metadata=json.dumps({"kpi": kpi.id, "channel": channel_id}, separators=(",", ":")),
        blocks=blocks,
    )


def _target_input(target: Any) -> str:
    if target.is_range:
        return f"{plain_number(target.low)}-{plain_number(target.high)}"
    return plain_number(target.low)


def targets_confirmation(changes: list[TargetChange], kpi: Kpi, locale: str) -> str:
    if not changes:
        return render.message("plan_edit.targets.unchanged", locale, kpi=kpi)
    return "\n".join(target_confirmation(change, locale) for change in changes)


ADD_CALLBACK_ID = "kpi_add_modal"
_CHOICES = {
    "unit": [unit.value for unit in Unit],
    "direction": [direction.value for direction in Direction],
    "cadence": [cadence.value for cadence in Cadence],
    "kind": [kind.value for kind in KpiKind],
}


def add_form(department: Department, channel_id: str, locale: str) -> View:
    """The form for a new KPI in `department`: key, names, owner, unit, direction, cadence, kind, target."""

    def text_input(name: str, optional: bool = False, hint: bool = False) -> InputBlock:
        return InputBlock(
            block_id=name,
            optional=optional,
            label=PlainTextObject(text=render.message(f"plan_edit.add.{name}", locale)),
            hint=PlainTextObject(text=render.message(f"plan_edit.add.{name}_hint", locale)) if hint else None,
            element=PlainTextInputElement(action_id=VALUE, max_length=200),
        )

    def choice(name: str) -> InputBlock:
        options = [
            Option(value=value, text=render.message(f"plan_edit.add.{name}.{value}", locale))
            for value in _CHOICES[name]
        ]
        return InputBlock(
            block_id=name,
            label=PlainTextObject(text=render.message(f"plan_edit.add.{name}", locale)),
            element=StaticSelectElement(action_id=VALUE, options=options, initial_option=options[0]),
        )

    return modal(
        callback_id=ADD_CALLBACK_ID,
        title=render.message("plan_edit.add.title", locale),
        submit=render.message("plan_edit.form.submit", locale),
        close=render.message("plan_edit.form.close", locale),
        private_metadata=json.dumps(
            {"department": department.id, "channel": channel_id}, separators=(",", ":")
        ),
        blocks=[
            section(render.message("plan_edit.add.intro", locale, department=department)),
            text_input("key", hint=True),
            text_input("name_ja"),
            text_input("name_en"),
            InputBlock(
                block_id="owner_user_id",
                optional=True,
                label=PlainTextObject(text=render.message("plan_edit.form.owner", locale)),
                element=UserSelectElement(action_id=VALUE),
            ),
            choice("unit"),
            choice("direction"),
            choice("cadence"),
            choice("kind"),
            text_input("target", optional=True, hint=True),
        ],
    )


def added_confirmation(kpi: Kpi, department: Department, target: Any, locale: str) -> str:
    return render.message("plan_edit.added", locale, kpi=kpi, department=department, target=target)


def _number(value: Any) -> str:
    return plain_number(Decimal(value))
