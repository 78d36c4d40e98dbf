"""Parse numbers as people type them in Slack (``1,200``, ``1.2万``, ``¥3,000万``, ``15%``); format them back.

Everything is exact `Decimal`; nothing here touches floats, Slack or I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from functools import lru_cache

PERCENT = "percent"
JPY = "jpy"
USD = "usd"

# A sanity bound for the parser alone; what can be stored is the narrower STORABLE_LIMIT below.
MAX_ABS_VALUE = Decimal(10) ** 18

# What every amount column holds (NUMERIC(20, 6), bot/dbtypes.py `ExactDecimal`), on both databases:
# |value| < 10^14 with at most 6 decimals. PostgreSQL refuses more integer digits and rounds extra
# decimals away silently, so a typed value outside this must be refused before it is confirmed.
STORABLE_DECIMALS = 6
STORABLE_INTEGER_DIGITS = 14
STORABLE_LIMIT = Decimal(10) ** STORABLE_INTEGER_DIGITS
STORABLE_QUANTUM = Decimal(1).scaleb(-STORABLE_DECIMALS)
_STORABLE_CONTEXT = Context(
    prec=STORABLE_INTEGER_DIGITS + STORABLE_DECIMALS + 2,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, Overflow],
)

# NFKC folds full-width digits, ，．－％＄￥ and ideographic spaces, but not U+2212 MINUS SIGN.
_EXTRA_MINUS = str.maketrans({"\u2212": "-"})

_PREFIX_RE = re.compile(r"([+-])?\s*(¥|\$|USD|JPY)?\s*([+-])?\s*", re.IGNORECASE)
_SUFFIX_RE = re.compile(r"\s*(%|円|USD|JPY)$", re.IGNORECASE)
_UNIT_MARKERS = {"¥": JPY, "$": USD, "usd": USD, "jpy": JPY, "%": PERCENT, "円": JPY}

_LATIN_RE = re.compile(r"([0-9.,]+)\s*(bn|[kmb])", re.IGNORECASE)
_LATIN_EXPONENTS = {"k": 3, "m": 6, "b": 9, "bn": 9}

_KANJI_BODY_RE = re.compile(r"(?:[0-9.,]+|[千万億兆])+")
_KANJI_TOKEN_RE = re.compile(r"[0-9.,]+|[千万億兆]")
# 千 scales within a four-digit group; 万/億/兆 close a group (so 2千万 = 20,000,000).
_GROUP_EXPONENTS = {"万": 4, "億": 8, "兆": 12}

_PLAIN_RE = re.compile(r"([0-9,]*)(?:\.([0-9]+))?")
# "1.200,5" and "1.200.000" are how dot-grouping locales write 1200.5 and 1200000.
_DOT_GROUPED_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{3})+(?:,[0-9]+)?")


class NumberFormatError(ValueError):
    """Text that is not a number we accept; `code` is machine-readable, `text` is the input."""

    def __init__(self, code: str, text: str, message: str = "") -> None:
        super().__init__(f"{code}: {text!r}" + (f" ({message})" if message else ""))
        self.code = code
        self.text = text


@dataclass(frozen=True)
class ParsedNumber:
    value: Decimal
    unit: str | None  # "percent", "jpy", "usd" or None


def parse_number(text: str) -> ParsedNumber:
    """Parse one typed number with optional sign, currency/percent marker and k/M/B or 千/万/億/兆 scale."""
    normalized = unicodedata.normalize("NFKC", text).translate(_EXTRA_MINUS).strip()
    if not normalized:
        raise NumberFormatError("empty", text, "no number given")

    prefix = _PREFIX_RE.match(normalized)
    assert prefix is not None  # every group is optional, so it always matches
    lead_sign, prefix_unit, inner_sign = prefix.groups()
    rest = normalized[prefix.end() :]
    suffix = _SUFFIX_RE.search(rest)
    suffix_unit = suffix.group(1) if suffix else None
    body = rest[: suffix.start()] if suffix else rest

    if lead_sign and inner_sign:
        raise NumberFormatError("not_a_number", text, "more than one sign")
    if prefix_unit and suffix_unit:
        # Even a redundant "¥100円" is refused: one marker keeps "$15%" and friends unambiguous.
        raise NumberFormatError("not_a_number", text, "more than one unit marker")
    marker = prefix_unit or suffix_unit
    unit = _UNIT_MARKERS[marker.lower()] if marker else None

    # Inputs are exact and short; a context wide enough for them makes every step exact, and
    # trapping Inexact turns any mistake in that reasoning into an error instead of a wrong number.
    context = Context(prec=2 * len(normalized) + 60, traps=[Inexact, InvalidOperation, Overflow])
    with localcontext(context):
        magnitude, scaled = _parse_body(body, text)
        if unit == PERCENT and scaled:
            raise NumberFormatError("not_a_number", text, "a percentage cannot carry a k/M/万 scale")
        if magnitude > MAX_ABS_VALUE:
            raise NumberFormatError("too_large", text, "larger than 10^18")
        value = -magnitude if (lead_sign or inner_sign) == "-" else magnitude
        return ParsedNumber(_canonical(value), unit)


def check_storable(value: Decimal | int, text: str | None = None) -> Decimal:
    """`value` as a Decimal if an amount column holds it exactly, else `NumberFormatError`.

    The one place the storable range is decided; every way a number comes in (Slack text, the
    report form, plan files) calls this, directly or through `parse_amount`. Codes: ``too_large``
    (|value| >= STORABLE_LIMIT), ``too_precise`` (more than STORABLE_DECIMALS decimals, trailing
    zeros not counted) and ``not_a_number`` (NaN, infinities, a float or a bool).
    """
    shown = str(value) if text is None else text
    # bool is an int, and a float has already lost what was typed: neither is an amount.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise NumberFormatError("not_a_number", shown, f"{type(value).__name__} is not an exact number")
    number = Decimal(value)
    if not number.is_finite():
        raise NumberFormatError("not_a_number", shown, "not a finite number")
    if number.copy_abs() >= STORABLE_LIMIT:
        raise NumberFormatError("too_large", shown, f"at least 10^{STORABLE_INTEGER_DIGITS}")
    # Below the limit the quantized value has at most 20 digits: this context holds it exactly.
    with localcontext(_STORABLE_CONTEXT):
        if number != number.quantize(STORABLE_QUANTUM):
            raise NumberFormatError("too_precise", shown, f"more than {STORABLE_DECIMALS} decimals")
        return _canonical(number)


def storable_round(value: Decimal | int) -> Decimal:
    """`value` rounded as an amount column stores it: half away from zero to STORABLE_DECIMALS.

    For computed values (a percentage, a projection); typed ones go through `check_storable`,
    which refuses instead of rounding. ValueError when the rounded value does not fit at all.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"an amount must be a Decimal or an int, not {type(value).__name__}")
    number = Decimal(value)
    if not number.is_finite() or number.copy_abs() >= STORABLE_LIMIT:
        raise ValueError(f"{value} does not fit an amount column (|value| < 10^{STORABLE_INTEGER_DIGITS})")
    with localcontext(_STORABLE_CONTEXT):
        rounded = number.quantize(STORABLE_QUANTUM)
    if rounded.copy_abs() >= STORABLE_LIMIT:  # 99999999999999.9999995 rounds up to 10^14
        raise ValueError(f"{value} does not fit an amount column (|value| < 10^{STORABLE_INTEGER_DIGITS})")
    return rounded if rounded != 0 else abs(rounded)  # no "-0.000000"


def parse_amount(text: str) -> ParsedNumber:
    """`parse_number`, then `check_storable`: a typed number that can be stored exactly as typed."""
    parsed = parse_number(text)
    return ParsedNumber(check_storable(parsed.value, text), parsed.unit)


def _parse_body(body: str, text: str) -> tuple[Decimal, bool]:
    """Return the unsigned value of the bare number and whether a scale word was applied."""
    latin = _LATIN_RE.fullmatch(body)
    if latin:
        number = _parse_plain(latin.group(1), text)
        return number.scaleb(_LATIN_EXPONENTS[latin.group(2).lower()]), True
    if not body or not _KANJI_BODY_RE.fullmatch(body):
        raise NumberFormatError("not_a_number", text)
    tokens = _KANJI_TOKEN_RE.findall(body)
    if len(tokens) == 1:
        return _parse_plain(tokens[0], text), False
    return _parse_kanji(tokens, text), True


def _parse_kanji(tokens: list[str], text: str) -> Decimal:
    """Evaluate digit groups with 千/万/億/兆, e.g. ``1億2000万`` or ``2千500万``."""
    total = Decimal(0)
    group = Decimal(0)  # value accumulated before the next 万/億/兆
    pending: Decimal | None = None  # digits not yet consumed by a multiplier
    last_exponent: int | None = None  # the most recent 万/億/兆, which later groups must stay below
    has_thousands = False
    seen_fraction = False

    def bad(reason: str) -> NumberFormatError:
        return NumberFormatError("not_a_number", text, reason)

    for token in tokens:
        if token == "千":
            if pending is None or has_thousands:
                raise bad("千 needs digits before it, once per group")
            group += pending.scaleb(3)
            pending, has_thousands = None, True
        elif token in _GROUP_EXPONENTS:
            exponent = _GROUP_EXPONENTS[token]
            if pending is None and not has_thousands:
                raise bad(f"{token} needs digits before it")
            if last_exponent is not None and exponent >= last_exponent:
                raise bad("兆/億/万 must appear in descending order")
            group += pending or 0
            if last_exponent is not None and group >= Decimal(10) ** (last_exponent - exponent):
                raise bad(f"group before {token} overflows into the larger unit")
            total += group.scaleb(exponent)
            group, pending, has_thousands, last_exponent = Decimal(0), None, False, exponent
        else:
            if seen_fraction:
                # "1.5万3000" mixes precisions in a way nobody means; ask for 15,300 or 1.53万.
                raise bad("a decimal may only appear in the last group")
            pending = _parse_plain(token, text)
            seen_fraction = "." in token
            if has_thousands and pending >= 1000:
                raise bad("digits after 千 must be below 1000")

    group += pending or 0
    if last_exponent is not None and group >= Decimal(10) ** last_exponent:
        raise bad("trailing digits overflow into the last unit")
    return total + group


def _parse_plain(token: str, text: str) -> Decimal:
    """Parse unsigned digits with optional ``,`` thousands grouping and ``.`` decimal mark."""
    if _DOT_GROUPED_RE.fullmatch(token) and (token.count(".") > 1 or "," in token):
        as_point = token.replace(".", "").replace(",", ".")
        hint = f"dots read as thousands separators; write {as_point}"
        raise NumberFormatError("ambiguous_separator", text, hint)
    match = _PLAIN_RE.fullmatch(token)
    if not match or not (match.group(1) or match.group(2)):
        raise NumberFormatError("not_a_number", text)
    integer, fraction = match.groups()
    if "," in integer:
        groups = integer.split(",")
        if "" in groups:
            raise NumberFormatError("not_a_number", text, "empty group between commas")
        # Commas are accepted only where they cannot be a decimal mark: 1,200 yes, 1,20 / 0,500 no.
        if len(groups[0]) > 3 or groups[0].startswith("0") or any(len(g) != 3 for g in groups[1:]):
            if fraction:
                hint = "commas must separate groups of three digits"
            else:
                head, _, tail = integer.rpartition(",")
                hint = f"write {head.replace(',', '')}.{tail} or {integer.replace(',', '')} instead"
            raise NumberFormatError("ambiguous_separator", text, hint)
    digits = integer.replace(",", "") or "0"
    return Decimal(f"{digits}.{fraction}" if fraction else digits)


def _canonical(value: Decimal) -> Decimal:
    """Drop trailing zeros and exponents so 1.2万 reads as Decimal('12000'), not '1.20E+4'."""
    if value == 0:
        return Decimal(0)  # also folds -0
    value = value.normalize()
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite by construction
    return value.quantize(Decimal(1)) if exponent > 0 else value


def format_decimal(value: Decimal, locale: str = "en", max_fraction_digits: int = 2) -> str:
    """``12,000`` / ``15.5``: grouped, rounded half-up, trailing zeros dropped (same for ja and en)."""
    del locale  # ja and en share "," and "."; kept so callers need not change when a locale differs
    if not value.is_finite():
        raise ValueError(f"cannot format {value}")
    return _format_decimal(value, max_fraction_digits)


# The text depends on the value and the digits alone (1.0 and 1 read "1"; equal Decimals hash
# alike), and a digest run formats each figure several times (its table cell, its row line, its
# fallback): remembered, a figure is rounded once.
@lru_cache(maxsize=8192)
def _format_decimal(value: Decimal, max_fraction_digits: int) -> str:
    if max_fraction_digits < 0:
        raise ValueError("max_fraction_digits must be >= 0")
    with localcontext(_wide_context(value, max_fraction_digits)):
        rounded = value.quantize(Decimal(1).scaleb(-max_fraction_digits), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # "-0.001" must not come out as "-0"
    formatted = f"{rounded:,f}"
    if "." in formatted:
        formatted = formatted.rstrip("0").rstrip(".")
    return formatted


_COMPACT_UNITS = {
    # 兆 is included because parse_number accepts it and "10,000億" reads wrong in Japanese.
    "ja": ((12, "兆"), (8, "億"), (4, "万"), (0, "")),
    "en": ((9, "B"), (6, "M"), (3, "k"), (0, "")),
}


def format_compact(value: Decimal, locale: str) -> str:
    """``1.2億`` / ``3,000万`` for ja, ``1.2k`` / ``1B`` for en; one fraction digit at most."""
    if not value.is_finite():
        raise ValueError(f"cannot format {value}")
    # Slack reports locales like "ja-JP"; anything that is not Japanese gets the English scale.
    units = _COMPACT_UNITS["ja" if locale.lower().startswith("ja") else "en"]
    magnitude = abs(value)
    with localcontext(_wide_context(value, 1)):
        index = next(i for i, (exponent, _) in enumerate(units) if magnitude >= 10**exponent or exponent == 0)
        rounded = _round1(magnitude.scaleb(-units[index][0]))
        # Rounding can reach the next unit (999,950 -> "1,000.0k"), which should read "1M".
        while index > 0 and rounded >= Decimal(10) ** (units[index - 1][0] - units[index][0]):
            index -= 1
            rounded = _round1(magnitude.scaleb(-units[index][0]))
    signed = -rounded if value < 0 else rounded
    return format_decimal(signed, max_fraction_digits=1) + units[index][1]


def _round1(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _wide_context(value: Decimal, fraction_digits: int) -> Context:
    """A context with enough precision that scaling and quantizing `value` never rounds twice."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # callers reject NaN and infinities first
    return Context(prec=len(digits) + max(exponent, 0) + fraction_digits + 30, rounding=ROUND_HALF_UP)
