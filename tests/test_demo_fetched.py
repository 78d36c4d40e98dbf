"""`kpibot demo --fetched`: the example plan plus a KPI fetched by SQL from the demo's own SQLite
(examples/demo-fetched.yaml), at a pinned date: what it prints, what its database holds."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from bot.clock import set_clock
from handlers.cli import main

# 2026-11-30 10:00 in Tokyo: November in progress, October the last finished month.
NOW = dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_the_fetched_demo_stores_the_warehouse_count_and_the_digest_says_where_it_came_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locale: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "KPIBOT_TIMEZONE", "KPIBOT_LOCALE"):
        monkeypatch.delenv(name, raising=False)
    set_clock(lambda: NOW)
    try:
        code = main(["--locale", locale, "demo", "--fetched"])
    finally:
        set_clock(None)
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")

    with sqlite3.connect(tmp_path / "kpibot-demo.db") as db:
        counted = dict(
            db.execute(
                "SELECT strftime('%Y-%m', received_on), COUNT(*) FROM crm_inquiries GROUP BY 1"
            ).fetchall()
        )
        stored = dict(
            db.execute(
                "SELECT a.period, a.value FROM actual a JOIN kpi k ON k.id = a.kpi_id"
                " WHERE k.key = 'inquiries' AND a.superseded_at IS NULL AND a.source = 'fetch'"
            ).fetchall()
        )
    db.close()
    assert {period: int(float(value)) for period, value in stored.items()} == {
        "2026-11": counted["2026-11"],
        "2026-10": counted["2026-10"],
    }
    assert counted["2026-11"] > 0
    fetched = {"ja": "をデモ用データベースから SQL で取得", "en": "by SQL from the demo database"}[locale]
    assert [line for line in out.splitlines() if fetched in line] == [
        render_line(locale, "2026-11", counted["2026-11"]),
        render_line(locale, "2026-10", counted["2026-10"]),
    ]
    mark = {"ja": ":inbox_tray: _sql (DEMO) から取得_", "en": ":inbox_tray: _fetched from sql (DEMO)_"}[
        locale
    ]
    name = {"ja": "*問い合わせ数*", "en": "*Inquiries*"}[locale]
    assert any(name in line and mark in line for line in out.splitlines())


def render_line(locale: str, period: str, value: int) -> str:
    if locale == "ja":
        return f"inquiries {period} をデモ用データベースから SQL で取得: {value}"
    return f"Fetched inquiries {period} by SQL from the demo database: {value}"
