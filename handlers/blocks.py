"""Block Kit building blocks shared by every surface: sections, context lines, and fitting long
answers into Slack's limits (50 blocks a message, 100 a modal, 3,000 characters a section).

Long text is split into more sections; whatever still does not fit is counted in a closing line
by the caller (`fit_blocks`' `overflow`), never dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
    TableBlock,
    TableBlockColumnSettings,
)
from slack_sdk.models.views import View

from bot.outbox import Message

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


# -- blocks Slack added lately: tables and native charts ---------------------------------------------
# Documented limits (docs.slack.dev/reference/block-kit/blocks/table-block and
# …/data-visualization-block), checked here because Slack answers `invalid_blocks` for a payload
# over any of them, and slack_sdk has no model for data_visualization (nor checks a table's size).
TABLE_MAX_ROWS = 100
TABLE_MAX_CELLS = 20  # per row, and column settings
TABLES_PER_MESSAGE = 1
CHART_TITLE_MAX = 50
CHART_AXIS_LABEL_MAX = 50
CHART_LABEL_MAX = 20  # a series name, a category, a data point's label
CHART_MAX_SERIES = 6
CHART_MAX_POINTS = 20  # per series; categories too
CHARTS_PER_MESSAGE = 2
CHART_TYPES = ("line", "bar", "area")  # pie has segments, not series: kpibot draws none
# What a workspace (or a client) may not know yet: a message carrying them has a fallback.
NEW_BLOCK_TYPES = frozenset({TableBlock.type, "data_visualization"})


class BlockLimitError(ValueError):
    """A payload Slack would refuse: a caller's bug, found before anything is posted."""


@dataclass
class WithFallback(Message):
    """A message with blocks Slack may refuse (NEW_BLOCK_TYPES), and the same content in the blocks
    every workspace renders: `fallback`, the messages to post instead (the first in the message's
    place, the others as replies in its thread). handlers/poster.py switches, in the same claim."""

    fallback: list[Message] = field(default_factory=list)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> TableBlock:
    """A table block of plain-text cells: a header row, then `rows`; `align` per column
    ("left", "center", "right")."""
    every = [list(header), *(list(row) for row in rows)]
    if len(every) > TABLE_MAX_ROWS:
        raise BlockLimitError(f"a table holds at most {TABLE_MAX_ROWS} rows, not {len(every)}")
    for row in every:
        if len(row) != len(header) or len(row) > TABLE_MAX_CELLS:
            raise BlockLimitError(f"a table row has {len(header)} ≤ {TABLE_MAX_CELLS} cells, not {len(row)}")
    if len(align) != len(header) or any(side not in ("left", "center", "right") for side in align):
        raise BlockLimitError(f"one alignment per column, left/center/right: {list(align)}")
    block = TableBlock(
        # Slack refuses an empty cell: a dash says "nothing here" as the digest's text does.
        rows=[[{"type": "raw_text", "text": cell or "—"} for cell in row] for row in every],
        column_settings=[TableBlockColumnSettings(align=side) for side in align],
    )
    block.validate_json()
    return block


class DataVisualizationBlock(Block):
    """Slack's native chart (no slack_sdk model yet): checked against the documented limits."""

    type = "data_visualization"

    @property
    def attributes(self) -> set[str]:  # type: ignore[override]
        return super().attributes.union({"title", "chart"})

    def __init__(self, *, title: str, chart: dict[str, Any], block_id: str | None = None) -> None:
        super().__init__(type=self.type, block_id=block_id)
        self.title = title
        self.chart = chart

    def validate_json(self) -> None:
        super().validate_json()
        # Not self.to_dict(): it validates first, and would come back here.
        check_chart({"type": self.type, "title": self.title, "chart": self.chart})


def check_chart(block: dict[str, Any]) -> None:
    """A data_visualization block (as sent) within Slack's documented limits, else BlockLimitError."""
    # The problems are formatted only when found: a digest run checks thousands of valid points.
    title, chart = block.get("title") or "", block.get("chart") or {}
    _check(0 < len(title) <= CHART_TITLE_MAX, "chart title of 1-{} characters: {!r}", CHART_TITLE_MAX, title)
    _check(chart.get("type") in CHART_TYPES, "chart type one of {}: {!r}", CHART_TYPES, chart.get("type"))
    axis, series = chart.get("axis_config") or {}, chart.get("series") or []
    categories = axis.get("categories") or []
    _check(
        0 < len(categories) <= CHART_MAX_POINTS, "1-{} categories, not {}", CHART_MAX_POINTS, len(categories)
    )
    known = set(categories)
    _check(len(known) == len(categories), "categories are unique: {}", categories)
    for label in categories:
        _check(0 < len(label) <= CHART_LABEL_MAX, "category of 1-{} characters: {!r}", CHART_LABEL_MAX, label)
    for name in ("x_label", "y_label"):
        _check(len(axis.get(name) or "") <= CHART_AXIS_LABEL_MAX, "{} over {}", name, CHART_AXIS_LABEL_MAX)
    _check(0 < len(series) <= CHART_MAX_SERIES, "1-{} series, not {}", CHART_MAX_SERIES, len(series))
    names = [item.get("name") or "" for item in series]
    _check(len(set(names)) == len(names), "series names are unique: {}", names)
    for item in series:
        name, data = item.get("name") or "", item.get("data") or []
        _check(
            0 < len(name) <= CHART_LABEL_MAX, "series name of 1-{} characters: {!r}", CHART_LABEL_MAX, name
        )
        _check(
            0 < len(data) <= CHART_MAX_POINTS, "{!r}: 1-{} points, not {}", name, CHART_MAX_POINTS, len(data)
        )
        labels = [point.get("label") for point in data]
        strays = [label for label in labels if label not in known]
        _check(not strays, "{!r}: {!r} is not a category", name, *strays[:1])
        values = [point.get("value") for point in data]
        odd = [value for value in values if not _finite(value)]
        _check(not odd, "{!r}: a finite number, not {!r}", name, *odd[:1])


def line_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    y_label: str | None = None,
) -> DataVisualizationBlock:
    """A native line chart: each series a value (or None: not drawn, never made up) per category."""
    data = []
    for name, values in series:
        if len(values) != len(categories):
            raise BlockLimitError(f"{name!r}: {len(values)} values for {len(categories)} categories")
        points = [
            {"label": label, "value": value}
            for label, value in zip(categories, values, strict=True)
            if value is not None
        ]
        data.append({"name": name, "data": points})
    axis: dict[str, Any] = {"categories": list(categories)}
    if y_label:
        axis["y_label"] = y_label
    block = DataVisualizationBlock(title=title, chart={"type": "line", "series": data, "axis_config": axis})
    block.validate_json()
    return block


def check_message(blocks: Sequence[dict[str, Any]]) -> None:
    """One message's blocks within the limits Slack sets per message, else BlockLimitError."""
    kinds = [block.get("type") for block in blocks]
    _check(len(blocks) <= MAX_BLOCKS, "at most {} blocks in a message, not {}", MAX_BLOCKS, len(blocks))
    tables, charts = kinds.count(TableBlock.type), kinds.count(DataVisualizationBlock.type)
    _check(tables <= TABLES_PER_MESSAGE, "at most {} table in a message, not {}", TABLES_PER_MESSAGE, tables)
    _check(charts <= CHARTS_PER_MESSAGE, "at most {} charts in a message, not {}", CHARTS_PER_MESSAGE, charts)
    for block in blocks:
        if block.get("type") == DataVisualizationBlock.type:
            check_chart(block)


def uses_new_blocks(blocks: Sequence[dict[str, Any]]) -> bool:
    return any(block.get("type") in NEW_BLOCK_TYPES for block in blocks)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(condition: bool, problem: str, *details: object) -> None:
    """`problem` is a str.format pattern, filled with `details` only when the check fails."""
    if not condition:
        raise BlockLimitError(problem.format(*details))
