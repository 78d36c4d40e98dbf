"""Trend charts: the PNG decodes, shows this department's data (in pixels and in its kpibot chunk),
renders Japanese without tofu and never fails on empty input."""

from __future__ import annotations

import io
import json
import math
import warnings
from decimal import Decimal

import numpy as np
import pytest
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from bot.digests.charts import (
    MAX_SUBPLOTS,
    METADATA_KEY,
    ChartSeries,
    build_figure,
    render_trend_chart,
)
from bot.formats import axis_label
from bot.numbers import parse_number
from bot.render import message

WEEKS = [f"2026-W{week}" for week in range(37, 50)]  # the last 13 weekly periods
MONTHS = [f"2026-{month:02d}" for month in range(1, 12)] + ["2026-12", "2027-01"]
ACTUAL_RGB = (0x1F, 0x77, 0xB4)


def D(value: str | int) -> Decimal:  # noqa: N802  (reads like a literal)
    return Decimal(value)


def series(
    name: str,
    unit: str,
    periods: list[str],
    start: str,
    step: str,
    target: tuple[str, str] | None,
    gaps: tuple[int, ...] = (),
) -> ChartSeries:
    actuals = [None if i in gaps else D(start) + D(step) * i for i in range(len(periods))]
    targets = [None if target is None else (D(target[0]), D(target[1]))] * len(periods)
    return ChartSeries(name, unit, periods, actuals, targets)


SALES = [
    series("新規アプローチ数", "count", WEEKS, "80", "3", ("100", "100"), gaps=(4,)),
    series("成約率", "percent", WEEKS, "14", "0.4", ("15", "20")),
    series("売上", "jpy", MONTHS, "25000000", "1500000", ("40000000", "40000000")),
    series("MQL", "count", WEEKS, "1000", "50", ("1300", "1300"), gaps=(0, 1)),
    series("Response time", "hours", WEEKS, "2.5", "0.25", None),
    series("NPS", "score", MONTHS, "30", "1", ("40", "40")),
]
SUPPORT = [
    series("一次解決率", "percent", WEEKS, "60", "1.5", ("75", "80")),
    series("Tickets closed", "count", WEEKS, "300", "-4", ("250", "250"), gaps=(12,)),
]


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def chart_data(png: bytes) -> dict:
    return json.loads(decode(png).text[METADATA_KEY])


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(decode(png).convert("RGB"), dtype=np.int16)


def plot_area(png: bytes, figure: Figure, index: int) -> np.ndarray:
    """The pixels inside subplot `index` (figure positions are fractions from the bottom left)."""
    image = pixels(png)
    height, width = image.shape[:2]
    box = figure.axes[index].get_position()
    rows = slice(round(height * (1 - box.y1)) + 2, round(height * (1 - box.y0)) - 2)
    columns = slice(round(width * box.x0) + 2, round(width * box.x1) - 2)
    return image[rows, columns]


def glyph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


@pytest.mark.parametrize("locale", ["en", "ja"])
def test_png_decodes_at_its_size_and_holds_exactly_the_departments_series(locale: str) -> None:
    png = render_trend_chart("営業部 Sales", SALES, locale)

    image = decode(png)
    assert image.format == "PNG"
    assert image.size == (1200, 800)  # 6 KPIs: 3 columns, 2 rows of 400 px
    data = chart_data(png)
    assert data["title"] == "営業部 Sales"
    assert data["locale"] == locale
    assert data["no_data"] is False
    assert data["omitted"] == 0
    assert [item["name"] for item in data["series"]] == [item.name for item in SALES]
    for drawn, given in zip(data["series"], SALES, strict=True):
        assert drawn["unit"] == given.unit
        assert drawn["periods"] == given.periods
        assert [None if v is None else Decimal(v) for v in drawn["actuals"]] == given.actuals
        assert [
            None if t is None else (Decimal(t[0]), Decimal(t[1])) for t in drawn["targets"]
        ] == given.targets
    # Spot-check values as strings, so a formatting change in the chunk is noticed.
    assert data["series"][0]["actuals"][:5] == ["80", "83", "86", "89", None]
    assert data["series"][1]["targets"][0] == ["15", "20"]
    assert data["series"][4]["targets"][0] is None


def test_identical_input_gives_identical_bytes_and_no_software_stamp() -> None:
    first = render_trend_chart("営業部", SALES, "ja")
    assert render_trend_chart("営業部", SALES, "ja") == first
    assert "Software" not in decode(first).text


def test_two_departments_charts_differ_in_data_and_pixels() -> None:
    sales = render_trend_chart("営業部", SALES[:2], "ja")
    support = render_trend_chart("サポート部", SUPPORT, "ja")

    assert chart_data(sales)["series"] != chart_data(support)["series"]
    assert [s["name"] for s in chart_data(support)["series"]] == ["一次解決率", "Tickets closed"]
    assert decode(sales).size == decode(support).size  # same layout, so the difference is the data
    assert np.any(pixels(sales) != pixels(support))


def test_plotted_lines_equal_the_input() -> None:
    figure = build_figure("営業部", SALES, "en")

    assert len(figure.axes) == len(SALES)
    for axes, item in zip(figure.axes, SALES, strict=True):
        actual = axes.lines[0]
        # From the first reported period on: MQL's first two weeks were never reported.
        first = next(i for i, value in enumerate(item.actuals) if value is not None)
        assert list(actual.get_xdata()) == list(range(len(item.periods) - first))
        expected = [math.nan if v is None else float(v) for v in item.actuals[first:]]
        np.testing.assert_array_equal(actual.get_ydata(), expected)  # NaN = a gap, not a zero
        assert axes.get_title(loc="left") == item.name
        labels = [label.get_text() for label in axes.get_xticklabels()]
        # Periods named as the digest names them on an axis ("wk 49", 「2026年11月」), not as keys.
        named = [axis_label(key, "en") for key in item.periods]
        assert labels and set(labels) <= set(named[first:])
        assert labels[-1] == named[-1]  # the newest period is always labelled
    assert len(figure.axes[3].lines[0].get_xdata()) == len(WEEKS) - 2

    single_target = figure.axes[0].lines[1]  # dashed line for one value
    np.testing.assert_array_equal(single_target.get_ydata(), [100.0] * len(WEEKS))
    assert single_target.get_linestyle() == "--"
    band = figure.axes[1].collections[0]  # shaded band for the 15–20 % range
    (low, high) = band.get_paths()[0].get_extents().intervaly
    assert (low, high) == (15.0, 20.0)
    assert len(figure.axes[4].lines) == 1  # no target: nothing but the actual line


@pytest.mark.parametrize(
    ("locale", "unit", "start", "expected"),
    [
        ("ja", "jpy", "25000000", "万"),
        ("en", "jpy", "25000000", "M"),
        ("en", "count", "10000", "k"),
        ("ja", "percent", "14", "%"),
    ],
)
def test_y_ticks_are_in_the_units_scale_and_state_the_tick_value(
    locale: str, unit: str, start: str, expected: str
) -> None:
    figure = build_figure("x", [series("KPI", unit, WEEKS, start, str(D(start) / 20), None)], locale)
    figure.canvas.draw()
    axes = figure.axes[0]

    labels = [label.get_text() for label in axes.get_yticklabels()]
    ticks = list(axes.get_yticks())
    assert labels and all(expected in label for label, tick in zip(labels, ticks, strict=True) if tick)
    for label, tick in zip(labels, ticks, strict=True):
        assert parse_number(label).value == Decimal(repr(round(float(tick), 10)))


def test_close_ticks_fall_back_to_full_numbers_rather_than_a_misleading_compact_one() -> None:
    # 1,000–1,120 gets ticks every 20 or 25, which "1.0k / 1.1k" would blur together.
    figure = build_figure("x", [series("KPI", "count", WEEKS, "1000", "10", None)], "en")
    figure.canvas.draw()
    axes = figure.axes[0]

    for label, tick in zip(axes.get_yticklabels(), axes.get_yticks(), strict=True):
        assert parse_number(label.get_text()).value == Decimal(repr(float(tick)))


def test_japanese_labels_render_with_the_bundled_font_without_missing_glyphs() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render_trend_chart("営業部 — 週次 KPI", SALES, "ja")
    assert glyph_warnings(caught) == []

    figure = build_figure("営業部", SALES, "ja")
    title = figure.axes[0].title
    assert font_manager.findfont(title.get_fontproperties()).endswith("ipaexg.ttf")

    # The check above can fail: the same text in a Latin-only font does warn.
    control = Figure()
    FigureCanvasAgg(control)
    control.text(0.5, 0.5, "営業部", fontfamily=["DejaVu Sans"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        control.savefig(io.BytesIO(), format="png")
    assert glyph_warnings(caught)


def test_plot_area_is_not_blank_and_shows_the_actual_line() -> None:
    png = render_trend_chart("営業部", SALES, "en")
    figure = build_figure("営業部", SALES, "en")

    for index in range(len(SALES)):
        area = plot_area(png, figure, index)
        assert area.reshape(-1, 3).var(axis=0).sum() > 0
        near_line = np.abs(area - np.array(ACTUAL_RGB)).sum(axis=2) < 30
        assert near_line.sum() > 100, f"subplot {index} has no actual line"


@pytest.mark.parametrize("locale", ["en", "ja"])
def test_more_kpis_than_fit_are_counted_in_the_footer(locale: str) -> None:
    many = [
        series(f"KPI {i}", "count", WEEKS, str(10 + i), "1", ("20", "20")) for i in range(MAX_SUBPLOTS + 3)
    ]

    png = render_trend_chart("営業部", many, locale)
    figure = build_figure("営業部", many, locale)

    assert len(figure.axes) == MAX_SUBPLOTS
    footer = message("chart.more_kpis", locale, count=3)
    assert "3" in footer
    assert footer in [text.get_text() for text in figure.texts]
    assert decode(png).size == (1200, 1600)  # 12 KPIs: 4 rows
    data = chart_data(png)
    assert data["omitted"] == 3
    assert [item["name"] for item in data["series"]] == [f"KPI {i}" for i in range(MAX_SUBPLOTS)]


NO_ACTUALS = [
    ChartSeries("成約率", "percent", WEEKS, [None] * len(WEEKS), [(D(15), D(20))] * len(WEEKS)),
    ChartSeries("MQL", "count", [], [], []),
]


@pytest.mark.parametrize("locale", ["en", "ja"])
@pytest.mark.parametrize("given", [[], NO_ACTUALS], ids=["empty", "all-none"])
def test_no_data_renders_a_chart_that_says_so(locale: str, given: list[ChartSeries]) -> None:
    png = render_trend_chart("営業部", given, locale)

    assert decode(png).size == (1200, 400)
    data = chart_data(png)
    assert data["no_data"] is True
    assert [item["name"] for item in data["series"]] == [item.name for item in given]
    figure = build_figure("営業部", given, locale)
    assert figure.axes == []
    assert message("chart.no_data", locale) in [text.get_text() for text in figure.texts]
    assert pixels(png).var() > 0  # the title and the message are drawn


def test_a_kpi_without_actuals_beside_others_says_no_data_in_its_own_frame() -> None:
    figure = build_figure("営業部", [SALES[0], NO_ACTUALS[0]], "ja")

    assert [text.get_text() for text in figure.axes[1].texts] == [message("chart.no_data", "ja")]
    assert len(figure.axes[0].texts) == 0


def test_series_with_mismatched_lengths_or_an_unknown_unit_are_refused() -> None:
    with pytest.raises(ValueError, match="equally long"):
        ChartSeries("MQL", "count", WEEKS, [D(1)], [None] * len(WEEKS))
    with pytest.raises(ValueError, match="unknown unit"):
        ChartSeries("MQL", "litres", [], [], [])


# -- honest axes ------------------------------------------------------------------------------------


def test_a_kpi_with_three_months_uses_the_whole_width_for_them() -> None:
    young = series("解約率", "percent", MONTHS, "3", "0.1", ("2", "2"), gaps=tuple(range(10)))
    figure = build_figure("x", [young], "ja")
    figure.canvas.draw()
    axes = figure.axes[0]
    assert list(axes.lines[0].get_xdata()) == [0, 1, 2]
    assert axes.get_xlim() == (-0.5, 2.5)
    shown = [label.get_text() for label in axes.get_xticklabels()]
    assert shown == [axis_label(month, "ja") for month in MONTHS[-3:]]


@pytest.mark.parametrize(
    ("start", "step", "target"),
    [("1000", "2", ("1020", "1020")), ("98", "0.2", ("100", "100")), ("500", "1", ("900", "900"))],
)
def test_the_y_axis_starts_at_zero_and_holds_the_target(
    start: str, step: str, target: tuple[str, str]
) -> None:
    # ±2 % around 1,000 is drawn as ±2 % of the height, not from the bottom of the frame to the top.
    item = series("KPI", "count", WEEKS, start, step, target)
    figure = build_figure("x", [item], "en")
    figure.canvas.draw()
    low, high = figure.axes[0].get_ylim()
    values = [float(v) for v in item.actuals if v is not None]
    assert low == 0.0
    assert high >= max([*values, float(target[1])])
    assert (max(values) - min(values)) / (high - low) < 0.15


def test_every_tick_of_an_axis_is_written_in_one_style() -> None:
    # Cost per lead around ¥9,000–¥12,000 in ja: never "¥9,000" beside "¥1万".
    item = series("リード獲得単価", "jpy", MONTHS, "9000", "250", ("8000", "8000"))
    figure = build_figure("x", [item], "ja")
    figure.canvas.draw()
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels and all("万" not in label for label in labels)
    large = series("売上", "jpy", MONTHS, "25000000", "1500000", ("40000000", "40000000"))
    figure = build_figure("x", [large], "ja")
    figure.canvas.draw()
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()][1:]  # after ¥0
    assert labels and all(label.endswith("万") for label in labels)
