"""The demo's HTML preview opened in a real headless Chromium (Debian's `chromium`, driven by
Playwright): its Japanese renders in the font the page embeds, every department's digest and the
charts are on the page, and a screenshot is kept (its path printed; .ci/run lists it as an artifact).

Chromium is not optional: CI installs it (.ci/run) and this test fails, never skips, without it.
The machine CI runs on has no CJK system font, so a character missing from the embedded font would
be a box: the check below is that every Japanese character of the page is in that font.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import re
import shutil
import unicodedata
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fontTools.ttLib import TTFont

from bot.clock import set_clock
from handlers.cli import main
from handlers.preview import FONT_FAMILY

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a closed network, as root (the machine's notes: without them Chromium keeps trying to
# reach Google's hosts, and refuses to start as root in its sandbox).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAY = dt.date(2026, 11, 30)  # a Monday: the digests of the week before
# What the page says, per language of the demo: its departments, the headers, a head and a channel.
PAGES = {
    "ja": {
        "departments": ["マーケティング部", "インサイドセールス部", "営業部", "カスタマーサクセス部"],
        "digest": "週次 KPI ダイジェスト",
        "division": "事業部 KPI サマリー",
        "head": "@マーケティング部長",
        "channel": "#営業部",
    },
    "en": {
        "departments": ["Marketing", "Inside Sales", "Sales", "Customer Success"],
        "digest": "weekly KPI digest",
        "division": "Division KPI summary",
        "head": "@Head of Marketing",
        "channel": "#Sales",
    },
}
EMBEDDED = re.compile(r"src: url\(data:font/woff;base64,([A-Za-z0-9+/=]+)\)")


def japanese(char: str) -> bool:
    name = unicodedata.name(char, "")
    return name.startswith(("CJK ", "HIRAGANA", "KATAKANA", "FULLWIDTH", "IDEOGRAPHIC"))


@pytest.fixture(scope="module", params=sorted(PAGES))
def locale(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def preview(tmp_path_factory: pytest.TempPathFactory, locale: str) -> Path:
    """`kpibot demo --locale …` at 10:00 in Tokyo on DAY, its preview written to a temporary folder."""
    folder = tmp_path_factory.mktemp(f"preview-{locale}")
    set_clock(lambda: dt.datetime.combine(DAY, dt.time(10, 0), tzinfo=ZoneInfo("Asia/Tokyo")))
    path = folder / "kpibot-demo.html"
    database = f"sqlite:///{folder / 'demo.db'}"
    code = main(["demo", "--locale", locale, "--database", database, "--preview", str(path)])
    assert code == 0
    return path


def screenshot_folder(tmp_path: Path) -> Path:
    """KPIBOT_ARTIFACTS_DIR when CI sets it (it lists the files at the end of its run), else tmp_path."""
    folder = Path(os.environ.get("KPIBOT_ARTIFACTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_preview_renders_in_chromium_with_the_shipped_font(
    preview: Path, locale: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page_says = PAGES[locale]
    departments = page_says["departments"]
    if not CHROMIUM.is_file() or shutil.which("chromium") is None:
        pytest.fail(
            f"Chromium is missing ({CHROMIUM}): `apt-get install -y chromium` (.ci/run installs it); "
            "the preview's browser test needs it and is never skipped"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(preview.as_uri())
            page.wait_for_load_state("load")
            page.evaluate("document.fonts.ready.then(() => true)")
            faces = page.evaluate("[...document.fonts].map(f => [f.family.replace(/\"/g, ''), f.status])")
            fits = page.evaluate(f"document.fonts.check('16px \"{FONT_FAMILY}\"', '事業部長')")
            body_font = page.evaluate("getComputedStyle(document.body).fontFamily")
            text = page.inner_text("body")
            headers = page.locator(".header").all_inner_texts()
            charts = page.locator("svg.chart").count()
            chart_lines = page.locator("svg.chart polyline").count()
            tables = page.locator("table.table").count()
            images = page.evaluate(
                "[...document.querySelectorAll('img.file')].map(i => i.complete && i.naturalWidth > 0)"
            )
            home = page.locator("#home").inner_text()
            shot = screenshot_folder(tmp_path) / f"kpibot-preview-{locale}.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\npreview screenshot: {shot}")

    # The embedded font loaded, the page asks for it, and it covers the text it is checked with.
    assert [FONT_FAMILY, "loaded"] in faces
    assert FONT_FAMILY in body_font
    assert fits is True
    # Every Japanese character on the page is in the embedded font (no system font could stand in).
    [data] = EMBEDDED.findall(preview.read_text(encoding="utf-8"))
    cmap = TTFont(io.BytesIO(base64.b64decode(data))).getBestCmap()
    shown = {char for char in text if japanese(char)}
    if locale == "ja":
        assert len(shown) > 100
    assert sorted(char for char in shown if ord(char) not in cmap) == []

    # Each department's digest, its scorecard table, the native charts and the PNG grids.
    for name in departments:
        assert any(name in header and page_says["digest"] in header for header in headers), name
    assert any(page_says["division"] in header for header in headers)
    assert tables == len(departments) + 1  # each scorecard, and the division's summary
    assert charts >= 1 and chart_lines >= 2 * charts  # the target line and at least one KPI
    assert images == [True] * len(departments)
    # People and channels by name, shortcodes as emoji; the Home tab is on the page.
    assert page_says["head"] in home
    assert page_says["channel"] in text
    assert not re.search(r"[#@][CU]0[A-Z0-9]+", text)
    assert not re.search(r":(memo|white_check_mark|rotating_light):", text)
    assert shot.stat().st_size > 10_000
