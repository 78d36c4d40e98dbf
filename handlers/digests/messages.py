"""Digests as Block Kit messages: the words from templates/<locale>/digest/, the layout here.

A digest that does not fit one message (50 blocks, ~4,000 characters) continues in thread
replies; nothing is truncated.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import Block, DividerBlock, HeaderBlock, PlainTextObject

from bot import render
from bot.digests.provenance import Mark
from bot.digests.service import Digest, DivisionSummary, on_streak, sparkline, trend
from bot.models import CountermeasureStatus
from bot.outbox import Message
from bot.scorecard import ScoreRow
from bot.scoring import Status
from handlers.blocks import MAX_BLOCKS, SECTION_TEXT_BUDGET, context, sections

# Slack's advice is to keep a message's text well under 4,000 characters.
MAX_MESSAGE_CHARS = 3800
HEADER_MAX = 150


def digest_messages(digest: Digest, locale: str) -> list[Message]:
    """The root message first, then thread replies for whatever did not fit."""
    department = digest.department
    periods = sorted({row.period.key for row in digest.rows})
    blocks: list[Block] = [
        _header(render.template("digest/header.txt", locale, department=department, day=digest.day)),
        context(render.template("digest/overview.md", locale, digest=digest, periods=periods or ["—"])),
    ]
    if digest.goal is not None:
        blocks += sections(render.template("digest/goal.md", locale, goal=digest.goal))
    if not digest.rows:
        blocks += sections(render.message("digest.no_kpis", locale))
    for kind, rows in (("result", digest.results), ("process", digest.processes)):
        if rows:
            blocks.append(DividerBlock())
            lines = [_row_line(row, locale, digest.marks.get(row.kpi.id or 0)) for row in rows]
            blocks += _titled(kind, lines, locale)
    if digest.factors:
        lines = [render.template("digest/factor.md", locale, factor=factor) for factor in digest.factors]
        blocks += _titled("factors", lines, locale)
    if digest.countermeasures:
        blocks += _titled(
            "countermeasures",
            [
                render.template("digest/countermeasure.md", locale, item=item, day=digest.day)
                for item in digest.countermeasures
            ],
            locale,
        )
    if digest.missing:
        blocks += _titled(
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
    return split_messages(blocks, fallback, locale)


def division_messages(summary: DivisionSummary, locale: str) -> list[Message]:
    blocks: list[Block] = [
        _header(render.template("digest/division_header.txt", locale, day=summary.day)),
    ]
    if summary.goal is not None:
        blocks += sections(render.template("digest/goal.md", locale, goal=summary.goal))
    blocks.append(DividerBlock())
    lines = []
    for digest in summary.digests:
        slipping = sorted(
            (row for row in digest.rows if row.score.status in (Status.RED, Status.AMBER)),
            key=lambda row: row.score.achievement_pct or 0,
        )[:3]
        overdue = sum(
            1
            for item in digest.countermeasures
            if item.countermeasure.due_date is not None
            and item.countermeasure.due_date < summary.day
            and item.countermeasure.status in (CountermeasureStatus.PLANNED, CountermeasureStatus.DOING)
        )
        lines.append(
            render.template(
                "digest/division_row.md", locale, digest=digest, slipping=slipping, overdue=overdue
            )
        )
    blocks += sections("\n".join(lines) or "—")
    if summary.funnel is not None:  # the hand-offs between departments
        blocks += sections(render.template("digest/funnel.md", locale, funnel=summary.funnel))
    fallback = render.message("digest.division_fallback", locale, departments=len(summary.digests))
    return split_messages(blocks, fallback, locale)


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


def _row_line(row: ScoreRow, locale: str, mark: Mark | None = None) -> str:
    arrow = render.message(f"digest.arrow.{trend(row) or 'none'}", locale)
    spark = sparkline(row.history[-6:]) or "·"
    streak = on_streak(row)
    return render.template(
        "digest/row.md", locale, row=row, arrow=arrow, spark=spark, streak=streak, mark=mark
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
    if "text" in block:
        parts.append(block["text"].get("text", ""))
    for element in block.get("elements", []):
        if isinstance(element, dict) and "text" in element:
            parts.append(
                element["text"] if isinstance(element["text"], str) else element["text"].get("text", "")
            )
    return "".join(parts)


def as_text(messages: list[Message]) -> str:
    """A terminal rendering of messages (the demo, `kpibot digest --dry-run`)."""
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
