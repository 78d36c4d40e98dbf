"""An HTML page showing what kpibot posts as Slack shows it: the demo's preview.

The messages are drawn by handlers/slack_html.py (tables, native charts, quotes, emoji, names);
people and channels are named from the plan (`plan_names`). The page carries its own font: the
Japanese font bundled for the charts (matplotlib-fontja's IPAex Gothic), cut down to the characters
on the page and embedded, so that a browser with no CJK font still shows every character.
"""

from __future__ import annotations

import base64
import importlib.util
import io
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bot import render
from bot.database import transaction
from bot.digests.flows import Built
from bot.models import Department, Kpi
from bot.resources import TEMPLATES_DIR
from handlers import slack_html
from handlers.preview_client import PreviewMessage
from handlers.slack_html import Names

PreviewThreads = dict[str, list[tuple[PreviewMessage, list[PreviewMessage]]]]
FONT_FAMILY = "kpibot IPAexGothic"  # the page's name for the embedded font (a subset of IPAexGothic)
STYLE = TEMPLATES_DIR / "preview.css"


def plan_names(engine: Engine, locale: str) -> Names:
    """Channels by their department's name, heads by their role, owners as the department's owners
    A, B…: the plan knows who does what, not what people are called."""
    users: dict[str, str] = {}
    channels: dict[str, str] = {}
    with transaction(engine) as session:
        departments = session.exec(select(Department).order_by(col(Department.id))).all()
        owners = session.exec(select(Kpi.department_id, Kpi.owner_user_id).order_by(col(Kpi.id))).all()
    by_id = {department.id: department for department in departments}
    for department in departments:
        name = department.name(locale)
        if department.channel_id:
            channels[department.channel_id] = name
        if department.head_user_id:
            users[department.head_user_id] = render.message("preview.head", locale, department=name)
    counted: dict[int, int] = {}
    for department_id, owner in owners:
        department = by_id.get(department_id)
        if not owner or owner in users or department is None:
            continue
        counted[department_id] = counted.get(department_id, 0) + 1
        letter = chr(ord("A") + counted[department_id] - 1)
        users[owner] = render.message(
            "preview.owner", locale, department=department.name(locale), letter=letter
        )
    return Names(users=users, channels=channels)


def write_preview(
    path: Path,
    digests: list[Built],
    threads: PreviewThreads,
    locale: str,
    home: tuple[str, dict[str, Any]] | None = None,
    names: Names | None = None,
) -> Path:
    """A person's App Home tab (`home`: user id and view), the digests (with the PNG grid in their
    thread), then every other thread the demo posted, channel by channel."""
    names = names or Names()
    channels = []
    for built in digests:
        root, *replies = built.messages
        files = [base64.b64encode(built.chart).decode()] if built.chart else []
        channels.append(
            {
                "channel": names.channel(built.department.channel_id or ""),
                "title": built.department.name(locale),
                "threads": [_thread(root.text, root.blocks, replies, names, files=files)],
            }
        )
    for channel, roots in threads.items():
        shown = [_thread(root.text, root.blocks, thread, names) for root, thread in roots]
        channels.append({"channel": names.channel(channel), "title": "", "threads": shown})
    shown_home = None
    if home is not None:
        shown_home = {
            "user": names.user(home[0]),
            "blocks": slack_html.blocks(home[1].get("blocks", []), names),
        }
    context = {"channels": channels, "home": shown_home, "style": STYLE.read_text(encoding="utf-8")}
    # Rendered twice: the font is cut to the characters of the page it is embedded in.
    draft = render.template("preview.html", locale, font_face="", **context)
    page = render.template("preview.html", locale, font_face=font_face(draft), **context)
    path.write_text(page, encoding="utf-8")
    return path


def _thread(
    text: str,
    blocks: list[dict[str, Any]],
    replies: list[Any],
    names: Names,
    *,
    files: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "root": _message(text, blocks, names),
        "replies": [_message(reply.text, reply.blocks, names) for reply in replies],
        "files": files or [],
    }


def _message(text: str, blocks: list[dict[str, Any]], names: Names) -> list[str]:
    # A message of text alone is drawn as a section with that text (Slack shows it so); its inline
    # pieces go in one `.text` box, or the section's flex layout would set each beside the next.
    return slack_html.blocks(blocks, names) or [
        slack_html.block({"type": "section", "text": {"type": "mrkdwn", "text": text}}, names)
    ]


def font_path() -> Path:
    """The Japanese font matplotlib-fontja ships (found without importing it: that imports matplotlib)."""
    spec = importlib.util.find_spec("matplotlib_fontja")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("matplotlib-fontja is not installed: kpibot needs it for charts and the preview")
    return Path(next(iter(spec.submodule_search_locations))) / "fonts" / "ipaexg.ttf"


def font_face(text: str) -> str:
    """An @font-face rule embedding the font, cut to the characters of `text` (WOFF, base64)."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    options = subset.Options()
    options.flavor = "woff"
    options.layout_features = ["*"]  # vertical forms and proportional kana stay available
    options.notdef_outline = True
    font = TTFont(font_path())
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text)
    subsetter.subset(font)
    out = io.BytesIO()
    font.flavor = "woff"
    font.save(out)
    data = base64.b64encode(out.getvalue()).decode()
    source = f'url(data:font/woff;base64,{data}) format("woff")'
    return f'@font-face {{ font-family: "{FONT_FAMILY}"; src: {source}; }}'
