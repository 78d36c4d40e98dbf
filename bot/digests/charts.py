"""Trend charts: one PNG per department, each KPI's actuals against its target over recent periods.

Plain data in, PNG bytes out. Figures are built with the object-oriented API (``Figure`` plus
``FigureCanvasAgg``), never pyplot, so nothing is registered globally, no GUI backend is touched and
every figure is freed like any other object once the bytes are written.

What was drawn is also written into the PNG as a ``kpibot`` text chunk (JSON), so tests and tools can
check a chart's data without reading pixels.

Honest axes: a KPI's x-axis starts at its first reported period (a KPI with three months of history
is not squeezed into the right fifth of a 13-month frame); its y-axis starts at zero for quantities
that cannot go below it and always holds the target, so a 2 % dip looks like 2 %, not a crash; and
every tick of an axis is written in one style (``¥9,000`` and ``¥1万`` never share an axis).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Importing it registers the bundled IPAex Gothic font with matplotlib's font manager. (It also sets
# the global rc font family; we do not rely on that and name the font on every text we draw.)
import matplotlib_fontja  # noqa: F401
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import Formatter, MaxNLocator

from bot import formats
from bot.numbers import format_compact, format_decimal, parse_number
from bot.render import display_width, message, message_keys, normalize_locale

# Japanese first, so kana and kanji never fall back to tofu; DejaVu Sans catches anything IPAex lacks.
FONT_FAMILY = [matplotlib_fontja.matplotlib_fontja.FONT_NAME, "DejaVu Sans"]

MAX_SUBPLOTS = 12
MAX_COLUMNS = 3
DPI = 100
WIDTH_PX = 1200
ROW_HEIGHT_PX = 400
METADATA_KEY = "kpibot"

# Fixed margins in pixels, so the layout costs no measuring pass (constrained layout would) and a
# chart with more rows keeps the same spacing.
_TOP_PX = 84  # the chart title and legend, above the first row's KPI names
_BOTTOM_PX = 40  # the last row's period labels
_FOOTER_PX = 24
_LEFT_PX = 72  # y tick labels such as "¥1,000万"
_RIGHT_PX = 40  # half of the last period label sticks out past the axes
_COLUMN_GAP_PX = 88
_ROW_GAP_PX = 84  # period labels of one row and the KPI name of the next

_ACTUAL_COLOR = "#1f77b4"
_TARGET_COLOR = "#6b6b6b"
_MAX_PERIOD_LABELS = {1: 13, 2: 9, 3: 6}  # by column count: "2026-W37" needs ~55 px at 8 pt
_MAX_TITLE_WIDTH = {1: 110, 2: 70, 3: 44}  # display columns (CJK counts 2) per subplot title


@dataclass(frozen=True)
class ChartSeries:
    """One KPI's history: the value at each period and the target (low, high) it was measured against."""

    name: str  # KPI display name (may be Japanese)
    unit: str  # "count", "percent", "jpy", "usd", "score", "hours", "days"
    periods: list[str]  # period keys, oldest first
    actuals: list[Decimal | None]  # None = not reported
    targets: list[tuple[Decimal, Decimal] | None]  # (low, high); low == high for one value; None = none

    def __post_init__(self) -> None:
        # A length mismatch is a caller's bug; drawing it would shift values onto the wrong periods.
        if not len(self.periods) == len(self.actuals) == len(self.targets):
            raise ValueError(
                f"{self.name!r}: {len(self.periods)} periods, {len(self.actuals)} actuals, "
                f"{len(self.targets)} targets; they must be equally long"
            )
        if f"chart.axis.{self.unit}" not in message_keys("en"):
            raise ValueError(f"{self.name!r}: unknown unit {self.unit!r}")

    @property
    def has_actuals(self) -> bool:
        return any(value is not None for value in self.actuals)


def render_trend_chart(title: str, series: list[ChartSeries], locale: str) -> bytes:
    """A PNG: one small chart per KPI (at most MAX_SUBPLOTS), or a "no data yet" chart."""
    figure = build_figure(title, series, locale)
    buffer = io.BytesIO()
    # No Software entry (it carries the matplotlib version), so identical input gives identical bytes.
    metadata = {"Software": None, METADATA_KEY: json.dumps(chart_data(title, series, locale))}
    figure.savefig(buffer, format="png", dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def chart_data(title: str, series: list[ChartSeries], locale: str) -> dict[str, Any]:
    """What the chart shows, as JSON-ready strings: the series drawn and how many were left out."""
    drawn, omitted = _split(series)
    return {
        "title": title,
        "locale": normalize_locale(locale),
        "no_data": not drawn,
        "series": [
            {
                "name": item.name,
                "unit": str(item.unit),
                "periods": list(item.periods),
                "actuals": [None if value is None else str(value) for value in item.actuals],
                "targets": [
                    None if target is None else [str(target[0]), str(target[1])] for target in item.targets
                ],
            }
            for item in (drawn or series)  # a no-data chart still records what it was given
        ],
        "omitted": len(omitted),
    }


def build_figure(title: str, series: list[ChartSeries], locale: str) -> Figure:
    """The chart as a matplotlib Figure (rendered by render_trend_chart; tests inspect its artists)."""
    locale = normalize_locale(locale)
    drawn, omitted = _split(series)
    if not drawn:
        return _no_data_figure(title, locale)

    columns = min(MAX_COLUMNS, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    width, height = WIDTH_PX, ROW_HEIGHT_PX * rows
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)

    bottom_px = _BOTTOM_PX + (_FOOTER_PX if omitted else 0)
    cell_width = (width - _LEFT_PX - _RIGHT_PX - (columns - 1) * _COLUMN_GAP_PX) / columns
    cell_height = (height - _TOP_PX - bottom_px - (rows - 1) * _ROW_GAP_PX) / rows
    grid = figure.add_gridspec(
        rows,
        columns,
        left=_LEFT_PX / width,
        right=1 - _RIGHT_PX / width,
        top=1 - _TOP_PX / height,
        bottom=bottom_px / height,
        wspace=_COLUMN_GAP_PX / cell_width,
        hspace=_ROW_GAP_PX / cell_height,
    )
    for index, item in enumerate(drawn):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        _draw_series(axes, item, locale, columns)

    figure.suptitle(
        title, x=_LEFT_PX / width, y=1 - 14 / height, ha="left", va="top", fontsize=14, fontfamily=FONT_FAMILY
    )
    handles = [
        Line2D([], [], color=_ACTUAL_COLOR, marker="o", markersize=4, linewidth=1.8),
        Line2D([], [], color=_TARGET_COLOR, linestyle="--", linewidth=1.2),
        Patch(facecolor=_TARGET_COLOR, alpha=0.2),
    ]
    labels = [message(key, locale) for key in ("chart.actual", "chart.target", "chart.target_range")]
    if not any(_is_range(target) for item in drawn for target in item.targets):
        handles, labels = handles[:2], labels[:2]
    figure.legend(
        handles,
        labels,
        loc="upper right",
        bbox_to_anchor=(1 - _RIGHT_PX / width, 1 - 8 / height),
        ncols=len(handles),
        frameon=False,
        prop={"family": FONT_FAMILY, "size": 10},
    )
    if omitted:
        # Never drop KPIs silently: the reader learns the chart is partial.
        figure.text(
            _LEFT_PX / width,
            6 / height,
            message("chart.more_kpis", locale, count=len(omitted)),
            ha="left",
            va="bottom",
            fontsize=10,
            color="#444444",
            fontfamily=FONT_FAMILY,
        )
    return figure


def _split(series: list[ChartSeries]) -> tuple[list[ChartSeries], list[ChartSeries]]:
    """(drawn, omitted). All-empty input draws nothing: one "no data yet" beats twelve empty frames."""
    if not any(item.has_actuals for item in series):
        return [], []
    return series[:MAX_SUBPLOTS], series[MAX_SUBPLOTS:]


def _no_data_figure(title: str, locale: str) -> Figure:
    figure = Figure(figsize=(WIDTH_PX / DPI, ROW_HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.suptitle(
        title,
        x=_LEFT_PX / WIDTH_PX,
        y=1 - 14 / ROW_HEIGHT_PX,
        ha="left",
        va="top",
        fontsize=14,
        fontfamily=FONT_FAMILY,
    )
    figure.text(
        0.5,
        0.5,
        message("chart.no_data", locale),
        ha="center",
        va="center",
        fontsize=18,
        color="#666666",
        fontfamily=FONT_FAMILY,
    )
    return figure


def _reported_span(item: ChartSeries) -> ChartSeries:
    """The series from its first reported period on: the periods before it do not exist for this
    KPI yet (a new KPI, a plan imported last quarter). Gaps after it stay: they are missing reports."""
    first = next((i for i, value in enumerate(item.actuals) if value is not None), 0)
    return dataclasses.replace(
        item, periods=item.periods[first:], actuals=item.actuals[first:], targets=item.targets[first:]
    )


def y_range(item: ChartSeries) -> tuple[float, float] | None:
    """The y-limits: from zero (or the lowest value, if below zero) to a little above the highest
    actual or target. None when there is nothing to measure."""
    values = [float(v) for v in item.actuals if v is not None]
    values += [float(edge) for target in item.targets if target is not None for edge in target]
    if not values:
        return None
    low, high = min(0.0, min(values)), max(0.0, max(values))
    if high == low:
        return low, low + 1.0
    return low, high + (high - low) * 0.08  # headroom, so the highest point is not on the frame


def _draw_series(axes: Any, item: ChartSeries, locale: str, columns: int) -> None:
    item = _reported_span(item)
    x = list(range(len(item.periods)))
    # NaN breaks the line, so an unreported period shows as a gap rather than a made-up slope.
    actuals = [math.nan if value is None else float(value) for value in item.actuals]
    # The actual line goes first: ax.lines[0] is always the department's data.
    axes.plot(x, actuals, color=_ACTUAL_COLOR, marker="o", markersize=4, linewidth=1.8, zorder=3)

    singles = [float(t[0]) if t is not None and not _is_range(t) else math.nan for t in item.targets]
    if any(not math.isnan(value) for value in singles):
        # "_" markers keep a lone target (no neighbour to draw a line to) visible.
        axes.plot(
            x, singles, color=_TARGET_COLOR, linestyle="--", linewidth=1.2, marker="_", markersize=8, zorder=2
        )
    # A range covers its whole period (-0.5..+0.5 around the tick), so even a lone one shows as a box.
    edges = [edge for i in x for edge in (i - 0.5, i + 0.5)]
    lows = [float(t[0]) if _is_range(t) else math.nan for t in item.targets for _ in (0, 1)]
    highs = [float(t[1]) if _is_range(t) else math.nan for t in item.targets for _ in (0, 1)]
    if any(not math.isnan(value) for value in lows):
        axes.fill_between(edges, lows, highs, color=_TARGET_COLOR, alpha=0.2, linewidth=0, zorder=1)

    # A fixed y turns off matplotlib's title auto-placement, which measures every tick label (~20 ms
    # a subplot) only to move titles away from x-axes that are never on top here.
    axes.set_title(
        _shorten(item.name, _MAX_TITLE_WIDTH[columns]),
        loc="left",
        y=1.02,
        fontsize=11,
        fontfamily=FONT_FAMILY,
    )
    ticks = _period_ticks(len(x), _MAX_PERIOD_LABELS[columns])
    axes.set_xticks(ticks, [formats.axis_label(item.periods[i], locale) for i in ticks])
    axes.set_xlim(-0.5, max(len(x) - 0.5, 0.5))
    limits = y_range(item)
    if limits is not None:
        axes.set_ylim(*limits)
    axes.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    axes.yaxis.set_major_formatter(_UnitFormatter(str(item.unit), locale))
    axes.tick_params(labelsize=8, labelfontfamily=FONT_FAMILY, length=3)
    axes.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if not item.has_actuals:
        if all(target is None for target in item.targets):
            axes.set_yticks([])  # nothing to measure: ticks around 0 would only suggest a value
        axes.text(
            0.5,
            0.5,
            message("chart.no_data", locale),
            transform=axes.transAxes,
            ha="center",
            va="center",
            fontsize=10,
            color="#666666",
            fontfamily=FONT_FAMILY,
        )


def _is_range(target: tuple[Decimal, Decimal] | None) -> bool:
    return target is not None and target[0] != target[1]


def _period_ticks(count: int, limit: int) -> list[int]:
    """Every k-th period counted back from the latest, so the newest period is always labelled."""
    if count == 0:
        return []
    step = math.ceil(count / limit)
    return sorted(range(count - 1, -1, -step))


def _shorten(text: str, width: int) -> str:
    if display_width(text) <= width:
        return text
    kept = ""
    for char in text:
        if display_width(kept + char) > width - 1:
            break
        kept += char
    return kept + "…"


class _UnitFormatter(Formatter):
    """Y tick labels in the KPI's unit: ``15%``, ``¥1.2億`` / ``¥120M``, ``3.5k``, ``12時間``."""

    def __init__(self, unit: str, locale: str) -> None:
        self.unit = unit
        self.locale = locale

    def __call__(self, x: float, pos: int | None = None) -> str:
        return self.format_ticks([x])[0]

    def format_ticks(self, values: Any) -> list[str]:
        numbers = [Decimal(repr(round(float(value), 10))) for value in values]
        # Compact (1.2万, 3.5k) reads best, but keeps one fraction digit: when that would misstate a
        # tick (1,050 as 1.1k, 0.25 as 0.3), every label falls back to the full number.
        if self.unit == "percent":
            texts = [format_decimal(number, self.locale, 1) for number in numbers]
        else:
            texts = [format_compact(number, self.locale) for number in numbers]
        misstated = any(
            parse_number(text).value != number for text, number in zip(texts, numbers, strict=True)
        )
        if misstated or len({_scale_of(text) for text, n in zip(texts, numbers, strict=True) if n}) > 1:
            digits = max((_fraction_digits(number) for number in numbers), default=0)
            texts = [format_decimal(number, self.locale, digits) for number in numbers]
        return [message(f"chart.axis.{self.unit}", self.locale, value=text) for text in texts]


def _scale_of(text: str) -> str:
    """What a compact number is counted in: "万" of "1.2万", "k" of "3.5k", "" of "9,000"."""
    return re.sub(r"[\d.,\-−+\s]", "", text)


def _fraction_digits(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # tick values are finite
    return min(max(-exponent, 0), 6)
