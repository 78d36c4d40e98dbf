"""Block Kit and mrkdwn drawn as HTML the way Slack shows them: the preview's renderer.

Only what kpibot sends is drawn, but all of it: headers, sections (text, fields, a button), context
lines, dividers, actions, table blocks as tables, data_visualization blocks as inline SVG line charts,
and in mrkdwn *bold*, _italic_, ~strike~, `code`, links, quotes, mentions shown by name and emoji
shortcodes as emoji. The status dots (🟢🟡🔴⚪) are drawn by CSS: they carry the meaning, and must
not turn into boxes in a browser without an emoji font.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The shortcodes kpibot's templates use (grep templates for `:[a-z_]+:`), and a few Slack regulars.
EMOJI = {
    "alarm_clock": "⏰",
    "bar_chart": "📊",
    "chart_with_upwards_trend": "📈",
    "chart_with_downwards_trend": "📉",
    "checkered_flag": "🏁",
    "clipboard": "📋",
    "dart": "🎯",
    "eyes": "👀",
    "file_cabinet": "🗄️",
    "heavy_check_mark": "✔️",
    "heavy_multiplication_x": "✖️",
    "heavy_plus_sign": "➕",
    "hourglass_flowing_sand": "⏳",
    "inbox_tray": "📥",
    "large_green_circle": "🟢",
    "large_yellow_circle": "🟡",
    "red_circle": "🔴",
    "white_circle": "⚪",
    "memo": "📝",
    "office": "🏢",
    "repeat": "🔁",
    "rotating_light": "🚨",
    "runner": "🏃",
    "satellite_antenna": "📡",
    "spiral_calendar_pad": "🗓️",
    "tada": "🎉",
    "twisted_rightwards_arrows": "🔀",
    "warning": "⚠️",
    "wave": "👋",
    "white_check_mark": "✅",
    "x": "❌",
}
DOTS = {"🟢": "green", "🟡": "amber", "🔴": "red", "⚪": "none"}
# Slack's chart palette is its own; these are distinct on white and for the common colour blindness.
PALETTE = ["#9e9e9e", "#1264a3", "#e01e5a", "#2eb67d", "#ecb22e", "#7c3085"]


@dataclass(frozen=True)
class Names:
    """What Slack would show for an ID: `users` and `channels` by ID; an unknown ID stays as it is."""

    users: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, str] = field(default_factory=dict)

    def user(self, user_id: str) -> str:
        return self.users.get(user_id, user_id)

    def channel(self, channel_id: str) -> str:
        return self.channels.get(channel_id, channel_id)


_TOKEN = re.compile(r"<([^<>\n]+)>")
_SHORTCODE = re.compile(r":([a-z0-9_+-]+):")
_INLINE = [
    (re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])"), r"<b>\1</b>"),
    (re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])"), r"<i>\1</i>"),
    (re.compile(r"(?<![\w~])~([^~\n]+)~(?![\w~])"), r"<s>\1</s>"),
]


def emoji(text: str) -> str:
    """Shortcodes as emoji (an unknown one is left as typed, as Slack shows it)."""
    return _SHORTCODE.sub(lambda m: EMOJI.get(m[1], m[0]), text)


def dots(escaped: str) -> str:
    for char, status in DOTS.items():
        escaped = escaped.replace(char, f'<span class="dot {status}" role="img" aria-label="{char}"></span>')
    return escaped


def plain(text: str) -> str:
    """plain_text as HTML: escaped, emoji and dots drawn."""
    return dots(html.escape(emoji(text), quote=False))


def mrkdwn(text: str, names: Names) -> str:
    """One mrkdwn text as HTML: lines starting with `>` grouped into quotes."""
    out: list[str] = []
    quote: list[str] = []
    for line in text.split("\n"):
        if line.startswith(">"):
            quote.append(_line(line[1:].removeprefix(" "), names))
            continue
        if quote:
            out.append("<blockquote>" + "<br>".join(quote) + "</blockquote>")
            quote = []
        out.append(_line(line, names) + "<br>")
    if quote:
        out.append("<blockquote>" + "<br>".join(quote) + "</blockquote>")
    joined = "".join(out)
    return joined.removesuffix("<br>")


def _line(line: str, names: Names) -> str:
    pieces: list[str] = []
    at = 0
    for match in _TOKEN.finditer(line):
        pieces.append(_styled(line[at : match.start()]))
        pieces.append(_token(match[1], names))
        at = match.end()
    pieces.append(_styled(line[at:]))
    return "".join(pieces)


def _styled(text: str) -> str:
    # Code spans first, kept apart so that nothing inside them is styled.
    parts = re.split(r"`([^`\n]+)`", text)
    out = []
    for index, part in enumerate(parts):
        escaped = html.escape(part, quote=False)
        if index % 2:
            out.append(f"<code>{escaped}</code>")
            continue
        escaped = emoji(escaped)
        for pattern, replacement in _INLINE:
            escaped = pattern.sub(replacement, escaped)
        out.append(dots(escaped))
    return "".join(out)


def _token(token: str, names: Names) -> str:
    target, _, label = token.partition("|")
    if target.startswith("@"):
        return f'<span class="mention">@{html.escape(names.user(target[1:]))}</span>'
    if target.startswith("#"):
        name = label or names.channel(target[1:])
        return f'<span class="mention">#{html.escape(name)}</span>'
    if target.startswith("!"):
        special = target[1:].split("^")[0]
        return f'<span class="mention">@{html.escape(label or special)}</span>'
    if target.startswith(("http://", "https://", "mailto:")):
        shown = _styled(label) if label else html.escape(target)
        return f'<a href="{html.escape(target)}">{shown}</a>'
    return html.escape(f"<{token}>")


def text_object(obj: Mapping[str, Any] | None, names: Names) -> str:
    if not obj:
        return ""
    if obj.get("type") == "mrkdwn":
        return mrkdwn(obj.get("text", ""), names)
    return plain(obj.get("text", ""))


def block(item: Mapping[str, Any], names: Names) -> str:
    """One block as HTML."""
    kind = item.get("type")
    if kind == "header":
        return f'<div class="header">{text_object(item.get("text"), names)}</div>'
    if kind == "divider":
        return "<hr>"
    if kind == "context":
        return f'<div class="context">{" ".join(_element(e, names) for e in item.get("elements", []))}</div>'
    if kind == "section":
        return _section(item, names)
    if kind == "actions":
        return f'<div class="actions">{"".join(_element(e, names) for e in item.get("elements", []))}</div>'
    if kind == "table":
        return table(item, names)
    if kind == "data_visualization":
        return line_chart_svg(item)
    if kind == "image":
        alt = html.escape(item.get("alt_text", ""))
        return (
            f'<figure class="image"><img alt="{alt}" src="{html.escape(item.get("image_url", ""))}"></figure>'
        )
    if kind == "rich_text":
        return f'<div class="rich">{_rich(item.get("elements", []), names)}</div>'
    return f'<pre class="unknown">{html.escape(str(dict(item)))}</pre>'


def blocks(items: Sequence[Mapping[str, Any]], names: Names) -> list[str]:
    return [block(item, names) for item in items]


def _section(item: Mapping[str, Any], names: Names) -> str:
    body = f'<div class="text">{text_object(item.get("text"), names)}</div>' if item.get("text") else ""
    fields = item.get("fields") or []
    if fields:
        body += (
            '<div class="fields">'
            + "".join(f"<div>{text_object(one, names)}</div>" for one in fields)
            + "</div>"
        )
    accessory = item.get("accessory")
    side = f'<div class="accessory">{_element(accessory, names)}</div>' if accessory else ""
    return f'<div class="section">{body}{side}</div>'


def _element(element: Mapping[str, Any], names: Names) -> str:
    """An element of a context or actions block, or a section's accessory."""
    kind = element.get("type")
    if kind in ("mrkdwn", "plain_text"):
        return f"<span>{text_object(element, names)}</span>"
    if kind == "image":
        alt, url = html.escape(element.get("alt_text", "")), html.escape(element.get("image_url", ""))
        return f'<img class="icon" alt="{alt}" src="{url}">'
    if kind == "button":
        style = element.get("style") or "default"
        return f'<button class="{html.escape(style)}">{text_object(element.get("text"), names)}</button>'
    if kind == "overflow":
        return '<button class="overflow" aria-label="…">⋮</button>'
    placeholder = element.get("placeholder") or element.get("initial_option", {}).get("text")
    label = text_object(placeholder, names) if placeholder else html.escape(str(kind))
    return f'<button class="select">{label} ▾</button>'


def _rich(elements: Sequence[Mapping[str, Any]], names: Names) -> str:
    out = []
    for element in elements:
        kind = element.get("type")
        if kind in ("rich_text_section", "rich_text_preformatted", "rich_text_quote"):
            inner = _rich(element.get("elements", []), names)
            tag = {
                "rich_text_section": "div",
                "rich_text_preformatted": "pre",
                "rich_text_quote": "blockquote",
            }
            out.append(f"<{tag[kind]}>{inner}</{tag[kind]}>")
        elif kind == "rich_text_list":
            items = "".join(f"<li>{_rich([item], names)}</li>" for item in element.get("elements", []))
            out.append(f"<ul>{items}</ul>")
        elif kind == "text":
            text = plain(element.get("text", "")).replace("\n", "<br>")
            style = element.get("style") or {}
            for flag, tag in (("bold", "b"), ("italic", "i"), ("strike", "s"), ("code", "code")):
                if style.get(flag):
                    text = f"<{tag}>{text}</{tag}>"
            out.append(text)
        elif kind == "emoji":
            out.append(plain(f":{element.get('name', '')}:"))
        elif kind == "user":
            out.append(f'<span class="mention">@{html.escape(names.user(element.get("user_id", "")))}</span>')
        elif kind == "channel":
            out.append(
                f'<span class="mention">#{html.escape(names.channel(element.get("channel_id", "")))}</span>'
            )
        elif kind == "link":
            url = html.escape(element.get("url", ""))
            out.append(f'<a href="{url}">{plain(element.get("text") or element.get("url", ""))}</a>')
    return "".join(out)


def table(item: Mapping[str, Any], names: Names) -> str:
    """A table block: its first row is the header (kpibot's are); cells aligned by column settings."""
    settings = item.get("column_settings") or []
    align = [(one or {}).get("align", "left") for one in settings]
    rows = item.get("rows") or []
    out = ['<table class="table">']
    for number, row in enumerate(rows):
        tag = "th" if number == 0 else "td"
        cells = []
        for column, cell in enumerate(row):
            side = align[column] if column < len(align) else "left"
            if cell.get("type") == "rich_text":
                content = _rich(cell.get("elements", []), names)
            else:
                content = plain(str(cell.get("text", "")))
            cells.append(f'<{tag} style="text-align:{side}">{content}</{tag}>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


# -- data_visualization: a line chart as inline SVG ---------------------------------------------------
_W, _H = 620, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 16, 64


def line_chart_svg(item: Mapping[str, Any]) -> str:
    """A data_visualization block as Slack draws a line chart: title, y-axis with its label, one
    line per series over the categories (a missing point is a gap, never made up), a legend."""
    chart = item.get("chart") or {}
    axis = chart.get("axis_config") or {}
    categories: list[str] = list(axis.get("categories") or [])
    series = chart.get("series") or []
    values = [
        p.get("value") for s in series for p in s.get("data", []) if isinstance(p.get("value"), int | float)
    ]
    title = f'<div class="chart-title">{plain(item.get("title", ""))}</div>'
    if not categories or not values:
        return f'<figure class="chart">{title}</figure>'
    low, high, ticks = _scale(min(values), max(values))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(index: int) -> float:
        return _LEFT + (plot_w * (index + 0.5) / len(categories))

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - (value - low) / (high - low))

    parts = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img">']
    for tick in ticks:
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_tick(tick)}</text>'
        )
    every = max(1, math.ceil(len(categories) / 8))  # at most 8 labels under the axis
    for index, label in enumerate(categories):
        if index % every == 0:
            parts.append(
                f'<text class="tick" x="{x(index):.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">'
                f"{html.escape(label)}</text>"
            )
    if axis.get("y_label"):
        parts.append(
            f'<text class="axis" transform="translate(14 {_TOP + plot_h / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle">{html.escape(axis["y_label"])}</text>'
        )
    position = {label: index for index, label in enumerate(categories)}
    legend_x = _LEFT
    for number, one in enumerate(series):
        color = PALETTE[number % len(PALETTE)]
        points = sorted(
            (position[p["label"]], float(p["value"]))
            for p in one.get("data", [])
            if p.get("label") in position
        )
        for run in _runs(points):
            path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
            parts.append(f'<polyline class="series" stroke="{color}" points="{path}"/>')
            parts += [f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"/>' for i, v in run]
        name = html.escape(one.get("name", ""))
        parts.append(
            f'<rect x="{legend_x}" y="{_H - 22}" width="10" height="10" fill="{color}"/>'
            f'<text class="legend" x="{legend_x + 14}" y="{_H - 13}">{name}</text>'
        )
        legend_x += 24 + 12 * len(one.get("name", ""))
    parts.append("</svg>")
    return f'<figure class="chart">{title}{"".join(parts)}</figure>'


def _runs(points: list[tuple[int, float]]) -> list[list[tuple[int, float]]]:
    """Consecutive categories joined by a line; a category without a point breaks it."""
    runs: list[list[tuple[int, float]]] = []
    for index, value in points:
        if runs and runs[-1][-1][0] == index - 1:
            runs[-1].append((index, value))
        else:
            runs.append([(index, value)])
    return runs


def _scale(low: float, high: float) -> tuple[float, float, list[float]]:
    """A y-range around the values with round ticks (about five)."""
    if high == low:
        low, high = low - 1, high + 1
    raw = (high - low) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    end = math.ceil(high / step) * step
    ticks = [start + step * n for n in range(round((end - start) / step) + 1)]
    return start, end, ticks


def _tick(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
