"""Every word a user reads comes from templates/: this is the one way to render them.

- ``message(key, locale, **params)``: a short string from ``templates/<locale>/messages.yaml``
  or ``templates/<locale>/messages/*.yaml``.
- ``template(name, locale, **context)``: a layout from ``templates/<locale>/<name>.j2``.
Both are Jinja2, with the same filters, so a message and a layout format numbers alike.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from decimal import Decimal
from functools import cache
from typing import Any

import jinja2
import yaml

from bot import formats
from bot.config import LOCALES
from bot.numbers import format_compact, format_decimal
from bot.periods import Period, PeriodError
from bot.resources import TEMPLATES_DIR
from bot.scoring import TargetValue
from bot.sources.registry import label as source_label

STATUS_EMOJI = {"green": "🟢", "amber": "🟡", "red": "🔴", "no_target": "⚪", "no_data": "⚪"}


def _number(value: Decimal | int | float | None, locale: str = "en", digits: int = 2) -> str:
    if value is None:
        return "—"
    return format_decimal(Decimal(str(value)) if isinstance(value, float) else Decimal(value), locale, digits)


def localized(value: Decimal | None, unit: str, locale: str = "en", *, exact: bool = False) -> str:
    """A value with its unit by the locale rules of bot/formats.py: 「8,400万円」「120件」「61%」 /
    "¥84M", "120", "61%". Money is rounded for reading unless `exact` (what was typed, corrections).
    Templates format values only through `localized`, `exact`, `localized_target`, `attainment`, `pct`,
    `period_label` and `day_label`."""
    return formats.quantity(value, unit, locale, exact=exact)


def localized_target(
    target: TargetValue | None, unit: str, locale: str = "en", *, exact: bool = False
) -> str:
    """A target by the locale rules: 「8,000円」, a range with its unit once 「15〜20%」 / "15–20%"."""
    if target is None:
        return message("status.no_target", locale)
    high = localized(target.high, unit, locale, exact=exact)
    if not target.is_range:
        return high
    return formats.span(localized(target.low, unit, locale, exact=exact), high, locale)


def attainment(pct: Decimal | None, direction: object, locale: str = "en") -> str:
    """The one phrase for how an actual stands against its target: 「達成率 61%」 / "61% of target";
    for a lower-is-better KPI against its ceiling, 「上限を26%超過」 / "26% over its ceiling"."""
    if pct is None:
        return "—"
    if str(getattr(direction, "value", direction)) != "lower":
        return message("format.attainment", locale, pct=formats.percent(pct))
    over = formats.over_ceiling_pct(Decimal(pct))
    shown = formats.percent(abs(over))
    if shown == "0%":
        return message("format.at_ceiling", locale)
    key = "format.over_ceiling" if over > 0 else "format.under_ceiling"
    return message(key, locale, pct=shown)


def period_label(period: object, locale: str = "en") -> str:
    """A period as people read it: 「2026年11月」「第48週(11/23〜11/29)」 / "Nov 2026", "week 48 (Nov 23–29)".

    A string that is not a period key is shown as given."""
    if isinstance(period, Period):
        return formats.period_label(period, locale)
    try:
        return formats.period_label(str(period), locale)
    except PeriodError:
        return str(period)


def day_label(day: dt.date | None, locale: str = "en", year: bool = False) -> str:
    """「12月16日(水)」 / "Wed, Dec 16" (with `year`, 「2026年12月16日(水)」 / "Wed, Dec 16, 2026")."""
    return "—" if day is None else formats.day_label(day, locale, year=year)


# Slack's own markup in text people typed in Slack: mentions, channels, links, and entities.
_SLACK_TOKEN = re.compile(r"<(?:[@#!][^<>]*|(?:https?|mailto):[^<>]*)>|&(?:amp|lt|gt);")


def mrkdwn_text(text: str) -> str:
    """Text a user typed, made safe inside mrkdwn: `&`, `<` and `>` escaped as Slack requires,
    except where they already form Slack markup (`<@U…>`, `<#C…>`, `<https://…>`, `&lt;`)."""
    pieces, last = [], 0
    for match in _SLACK_TOKEN.finditer(text):
        pieces += [_escape(text[last : match.start()]), match.group()]
        last = match.end()
    pieces.append(_escape(text[last:]))
    return "".join(pieces)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def display_width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(value: object, width: int, align: str = "left") -> str:
    text = str(value)
    fill = " " * max(0, width - display_width(text))
    return fill + text if align == "right" else text + fill


class _Environment(jinja2.Environment):
    def make_globals(self, d: Any = None) -> Any:  # MutableMapping in Jinja's own annotation
        """A template's globals as one plain dict, not Jinja's ChainMap over the environment's: every
        render copies them, and copying a ChainMap cost more than the rest of a digest row's render.
        Ours are all set in `_environment`, before the first template is loaded, and never change."""
        return {**self.globals, **(d or {})}


@cache
def _environment() -> jinja2.Environment:
    env = _Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # The templates ship with the package and never change under a running process: no stat()
        # of the file on every render.
        auto_reload=False,
    )
    env.filters["number"] = _number
    env.filters["compact"] = lambda value, locale="en": (
        "—" if value is None else format_compact(value, locale)
    )
    env.filters["pad"] = _pad
    env.filters["mrkdwn"] = mrkdwn_text
    env.filters["localized"] = localized
    env.filters["exact"] = lambda value, unit, locale="en": localized(value, unit, locale, exact=True)
    env.filters["localized_target"] = localized_target
    env.filters["attainment"] = attainment
    env.filters["pct"] = formats.percent
    env.filters["period_label"] = period_label
    env.filters["day_label"] = day_label
    env.filters["quarter_label"] = formats.quarter_label
    env.globals["message"] = lambda key, locale, **params: message(key, locale, **params)
    env.filters["source_label"] = source_label
    env.filters["status_emoji"] = lambda status: STATUS_EMOJI.get(str(status), "⚪")
    return env


# libyaml's loader where PyYAML has it: the pure-Python one costs every CLI run ~0.1 s.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def _sources(locale: str) -> dict[str, str]:
    # messages.yaml plus one file per area in messages/, so surfaces keep their words apart.
    folder = TEMPLATES_DIR / locale
    paths = [folder / "messages.yaml", *sorted((folder / "messages").glob("*.yaml"))]
    sources: dict[str, str] = {}
    for path in paths:
        if not path.is_file():
            continue
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER) or {}
        for key, text in loaded.items():
            if key in sources:
                raise ValueError(f"message {key!r} is defined twice in templates/{locale}/")
            sources[key] = text
    return sources


# Compiled messages by (locale, key). Each is compiled on first use: a CLI command says a handful
# of its ~700 messages per language, and compiling them all cost every `kpibot` run ~0.4 s.
# Two threads compiling the same message at once both get the same template; one is kept.
_compiled: dict[tuple[str, str], jinja2.Template] = {}


def _message_template(locale: str, key: str) -> jinja2.Template:
    compiled = _compiled.get((locale, key))
    if compiled is None:
        try:
            source = _sources(locale)[key]
        except KeyError:
            raise KeyError(f"no message {key!r} in templates/{locale}/messages.yaml") from None
        compiled = _compiled.setdefault((locale, key), _environment().from_string(source))
    return compiled


def warm() -> None:
    """Compile every message and template of every language now. A process that answers Slack calls
    this before it serves: compiled on first use instead, the ~700 messages of a language cost the
    requests that first need them 0.3-0.6 s in all on a quiet 2-core machine (bench/README.md),
    inside Slack's 3 s for an ack. Called before gunicorn forks, the workers inherit the compiled
    copy."""
    env = _environment()
    for locale in LOCALES:
        for key in _sources(locale):
            _message_template(locale, key)
    for name in env.list_templates(extensions=["j2"]):
        env.get_template(name)


def normalize_locale(locale: str | None) -> str:
    """`ja-JP`, `en_US`, None → one of LOCALES (English when unknown)."""
    if locale:
        short = locale.replace("_", "-").split("-")[0].lower()
        if short in LOCALES:
            return short
    return "en"


# Messages said without parameters, by (key, locale as given): each reads the same every time (the
# templates' filters and their one global, `message`, depend on their arguments alone), and a digest
# says ~20 of them per department (trend arrows, status words, column headers), a Jinja render each.
_constants: dict[tuple[str, str], str] = {}


def message(key: str, locale: str, **params: Any) -> str:
    if params:
        return _message_template(normalize_locale(locale), key).render(locale=locale, **params).strip()
    said = _constants.get((key, locale))
    if said is None:
        said = _message_template(normalize_locale(locale), key).render(locale=locale).strip()
        said = _constants.setdefault((key, locale), said)
    return said


def template(name: str, locale: str, **context: Any) -> str:
    locale = normalize_locale(locale)
    return _environment().get_template(f"{locale}/{name}.j2").render(locale=locale, **context)


def message_keys(locale: str) -> set[str]:
    return set(_sources(locale))
