"""Rows of actuals as other systems send them: a JSON document or a CSV file, read into plain
rows (KPI key, period, value, note, external id) for bot.reports.batch. Pure: bytes in, rows out.

CSV files are read as Excel saves them: UTF-8 with or without a BOM, or Shift_JIS (CP932,
Windows' superset of it), CRLF or LF. Each line is decoded on its own: a line that is not
UTF-8 but reads as CP932 is CP932; a file with lines in both is refused as mixed, naming the
first line that differs, rather than guessed (a wrong guess would store mojibake as notes).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_ROWS = 1000
COLUMNS = ("kpi", "period", "value", "note", "external_id")
REQUIRED = ("kpi", "value")
_BOM = b"\xef\xbb\xbf"
_SHIFT_JIS_NAMES = ("shift_jis", "sjis", "cp932", "windows_31j", "ms932", "x_sjis")
_NON_ASCII = re.compile(rb"[\x80-\xff]")


@dataclass(frozen=True)
class Row:
    """One value as sent: text, checked later by the same rules as Slack input."""

    kpi: str
    value: str
    period: str | None = None
    note: str | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class Problem:
    """What is wrong with one row (1-based; 0: the batch as a whole) and which field."""

    row: int
    field: str
    code: str
    params: dict[str, Any] = field(default_factory=dict)


class FormatError(Exception):
    """The body cannot be read as rows at all (400): `code` is stable, `params` fill the message."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class Parsed:
    rows: list[Row]
    problems: list[Problem]


# -- JSON ----------------------------------------------------------------------------------------------


def _keep_text(text: str) -> str:
    # Numbers stay the text that was sent: parsed later as exact decimals, never through float.
    return text


def from_json(body: bytes) -> Parsed:
    """One object, or {"actuals": [objects]}. NaN/Infinity are read as text and refused per row."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FormatError("json_not_utf8", offset=error.start) from None
    try:
        document = json.loads(text, parse_float=_keep_text, parse_int=_keep_text, parse_constant=_keep_text)
    except json.JSONDecodeError as error:
        raise FormatError("malformed_json", line=error.lineno, column=error.colno, reason=error.msg) from None
    except RecursionError:
        raise FormatError("malformed_json", line=1, column=1, reason="nested too deeply") from None
    if isinstance(document, dict) and "actuals" in document:
        extra = sorted(set(document) - {"actuals"})
        if extra:
            raise FormatError("unknown_top_level", fields=", ".join(extra))
        items = document["actuals"]
        if not isinstance(items, list):
            raise FormatError("actuals_not_a_list")
    elif isinstance(document, dict):
        items = [document]
    else:
        raise FormatError("not_an_object")
    if len(items) > MAX_ROWS:
        return Parsed([], [Problem(0, "actuals", "too_many_rows", {"count": len(items), "max": MAX_ROWS})])
    if not items:
        return Parsed([], [Problem(0, "actuals", "no_rows")])
    rows: list[Row] = []
    problems: list[Problem] = []
    for number, item in enumerate(items, start=1):
        row = _json_row(number, item, problems)
        if row is not None:
            rows.append(row)
    return Parsed(rows, problems)


def _json_row(number: int, item: object, problems: list[Problem]) -> Row | None:
    if not isinstance(item, dict):
        problems.append(Problem(number, "row", "row_not_an_object"))
        return None
    before = len(problems)
    problems.extend(Problem(number, name, "unknown_field") for name in sorted(set(item) - set(COLUMNS)))
    values: dict[str, str | None] = {}
    for name in COLUMNS:
        value = item.get(name)
        if value is None:
            if name in REQUIRED:
                problems.append(Problem(number, name, "missing_field"))
            values[name] = None
        elif isinstance(value, str):  # numbers arrive here as text too (see _keep_text)
            values[name] = value
        else:  # true/false, a list, an object
            problems.append(Problem(number, name, "wrong_type"))
    if len(problems) > before:
        return None
    return _row(values)


def _row(values: dict[str, str | None]) -> Row:
    return Row(
        kpi=values["kpi"] or "",
        value=values["value"] or "",
        period=values.get("period") or None,
        note=values.get("note") or None,
        external_id=values.get("external_id") or None,
    )


# -- CSV -----------------------------------------------------------------------------------------------


def decode_csv(body: bytes, charset: str | None = None) -> str:
    """The text of a CSV file; see the module for the encodings read."""
    if charset and charset.lower().replace("-", "_") in _SHIFT_JIS_NAMES:
        try:
            return body.decode("cp932")
        except UnicodeDecodeError as error:
            raise FormatError("not_shift_jis", line=body.count(b"\n", 0, error.start) + 1) from None
    body = body.removeprefix(_BOM)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines: list[str] = []
    kinds: dict[str, int] = {}
    for number, raw in enumerate(body.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
            if _NON_ASCII.search(raw):
                kinds.setdefault("utf-8", number)
        except UnicodeDecodeError:
            try:
                lines.append(raw.decode("cp932"))
            except UnicodeDecodeError:
                raise FormatError("unknown_encoding", line=number) from None
            kinds.setdefault("cp932", number)
        if len(kinds) > 1:
            raise FormatError("mixed_encodings", line=max(kinds.values()))
    return "\n".join(lines)


def from_csv(body: bytes, charset: str | None = None) -> Parsed:
    """A header row naming the columns (kpi and value required; period, note, external_id
    optional; any order), then one row per value. Blank lines are skipped."""
    reader = csv.reader(io.StringIO(decode_csv(body, charset), newline=""), strict=True)
    try:
        header = next(_nonblank(reader), None)
        if header is None:
            raise FormatError("empty_csv")
        names = [name.strip().lower() for name in header]
        unknown = [name for name in names if name not in COLUMNS]
        missing = [name for name in REQUIRED if name not in names]
        if unknown or missing or len(set(names)) != len(names):
            raise FormatError(
                "bad_csv_header", got=",".join(names), expected=",".join(COLUMNS), required=",".join(REQUIRED)
            )
        rows: list[Row] = []
        problems: list[Problem] = []
        for number, record in enumerate(_nonblank(reader), start=1):
            if number > MAX_ROWS:
                # Not read further: what matters is that it is over the limit.
                too_many = Problem(0, "actuals", "too_many_rows", {"count": f"> {MAX_ROWS}", "max": MAX_ROWS})
                return Parsed([], [too_many])
            if len(record) != len(names):
                counts = {"got": len(record), "want": len(names)}
                problems.append(Problem(number, "row", "wrong_column_count", counts))
                continue
            values: dict[str, str | None] = dict.fromkeys(COLUMNS)
            values.update({name: cell.strip() or None for name, cell in zip(names, record, strict=True)})
            for name in REQUIRED:
                if values[name] is None:
                    problems.append(Problem(number, name, "missing_field"))
            if all(values[name] is not None for name in REQUIRED):
                rows.append(_row(values))
    except csv.Error as error:
        raise FormatError("malformed_csv", line=reader.line_num, reason=str(error)) from None
    if not rows and not problems:
        problems.append(Problem(0, "actuals", "no_rows"))
    return Parsed(rows, problems)


def _nonblank(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    return (record for record in reader if any(cell.strip() for cell in record))
