"""`kpibot source test KPI`: one fetch of a KPI's `source:`, printed in one line in the user's
language, exit 0 with the value and 1 with the reason, nothing stored. Run in-process against
the test database, with a real SQLite file as the warehouse."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from bot.clock import set_clock
from bot.models import Actual, FetchRun
from handlers.cli import main
from tests.test_fetch_runs import warehouse, write_plan

# 2026-11-30 10:00 in Tokyo: November is in progress.
NOW = dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC)


@pytest.fixture
def db(
    engine: Engine, database_url: URL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Engine]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    monkeypatch.setenv("KPIBOT_TIMEZONE", "Asia/Tokyo")
    set_clock(lambda: NOW)
    yield engine
    set_clock(None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stored(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        count = [
            connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (Actual.__table__, FetchRun.__table__)  # type: ignore[attr-defined]
        ]
    return count[0], count[1]


def test_a_working_source_prints_its_value_for_the_period_in_progress_and_stores_nothing(
    db: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "KPIBOT_SQL_WAREHOUSE", warehouse(tmp_path, ["2026-10-31", "2026-11-01", "2026-11-29", "2026-12-01"])
    )
    assert run(capsys, "import-plan", str(write_plan(tmp_path)))[0] == 0

    assert run(capsys, "source", "test", "won", "--locale", "en") == (
        0,
        "Deals won (sql (WAREHOUSE), Nov 2026): 2\n",
        "",
    )
    code, out, _ = run(capsys, "source", "test", "won", "--locale", "ja")
    assert (code, out) == (0, "受注数(sql (WAREHOUSE)、2026年11月): 2件\n")
    assert stored(db) == (0, 0)


def test_a_failing_source_says_why_in_one_line_and_exits_1(
    db: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "import-plan", str(write_plan(tmp_path)))[0] == 0
    monkeypatch.setenv("KPIBOT_SQL_WAREHOUSE", f"sqlite:///{tmp_path / 'no-such-warehouse.db'}")

    code, out, _ = run(capsys, "source", "test", "won", "--locale", "en")
    assert code == 1
    assert out.startswith("Deals won (sql (WAREHOUSE), Nov 2026): no value — could not connect")
    assert out.count("\n") == 1
    code, out, _ = run(capsys, "source", "test", "won", "--locale", "ja")
    assert code == 1 and "取得できません" in out
    assert not (tmp_path / "no-such-warehouse.db").exists()  # never created by a test fetch
    assert stored(db) == (0, 0)


def test_an_unknown_or_unsourced_kpi_is_an_error_naming_it(
    db: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "import-plan", str(write_plan(tmp_path)))[0] == 0

    code, out, err = run(capsys, "source", "test", "nope", "--locale", "en")
    assert code != 0 and out == "" and "There is no KPI nope" in err
    code, out, err = run(capsys, "source", "test", "calls", "--locale", "ja")
    assert code != 0 and out == "" and "calls には取得元(source:)がありません" in err
