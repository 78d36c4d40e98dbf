"""Block Kit building blocks shared by every surface: sections, context lines, and fitting long
answers into Slack's limits (50 blocks a message, 100 a modal, 3,000 characters a section).

Long text is split into more sections; whatever still does not fit is counted in a closing line
by the caller (`fit_blocks`' `overflow`), never dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, MarkdownTextObject, PlainTextObject, SectionBlock
from slack_sdk.models.views import View

MAX_BLOCKS = 50  # Slack's limit for a message
MODAL_MAX_BLOCKS = 100  # Slack's limit for a modal
# Slack allows 3,000 characters per section; packing stops a little short of it.
SECTION_TEXT_BUDGET = 2900


def modal(
    *,
    callback_id: str,
    title: str,
    submit: str,
    close: str,
    private_metadata: str,
    blocks: Sequence[Block | dict[str, Any]],
) -> View:
    """A form, checked against Slack's limits here rather than refused by Slack when opened."""
    view = View(
        type="modal",
        callback_id=callback_id,
        title=PlainTextObject(text=title),
        submit=PlainTextObject(text=submit),
        close=PlainTextObject(text=close),
        private_metadata=private_metadata,
        blocks=blocks,
    )
    view.validate_json()
    return view


def section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text))


def context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=text)])


def split_text(text: str, limit: int = SECTION_TEXT_BUDGET) -> list[str]:
    """Split at line ends into pieces of at most `limit` characters; a line longer than that
    (none of ours is) is cut into pieces rather than lost."""
    pieces: list[str] = []
    current = ""
    for line in text.strip().split("\n"):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            candidate = line
        current = candidate
    if current:
        pieces.append(current)
    return pieces


def sections(text: str) -> list[Block]:
    return [section(piece) for piece in split_text(text)]


def pack(
    entries: Sequence[str], max_sections: int, limit: int = SECTION_TEXT_BUDGET
) -> tuple[list[str], int]:
    """Entries (one per KPI) into at most `max_sections` section texts: one entry per section
    while there is room, several per section when there are many. Returns the texts and how
    many entries did not fit."""
    if max_sections <= 0:
        return [], len(entries)
    per_section = max(1, math.ceil(len(entries) / max_sections))
    texts: list[str] = []
    complete: list[int] = []  # after each text, how many entries it and those before hold whole
    current: list[str] = []
    started = 0  # entries started in `current`
    for index, entry in enumerate(entries):
        for number, piece in enumerate(split_text(entry, limit)):
            full = number == 0 and started >= per_section
            if current and (full or len("\n".join([*current, piece])) > limit):
                texts.append("\n".join(current))
                complete.append(index)
                current, started = [], 0
            current.append(piece)
            started += number == 0
    if current:
        texts.append("\n".join(current))
        complete.append(len(entries))
    if len(texts) <= max_sections:
        return texts, 0
    return texts[:max_sections], len(entries) - complete[max_sections - 1]


def fit_blocks(
    head: list[Block],
    groups: list[tuple[list[Block], int]],
    tail: list[Block],
    overflow: Callable[[list[int]], Block],
) -> list[dict[str, Any]]:
    """Head, as many whole groups as fit in MAX_BLOCKS, a line counting the groups left out
    (`overflow(weights of the groups left)`), then the tail."""
    total = len(head) + sum(len(blocks) for blocks, _ in groups) + len(tail)
    body: list[Block] = []
    left: list[int] = []
    if total <= MAX_BLOCKS:
        body = [block for blocks, _ in groups for block in blocks]
    else:
        room = MAX_BLOCKS - len(head) - len(tail) - 1
        for blocks, weight in groups:
            if not left and len(body) + len(blocks) <= room:
                body.extend(blocks)
            else:
                left.append(weight)
        body.append(overflow(left))
    return [block.to_dict() for block in [*head, *body, *tail]]
