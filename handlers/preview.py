"""An HTML page showing Block Kit messages and charts as Slack would: the demo and dry runs.

Only the parts of Block Kit and mrkdwn that kpibot uses are drawn (header, section, context,
divider; *bold*, _italic_, `code`, mentions), which is enough to review wording and layout.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from bot import render
from bot.digests.flows import Built
from handlers.preview_client import PreviewMessage

PreviewThreads = dict[str, list[tuple[PreviewMessage, list[PreviewMessage]]]]

_MRKDWN = [
    (re.compile(r"&lt;(https?://[^|\s]+)\|([^&]+)&gt;"), r'<a href="\1">\2</a>'),
    (re.compile(r"&lt;@(\w+)&gt;"), r'<span class="mention">@\1</span>'),
    (re.compile(r"&lt;#(\w+)&gt;"), r'<span class="mention">#\1</span>'),
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])"), r"<b>\1</b>"),
    (re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])"), r"<i>\1</i>"),
]


def mrkdwn_to_html(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, replacement in _MRKDWN:
        out = pattern.sub(replacement, out)
    return out.replace("\n", "<br>")


def block_to_html(block: dict[str, Any]) -> str:
    kind = block["type"]
    if kind == "header":
        return f"<h3>{html.escape(block['text']['text'])}</h3>"
    if kind == "divider":
        return "<hr>"
    if kind == "context":
        texts = [mrkdwn_to_html(element.get("text", "")) for element in block.get("elements", [])]
        return f'<div class="context">{" ".join(texts)}</div>'
    if kind == "section":
        accessory = block.get("accessory") or {}
        button = ""
        if accessory.get("type") == "button":
            button = f"<button>{html.escape(accessory.get('text', {}).get('text', ''))}</button>"
        return f"<p>{button}{mrkdwn_to_html(block['text']['text'])}</p>"
    if kind == "actions":
        labels = [
            html.escape(element.get("text", {}).get("text", "")) for element in block.get("elements", [])
        ]
        return '<div class="actions">' + "".join(f"<button>{label}</button>" for label in labels) + "</div>"
    return f"<pre>{html.escape(str(block))}</pre>"


def write_preview(
    path: Path,
    digests: list[Built],
    threads: PreviewThreads,
    locale: str,
    home: tuple[str, dict[str, Any]] | None = None,
) -> Path:
    """A person's App Home tab (`home`: user id and view), the digests (with charts), then every
    other thread the demo posted, channel by channel."""
    channels = []
    for built in digests:
        messages = [
            _message(message.text, message.blocks, thread=index > 0)
            for index, message in enumerate(built.messages)
        ]
        chart = base64.b64encode(built.chart).decode() if built.chart else None
        channels.append(
            {
                "channel": built.department.channel_id,
                "title": built.department.name(locale),
                "messages": messages,
                "chart": chart,
            }
        )
    for channel, roots in threads.items():
        messages = []
        for root, replies in roots:
            messages.append(_message(root.text, root.blocks, thread=False))
            messages += [_message(reply.text, reply.blocks, thread=True) for reply in replies]
        channels.append({"channel": channel, "title": "", "messages": messages, "chart": None})
    shown_home = None
    if home is not None:
        shown_home = {
            "user": home[0],
            "blocks": [block_to_html(block) for block in home[1].get("blocks", [])],
        }
    page = render.template("preview.html", locale, channels=channels, home=shown_home)
    path.write_text(page, encoding="utf-8")
    return path


def _message(text: str, blocks: list[dict[str, Any]], *, thread: bool) -> dict[str, Any]:
    rendered = [block_to_html(block) for block in blocks] or [f"<p>{mrkdwn_to_html(text)}</p>"]
    return {"thread": thread, "blocks": rendered}
