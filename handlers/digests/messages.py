"""Digests as Block Kit messages: the words from templates/<locale>/digest/, the layout here.

A digest that does not fit one message (50 blocks, ~4,000 characters) continues in thread
replies; nothing is truncated.

The scorecard is a table block, with a native line chart of the KPIs that need attention, where
Slack allows them (at most 99 KPIs, every new block in the root message); the root message then
carries the same digest in today's mrkdwn sections as its fallback (handlers/blocks.WithFallback),
posted instead, in the same ledger claim, by a workspace that refuses the new blocks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import Block, DividerBlock, HeaderBlock, PlainTextObject

from bot import formats, render
from bot.digests.provenance import Mark
from bot.digests.service import SPARKLINE_PERIODS, Digest, DivisionSummary, on_streak, sparkline, trend
from bot.models import CountermeasureStatus
from bot.outbox import Message
from bot.scorecard import ScoreRow
from bot.scoring import Status, achievement_pct
from handlers.blocks import (
    CHART_LABEL_MAX,
    CHART_MAX_SERIES,
    CHARTS_PER_MESSAGE,
    MAX_BLOCKS,
    SECTION_TEXT_BUDGET,
    TABLE_MAX_ROWS,
    WithFallback,
    check_message,
    context,
    line_chart,
    sections,
    table,
    uses_new_blocks,
)

# Slack's advice is to keep a message's text well under 4,000 characters.
MAX_MESSAGE_CHARS = 3800
HEADER_MAX = 150


def digest_messages(digest: Digest, locale: str) -> list[Message]:
    """The root message first, then thread replies for whatever did not fit."""
    department = digest.department
    periods = sorted({row.period.key for row in digest.rows})
    head: list[Block] = [
        _header(render.template("digest/header.txt", locale, department=department, day=digest.day)),
        context(render.template("digest/overview.md", locale, digest=digest, periods=periods or ["—"])),
    ]
    if digest.goal is not None:
        head += sections(render.template("digest/goal.md", locale, goal=digest.goal))
    if not digest.rows:
        head += sections(render.message("digest.no_kpis", locale))
    texts = [_row_text(row, locale) for row in digest.rows]
    # The scorecard in mrkdwn, a line per KPI: today's rendering, the text fallback, and the table's notes.
    card_lines = [_row_line(text, locale, digest.marks.get(text.row.kpi.id or 0)) for text in texts]
    card: list[Block] = []
    results = len(digest.results)
    for kind, lines in (("result", card_lines[:results]), ("process", card_lines[results:])):
        if lines:
            card.append(DividerBlock())
            card += _titled(kind, lines, locale)
    if card:
        card.append(_chart_hint(digest, locale))
    tail: list[Block] = []
    if digest.factors:
        lines = [render.template("digest/factor.md", locale, factor=factor) for factor in digest.factors]
        tail += _titled("factors", lines, locale)
    if digest.countermeasures:
        tail += _titled(
            "countermeasures",
            [
                render.template("digest/countermeasure.md", locale, item=item, day=digest.day)
                for item in digest.countermeasures
            ],
            locale,
        )
    if digest.missing:
        tail += _titled(
            "missing",
            [render.template("digest/missing.md", locale, item=item) for item in digest.missing],
            locale,
        )
    fallback = render.message(
        "digest.fallback",
        locale,
        department=department.name(locale),
        green=digest.count(Status.GREEN),
        amber=digest.count(Status.AMBER),
        red=digest.count(Status.RED),
    )
    rich_card = _rich_scorecard(digest, locale, texts, card_lines)
    if rich_card is None:
        return split_messages([*head, *card, *tail], fallback, locale)
    rich = split_messages([*head, *rich_card, *tail], fallback, locale)
    if any(uses_new_blocks(message.blocks) for message in rich[1:]):
        # A reply cannot fall back on its own (its thread would read out of order): today's rendering.
        return split_messages([*head, *card, *tail], fallback, locale)
    root = rich[0]
    check_message(root.blocks)
    # The tail blocks the root holds; the replies after it are the same in both renderings.
    in_root = len(root.blocks) - len(head) - len(rich_card)
    text = "\n".join([fallback, *card_lines])
    return [
        WithFallback(
            text if len(text) <= MAX_MESSAGE_CHARS else fallback,
            root.blocks,
            fallback=split_messages([*head, *card, *tail[:in_root]], fallback, locale),
        ),
        *rich[1:],
    ]


TABLE_TEXT_BUDGET = MAX_MESSAGE_CHARS // 2  # the rest of the root (KGI, KFS, notes) needs room too
_COLUMNS = ("kpi", "actual", "target", "achievement", "trend", "status")
_ALIGN = ("left", "right", "right", "right", "left", "left")


def _rich_scorecard(
    digest: Digest, locale: str, texts: list[_RowText], lines: list[str]
) -> list[Block] | None:
    """The scorecard as one table (and the attention charts), or None where a table does not fit;
    `texts` and `lines` are the rows' words and mrkdwn lines, in the order of `digest.rows`."""
    rows = digest.rows
    if not rows or len(rows) + 1 > TABLE_MAX_ROWS:
        return None
    header = [render.message(f"digest.table.{column}", locale) for column in _COLUMNS]
    cells = [_cells(text, locale) for text in texts]
    # Cell text counts toward a message's reading budget as section text does: a table longer than
    # one message (60 KPIs with 150-character names) reads better as sections split into replies.
    if sum(len(cell) for row in [header, *cells] for cell in row) > TABLE_TEXT_BUDGET:
        return None
    blocks: list[Block] = [DividerBlock(), table(header, cells, _ALIGN)]
    # What a cell cannot say (a value from a system, a correction, a streak) in today's row lines.
    marked = [
        line
        for text, line in zip(texts, lines, strict=True)
        if digest.marks.get(text.row.kpi.id or 0) is not None or text.streak
    ]
    if marked:
        blocks += sections("\n".join([render.message("digest.table.notes", locale), *marked]))
    return [*blocks, *_attention_charts(rows, locale), _chart_hint(digest, locale)]


def _chart_hint(digest: Digest, locale: str) -> Block:
    """Where the PNG grid went: drawn on request by `/kpi chart`, no longer posted with every digest."""
    return context(render.message("digest.chart_hint", locale, department_key=digest.department.key))


# The templates' own filters, so a cell reads exactly like the row it replaces (bot/render.py
# owns the formats).
def _filter(name: str) -> Any:
    return render._environment().filters[name]


@dataclass(frozen=True)
class _RowText:
    """What a KPI's row line and its table cells both say, formatted once."""

    row: ScoreRow
    name: str
    emoji: str
    actual: str
    target: str  # "no target" in words where it has none
    arrow: str
    spark: str  # "" with no figure in the window
    streak: bool


def _row_text(row: ScoreRow, locale: str) -> _RowText:
    kpi, score = row.kpi, row.score
    unit = kpi.unit
    return _RowText(
        row,
        kpi.name(locale),
        _filter("status_emoji")(score.status),
        _filter("localized")(score.actual, unit, locale),
        _filter("localized_target")(score.target, unit, locale),
        render.message(f"digest.arrow.{trend(row) or 'none'}", locale),
        sparkline(row.history[-SPARKLINE_PERIODS:]),
        on_streak(row),
    )


def _cells(text: _RowText, locale: str) -> list[str]:
    """One KPI's cells, built in Python: a template call per row is the digest build's hot spot."""
    return [
        text.name,
        text.actual,
        text.target,
        _achievement_cell(text.row, locale),
        f"{text.arrow} {text.spark}".strip(),
        f"{text.emoji} {render.message(f'status.{text.row.score.status}', locale)}",
    ]


def _achievement_cell(row: ScoreRow, locale: str) -> str:
    """Under the 達成率 header a bare "61%"; a lower-is-better KPI says how far it is over its
    ceiling instead, since "79%" would read as cheaper than planned."""
    pct = row.score.achievement_pct
    if not row.score.target or pct is None:
        return "—"
    if row.kpi.direction.value == "lower":
        return _filter("attainment")(pct, row.kpi.direction, locale)
    return _filter("pct")(pct)


def _attention_charts(rows: list[ScoreRow], locale: str) -> list[Block]:
    """% of target over the reviewed window of the KPIs in red or amber, worst first: one line chart
    per cadence (weekly and monthly KPIs share no x-axis), a 100 % target line in each."""
    needing = sorted(
        (row for row in rows if row.score.status in (Status.RED, Status.AMBER)),
        key=lambda row: row.score.achievement_pct or 0,
    )
    by_cadence: dict[str, list[ScoreRow]] = {}
    for row in needing:
        by_cadence.setdefault(row.kpi.cadence.value, []).append(row)
    charts: list[Block] = []
    for cadence, chosen in sorted(by_cadence.items())[:CHARTS_PER_MESSAGE]:
        chosen = chosen[: CHART_MAX_SERIES - 1]  # one series is the target line
        periods = chosen[0].period.last(len(chosen[0].history))
        labels = [formats.axis_label(period, locale) for period in periods]
        values = [_achievements(row) for row in chosen]
        # Only the periods that have a figure: no axis stretched over periods nobody reported.
        shown = [i for i in range(len(labels)) if any(series[i] is not None for series in values)]
        names = _series_names([row.kpi.name(locale) for row in chosen])
        if not shown:
            continue
        series = [(name, [item[i] for i in shown]) for name, item in zip(names, values, strict=True)]
        target = render.message("digest.native_chart.target", locale)
        charts.append(
            line_chart(
                render.message(
                    "digest.native_chart.title",
                    locale,
                    cadence=render.message(f"digest.native_chart.cadence.{cadence}", locale),
                ),
                [labels[i] for i in shown],
                [(target, [100.0] * len(shown)), *series],
                y_label=render.message("digest.native_chart.y_label", locale),
            )
        )
    return charts


def _achievements(row: ScoreRow) -> list[float | None]:
    """Direction-aware % of target per period of the row's history (None: no figure or no target)."""
    out: list[float | None] = []
    for actual, target in zip(row.history, row.targets, strict=True):
        pct = None if actual is None or target is None else achievement_pct(actual, target, row.kpi.direction)
        out.append(None if pct is None else round(float(pct), 1))
    return out


def _series_names(names: list[str]) -> list[str]:
    """Legend names within Slack's 20 characters, unique (two long names may share a start)."""
    out: list[str] = []
    for name in names:
        short = name if len(name) <= CHART_LABEL_MAX else name[: CHART_LABEL_MAX - 1] + "…"
        number = 2
        while short in out:
            suffix = f" {number}"
            short = name[: CHART_LABEL_MAX - len(suffix) - 1] + "…" + suffix
            number += 1
        out.append(short)
    return out


def division_messages(summary: DivisionSummary, locale: str) -> list[Message]:
    """The division head's summary: one line per department, as a table where Slack allows it (with
    today's sections as its fallback, as a digest's scorecard), then the funnel's hand-offs."""
    head: list[Block] = [
        _header(render.template("digest/division_header.txt", locale, day=summary.day)),
    ]
    if summary.goal is not None:
        head += sections(render.template("digest/goal.md", locale, goal=summary.goal))
    head.append(DividerBlock())
    slipping = {digest.department.id: _slipping(digest) for digest in summary.digests}
    overdue = {digest.department.id: _overdue(digest, summary.day) for digest in summary.digests}
    lines = [
        render.template(
            "digest/division_row.md",
            locale,
            digest=digest,
            slipping=slipping[digest.department.id],
            overdue=overdue[digest.department.id],
        )
        for digest in summary.digests
    ]
    card = sections("\n".join(lines) or "—")
    tail: list[Block] = []
    if summary.funnel is not None:  # the hand-offs between departments
        tail += sections(render.template("digest/funnel.md", locale, funnel=summary.funnel))
    fallback = render.message("digest.division_fallback", locale, departments=len(summary.digests))
    plain = split_messages([*head, *card, *tail], fallback, locale)
    rich_card = _division_table(summary, slipping, overdue, locale)
    if rich_card is None:
        return plain
    rich = split_messages([*head, *rich_card, *tail], fallback, locale)
    if any(uses_new_blocks(message.blocks) for message in rich[1:]):
        return plain  # a reply cannot fall back on its own (as digest_messages)
    root = rich[0]
    check_message(root.blocks)
    in_root = len(root.blocks) - len(head) - len(rich_card)
    return [
        WithFallback(
            fallback,  # the notification: the division's rows are read in the message
            root.blocks,
            fallback=split_messages([*head, *card, *tail[:in_root]], fallback, locale),
        ),
        *rich[1:],
    ]


_DIVISION_COLUMNS = ("department", "achievement", "status", "kpis", "slipping", "overdue")
_DIVISION_ALIGN = ("left", "right", "left", "left", "left", "right")


def _division_table(
    summary: DivisionSummary,
    slipping: dict[int | None, list[ScoreRow]],
    overdue: dict[int | None, int],
    locale: str,
) -> list[Block] | None:
    """The departments as one table (average 達成率, worst status, KPIs by status, the KPIs that slip
    most, overdue countermeasures), or None where a table does not fit (as _rich_scorecard)."""
    digests = summary.digests
    if not digests or len(digests) + 1 > TABLE_MAX_ROWS:
        return None
    header = [render.message(f"digest.division_table.{column}", locale) for column in _DIVISION_COLUMNS]
    emoji, percent = _filter("status_emoji"), _filter("pct")

    def attainment(row: ScoreRow) -> str:
        return _filter("attainment")(row.score.achievement_pct, row.kpi.direction, locale)

    cells = []
    for digest in digests:
        counts = " ".join(
            f"{emoji(status)} {digest.count(status)}"
            for status in (Status.GREEN, Status.AMBER, Status.RED, Status.NO_DATA)
            if status is not Status.NO_DATA or digest.count(status)
        )
        worst_rows = slipping[digest.department.id]
        late = overdue[digest.department.id]
        cells.append(
            [
                digest.department.name(locale),
                percent(digest.achievement_pct) if digest.achievement_pct is not None else "—",
                f"{emoji(digest.status)} {render.message(f'status.{digest.status}', locale)}",
                counts,
                render.message(
                    "digest.division_table.slipping_cell",
                    locale,
                    items=[
                        # As the department lines say it: lower-is-better KPIs as over their ceiling.
                        f"{row.kpi.name(locale)} {attainment(row)}"
                        for row in worst_rows
                    ],
                ),
                str(late) if late else "",
            ]
        )
    if sum(len(cell) for row in [header, *cells] for cell in row) > TABLE_TEXT_BUDGET:
        return None
    return [table(header, cells, _DIVISION_ALIGN)]


def _slipping(digest: Digest) -> list[ScoreRow]:
    """The department's three KPIs furthest under target (red or amber), worst first."""
    return sorted(
        (row for row in digest.rows if row.score.status in (Status.RED, Status.AMBER)),
        key=lambda row: row.score.achievement_pct or 0,
    )[:3]


def _overdue(digest: Digest, day: dt.date) -> int:
    return sum(
        1
        for item in digest.countermeasures
        if item.countermeasure.due_date is not None
        and item.countermeasure.due_date < day
        and item.countermeasure.status in (CountermeasureStatus.PLANNED, CountermeasureStatus.DOING)
    )


def _header(text: str) -> HeaderBlock:
    text = text.strip()
    if len(text) > HEADER_MAX:
        text = text[: HEADER_MAX - 1] + "…"
    return HeaderBlock(text=PlainTextObject(text=text, emoji=True))


def _titled(kind: str, lines: list[str], locale: str) -> list[Block]:
    title = render.template("digest/section_title.md", locale, kind=kind).strip()
    return sections("\n".join([title, *(piece for line in lines for piece in _wrap(line))]))


_LIST_SEPARATORS = ("、", ", ")


def _wrap(line: str, limit: int = SECTION_TEXT_BUDGET) -> list[str]:
    """A line too long for one section (one owner's 100 unreported KPIs, a KFS with 60 slipping)
    broken after a list separator, so no KPI name is cut in two across sections or messages."""
    pieces = []
    while len(line) > limit:
        cuts = [found + len(sep) for sep in _LIST_SEPARATORS if (found := line.rfind(sep, 0, limit)) > 0]
        if not cuts:
            break  # nothing to break at: sections() cuts it, still without losing text
        cut = max(cuts)
        pieces.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    return [*pieces, line]


def _row_line(text: _RowText, locale: str, mark: Mark | None = None) -> str:
    row = text.row
    return render.template(
        "digest/row.md",
        locale,
        row=row,
        text=text,
        # The line's own: how far from target in words (the cell says a bare %), the period it reviews.
        attainment=_filter("attainment")(row.score.achievement_pct, row.kpi.direction, locale),
        period=_filter("period_label")(row.period, locale),
        mark=mark,
    ).strip()


def split_messages(blocks: list[Block], fallback: str, locale: str) -> list[Message]:
    """Blocks into messages of at most MAX_BLOCKS blocks and MAX_MESSAGE_CHARS characters."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for block in blocks:
        data = block.to_dict()
        length = len(_text_of(data))
        # One block is kept free for the "continued" line of a thread reply.
        if chunks[-1] and (len(chunks[-1]) >= MAX_BLOCKS - 1 or size + length > MAX_MESSAGE_CHARS):
            chunks.append([])
            size = 0
        chunks[-1].append(data)
        size += length
    if len(chunks) == 1:
        return [Message(fallback, chunks[0])]
    messages = [Message(fallback, chunks[0])]
    for number, chunk in enumerate(chunks[1:], start=2):
        note = render.message("digest.continued", locale, part=number, parts=len(chunks))
        messages.append(Message(f"{fallback} {note}", [context(note).to_dict(), *chunk]))
    return messages


def _text_of(block: dict[str, Any]) -> str:
    parts = []
    if block.get("type") == "table":
        parts += [cell.get("text", "") for row in block["rows"] for cell in row]
    if "text" in block:
        parts.append(block["text"].get("text", ""))
    for element in block.get("elements", []):
        if isinstance(element, dict) and "text" in element:
            parts.append(
                element["text"] if isinstance(element["text"], str) else element["text"].get("text", "")
            )
    return "".join(parts)


def as_text(messages: list[Message]) -> str:
    """A terminal rendering of messages (the demo, `kpibot digest --dry-run`). A terminal renders
    no table or chart: a message with them is shown as its fallback, as such a client would get it."""
    messages = [part for message in messages for part in _plain(message)]
    out: list[str] = []
    for index, message in enumerate(messages):
        if index:
            out.append("  ↳ (thread)")
        if not message.blocks:
            out.append(message.text)
        for block in message.blocks:
            text = _text_of(block)
            if block["type"] == "header":
                out.append(f"━━ {text} ━━")
            elif block["type"] == "divider":
                out.append("─" * 40)
            elif text:
                out.append(text)
    return "\n".join(out)


def _plain(message: Message) -> list[Message]:
    return message.fallback if isinstance(message, WithFallback) else [message]
