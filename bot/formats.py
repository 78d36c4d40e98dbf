"""How Japanese and English write numbers, money, periods and dates: the locale rules, in one place.

Pure functions over `Decimal`, `date` and `Period`; the Jinja filters in bot/render.py call these, so
every template and message formats a concept the same way.

Money (JPY and USD) is rounded for reading, and the rounding is the same rule in both languages:

- below 10,000 it is written in full: 「9,999円」 / "¥9,999";
- from 10,000 it keeps 4 significant figures: 「1万2,350円」「8,400万円」 / "¥12.35K", "¥84M";
- in Japanese, from 1億 the 万 are always kept (「6億1,499万円」: rounded to 万, never coarser), so a
  KGI total that moves by 10万円 still reads as moved; English rounds to 4 figures ("¥615M").

Rounding is half away from zero, and a value that rounds up to the next unit is written in it
(99,995,000円 → 「1億円」, ¥999,950 → "¥1M"). Where the reader needs the exact figure (what they just
reported, a correction's before and after, the history), callers pass ``exact=True``:
「6億1,498万6,900円」 / "¥614,986,900".

Other units: counts take the Japanese counter with no space (「120件」) and are bare in English
("120"); percentages never take a space in either language ("61%"); hours and days are
「12.5時間」「3日」 / "12.5 h", "3 d".
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, localcontext

from bot.models import Cadence
from bot.numbers import _wide_context, format_decimal
from bot.periods import Period, fiscal_quarter, fiscal_year, parse_key

SIGNIFICANT = 4
_FULL_BELOW = Decimal(10_000)

# Japanese counts in groups of four digits; each pair is (exponent, word), largest first.
_JA_GROUPS = ((12, "兆"), (8, "億"), (4, "万"))
_EN_SCALES = ((12, "tn"), (9, "bn"), (6, "M"), (3, "K"))
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_EN_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_JA_WEEKDAYS = "月火水木金土日"

# Suffix words of the units that take one; counts are 件 unless the caller names another counter.
_JA_SUFFIX = {"count": "件", "percent": "%", "hours": "時間", "days": "日"}
_EN_SUFFIX = {"percent": "%", "hours": " h", "days": " d"}
_FRACTION_DIGITS = {"percent": 1, "jpy": 0, "usd": 2}


def _lang(locale: str | None) -> str:
    return "ja" if (locale or "").lower().startswith("ja") else "en"


def _decimal(value: Decimal | int | float) -> Decimal:
    # A float has already lost what was typed; its shortest repr is what a reader expects to see.
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def round_significant(value: Decimal, figures: int = SIGNIFICANT) -> Decimal:
    """`value` rounded half away from zero to `figures` significant figures (never past the units)."""
    if value == 0:
        return Decimal(0)
    exponent = max(value.adjusted() - figures + 1, 0)
    with localcontext(_wide_context(value, 0)):
        return value.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_UP)


def _round_to(value: Decimal, exponent: int) -> Decimal:
    with localcontext(_wide_context(value, max(-exponent, 0))):
        return value.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_UP)


def _ja_rounded(magnitude: Decimal, fraction_digits: int) -> Decimal:
    if magnitude < _FULL_BELOW:
        return _round_to(magnitude, -fraction_digits)
    rounded = round_significant(magnitude)
    # From 1億 keep the 万 (from 1兆, the 億): two groups always show.
    for exponent, _ in _JA_GROUPS[:2]:
        if magnitude >= Decimal(10) ** exponent or rounded >= Decimal(10) ** exponent:
            return _round_to(magnitude, exponent - 4)
    return rounded


def ja_grouped(value: Decimal, fraction_digits: int = 0) -> str:
    """A number in 万/億/兆 groups, each group comma-grouped: ``6億1,498万6,900``, ``-1万2,350``."""
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    integer = int(magnitude)
    rest = magnitude - integer
    parts = []
    for exponent, word in _JA_GROUPS:
        group = integer // 10**exponent
        if exponent < 12:
            group %= 10_000
        if group:
            parts.append(f"{group:,}{word}")
    ones = Decimal(integer % 10_000) + rest
    if ones or not parts:
        parts.append(format_decimal(ones, "ja", fraction_digits))
    text = "".join(parts)
    return "0" if text == "0" else sign + text


def _en_compact(magnitude: Decimal, fraction_digits: int) -> str:
    if _round_to(magnitude, -fraction_digits) < _FULL_BELOW:
        return format_decimal(magnitude, "en", fraction_digits)
    rounded = round_significant(magnitude)
    exponent, word = next((e, w) for e, w in _EN_SCALES if rounded >= Decimal(10) ** e)
    return format_decimal(rounded.scaleb(-exponent), "en", SIGNIFICANT) + word


def money(value: Decimal | int | float, currency: str, locale: str, *, exact: bool = False) -> str:
    """「8,400万円」「9,000円」「12.5ドル」 / "¥84M", "¥9,000", "$12.5"; see the module for the rounding."""
    number = _decimal(value)
    digits = _FRACTION_DIGITS.get(currency, 2)
    magnitude = abs(number)
    # A tiny negative that rounds to nothing must not read "-0円".
    sign = "-" if number < 0 and _round_to(magnitude, -digits) != 0 else ""
    if _lang(locale) == "ja":
        shown = _round_to(magnitude, -digits) if exact else _ja_rounded(magnitude, digits)
        return f"{sign}{ja_grouped(shown, digits)}{'円' if currency == 'jpy' else 'ドル'}"
    symbol = "¥" if currency == "jpy" else "$"
    body = format_decimal(magnitude, "en", digits) if exact else _en_compact(magnitude, digits)
    return f"{sign}{symbol}{body}"


def number(value: Decimal | int | float, unit: str, locale: str, *, counter: str | None = None) -> str:
    """A value in its unit (not money): 「120件」「61%」「12.5時間」 / "120", "61%", "12.5 h"."""
    text = format_decimal(_decimal(value), locale, _FRACTION_DIGITS.get(unit, 1))
    if _lang(locale) == "ja":
        suffix = counter if (counter and unit == "count") else _JA_SUFFIX.get(unit, "")
    else:
        suffix = _EN_SUFFIX.get(unit, "")
    return text + suffix


def quantity(value: Decimal | int | float | None, unit: str, locale: str, *, exact: bool = False) -> str:
    """Any KPI value in its unit: money through `money`, the rest through `number`; None is "—"."""
    if value is None:
        return "—"
    unit = str(getattr(unit, "value", unit))
    if unit in ("jpy", "usd"):
        return money(value, unit, locale, exact=exact)
    return number(value, unit, locale)


def percent(value: Decimal | int | float | None, digits: int = 0) -> str:
    """ "61%" in both languages: no space before the sign."""
    if value is None:
        return "—"
    return f"{format_decimal(_decimal(value), 'en', digits)}%"


def span(low: str, high: str, locale: str) -> str:
    """Two formatted ends as a range, the shared unit once: 「15〜20%」「3,000〜5,000万円」 / "15–20%"."""
    tail = _unit_tail(high)
    # Only a unit that follows the number is shared: "¥30M–¥50M" keeps both, 「30〜50件」 does not.
    if tail and _unit_tail(low) == tail and low.lstrip("-")[:1].isdigit():
        low = low[: -len(tail)]
    return f"{low}{'〜' if _lang(locale) == 'ja' else '–'}{high}"


def _unit_tail(text: str) -> str:
    end = len(text)
    while end and not text[end - 1].isdigit():
        end -= 1
    return text[end:]


def period_label(period: Period | str, locale: str) -> str:
    """「2026年11月」「第48週(11/23〜11/29)」 / "Nov 2026", "week 48 (Nov 23–29)"."""
    if isinstance(period, str):
        period = parse_key(period)
    if period.cadence is Cadence.MONTHLY:
        if _lang(locale) == "ja":
            return f"{period.year}年{period.number}月"
        return f"{_EN_MONTHS[period.number - 1]} {period.year}"
    days = day_span(period.start, period.end, locale)
    if _lang(locale) == "ja":
        return f"第{period.number}週({days})"
    return f"week {period.number} ({days})"


def axis_label(period: Period | str, locale: str) -> str:
    """A period under a chart's axis, within Slack's 20 characters and unique in a 13-period window:
    「2026年11月」「第48週」 / "Nov 2026", "wk 48" (the week's days are in the digest's text)."""
    if isinstance(period, str):
        period = parse_key(period)
    if period.cadence is Cadence.MONTHLY:
        return period_label(period, locale)
    return f"第{period.number}週" if _lang(locale) == "ja" else f"wk {period.number}"


def day_span(start: dt.date, end: dt.date, locale: str) -> str:
    """「11/23〜11/29」 / "Nov 23–29", "Nov 30–Dec 6"."""
    if _lang(locale) == "ja":
        return f"{start.month}/{start.day}〜{end.month}/{end.day}"
    first = f"{_EN_MONTHS[start.month - 1]} {start.day}"
    last = str(end.day) if end.month == start.month else f"{_EN_MONTHS[end.month - 1]} {end.day}"
    return f"{first}–{last}"


def day_label(day: dt.date | dt.datetime, locale: str, *, year: bool = False) -> str:
    """「12月16日(水)」「2026年12月16日(水)」 / "Wed, Dec 16", "Wed, Dec 16, 2026"."""
    if _lang(locale) == "ja":
        head = f"{day.year}年" if year else ""
        return f"{head}{day.month}月{day.day}日({_JA_WEEKDAYS[day.weekday()]})"
    text = f"{_EN_WEEKDAYS[day.weekday()]}, {_EN_MONTHS[day.month - 1]} {day.day}"
    return f"{text}, {day.year}" if year else text


def quarter_label(day: dt.date, locale: str, start_month: int = 4) -> str:
    """The fiscal quarter of `day`: 「2026年度 第3四半期」 / "FY2026 Q3" (named by the year it starts in)."""
    year, quarter = fiscal_year(day, start_month), fiscal_quarter(day, start_month)
    if _lang(locale) == "ja":
        return f"{year}年度 第{quarter}四半期"
    return f"FY{year} Q{quarter}"


def over_ceiling_pct(achievement_pct: Decimal) -> Decimal:
    """For a lower-is-better KPI, how far the actual is above (+) or below (-) its ceiling, in %.

    `achievement_pct` is ceiling ÷ actual (bot/scoring.py); a cost of ¥12,600 against ¥10,000 is
    79.4 % "achieved", which reads as cheaper than target: the reader needs "26 % over".
    """
    with localcontext(_wide_context(achievement_pct, 6)):
        return Decimal(10_000) / achievement_pct - 100
