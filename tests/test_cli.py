"""The `kpibot` command, run in-process: what the user reads, the exit code, and what the
database holds afterwards. Each test works in its own empty directory, so no stray `.env`
is read, and sets every setting it depends on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlmodel import SQLModel

from bot.cli import main
from bot.clock import set_clock
from bot.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "b2b-plan.yaml"
SMALL = Path(__file__).resolve().parent / "fixtures" / "small-plan.yaml"
SETTINGS = (
    "DATABASE_URL",
    "PORT",
    "KPIBOT_TIMEZONE",
    "KPIBOT_LOCALE",
    "KPIBOT_FISCAL_YEAR_START",
    "SLACK_API_URL",
)
UNREACHABLE = "postgresql+psycopg://kpi:s3cret@127.0.0.1:1/nope"
DEPARTMENTS = {
    "ja": ["マーケティング部", "インサイドセールス部", "営業部", "カスタマーサクセス部"],
    "en": ["Marketing", "Inside Sales", "Sales", "Customer Success"],
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db(engine: Engine, database_url: URL, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """DATABASE_URL pointing at the test database (emptied after the test by `engine`)."""
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    yield engine


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in SQLModel.metadata.sorted_tables
        }


def pin_clock() -> None:
    set_clock(lambda: dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC))


# ---------------------------------------------------------------- migrate and import-plan


def test_migrate_then_import_then_import_again(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--locale", "en", "migrate")
    assert (code, err) == (0, "")
    assert "is at the latest schema" in out

    code, out, err = run(capsys, "--locale", "en", "import-plan", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"Imported {EXAMPLE}:",
        "  goal: 1 created, 0 updated, 0 unchanged",
        "  department: 5 created, 0 updated, 0 unchanged",
        "  success_factor: 12 created, 0 updated, 0 unchanged",
        "  kpi: 16 created, 0 updated, 0 unchanged",
        "  target: 18 created, 0 updated, 0 unchanged",
    ]

    code, out, err = run(capsys, "--locale", "en", "import-plan", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"Imported {EXAMPLE}: already up to date, nothing changed."
    assert "  kpi: 0 created, 0 updated, 16 unchanged" in out.splitlines()
    assert table_counts(db)["kpi"] == 16


def test_import_speaks_japanese_by_default(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "import-plan", str(EXAMPLE))
    code, out, _ = run(capsys, "import-plan", str(EXAMPLE))
    assert code == 0
    assert f"{EXAMPLE} を取り込みました: すでに最新で、変更はありません。" in out
    assert "  kpi: 新規 0、更新 0、変更なし 16" in out.splitlines()


def test_locale_option_after_the_command(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "import-plan", str(EXAMPLE), "--locale", "en")
    assert code == 0
    assert out.startswith(f"Imported {EXAMPLE}:")


def test_dry_run_writes_nothing(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    before = table_counts(db)

    code, out, err = run(capsys, "--locale", "en", "import-plan", "--dry-run", str(EXAMPLE))

    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{EXAMPLE} is valid (--dry-run: nothing was written):"
    assert "  kpi: 16 created, 0 updated, 0 unchanged" in out.splitlines()
    assert table_counts(db) == before


def test_bad_file_lists_every_problem_and_writes_nothing(
    db: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "import-plan", str(SMALL))
    before = table_counts(db)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        SMALL.read_text(encoding="utf-8")
        .replace("owner: U0OWNER\n    unit: count", "owner: U0OWNER\n    unit: kg")
        .replace("timezone: Asia/Tokyo", "timezone: Asia/Tokio"),
        encoding="utf-8",
    )

    code, out, err = run(capsys, "--locale", "en", "import-plan", str(bad))

    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{bad}: 2 problem(s), nothing was imported:",
        "  line 22, `timezone`: 'Asia/Tokio' is not an IANA time zone (e.g. Asia/Tokyo, America/New_York)",
        "  line 31, `unit`: unknown unit 'kg'; use one of: count, percent, jpy, usd, score, hours, days",
    ]
    assert table_counts(db) == before

    code, _, err = run(capsys, "import-plan", str(bad))
    assert code == 1
    assert "31 行目" in err or "line 31" in err
    assert "単位「kg」は使えません" in err


def test_missing_plan_file(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "import-plan", "no-such-plan.yaml")
    assert (code, out) == (1, "")
    assert err.splitlines() == ["kpibot: no-such-plan.yaml: no such file"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_import_into_an_unmigrated_database(
    backend: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        # A search_path naming a schema that does not exist: connected, but no tables at all.
        base = pytest.importorskip("os").environ.get("KPIBOT_TEST_POSTGRES_URL")
        if not base:
            pytest.skip("KPIBOT_TEST_POSTGRES_URL is not set")
        url = sa.make_url(base).update_query_dict({"options": "-csearch_path=kpibot_never_created"})
        url = url.render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)

    code, out, err = run(capsys, "--locale", "en", "import-plan", str(EXAMPLE))

    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1
    assert "not initialised; run `kpibot migrate` first" in err


# ---------------------------------------------------------------- export


def test_export_from_the_command_line(db: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "import-plan", str(EXAMPLE))

    code, out, err = run(capsys, "--locale", "en", "export", "targets", "-o", "targets.csv")
    assert (code, err) == (0, "")
    assert out.strip() == "Wrote 18 rows to targets.csv."
    assert (tmp_path / "targets.csv").read_text(encoding="utf-8").splitlines()[:2] == [
        "kpi,period,target",
        "appointments,*,12",
    ]

    code, out, _ = run(capsys, "export")  # actuals, to standard output
    assert code == 0
    assert out.splitlines()[0].startswith("department,kpi,period,value,unit")

    code, out, _ = run(capsys, "--locale", "en", "import-plan", "targets.csv")
    assert code == 0
    assert "  target: 0 created, 0 updated, 18 unchanged" in out.splitlines()


# ---------------------------------------------------------------- demo


DIGEST_HEADERS = {"ja": "📊 {} 週次 KPI ダイジェスト", "en": "📊 {} — weekly KPI digest"}
DIVISION_HEADERS = {"ja": "📊 事業部 KPI サマリー", "en": "📊 Division KPI summary"}


def _assert_digests(out: str, locale: str, preview: Path) -> None:
    """The demo prints the real digest messages (and writes them with charts as HTML)."""
    assert DIVISION_HEADERS[locale] in out
    html = preview.read_text(encoding="utf-8")
    for name in DEPARTMENTS[locale]:
        assert DIGEST_HEADERS[locale].format(name) in out, f"no digest for {name}"
        assert DIGEST_HEADERS[locale].format(name) in html, f"no digest for {name} in the preview"
    # One trend chart per department with KPIs, embedded in the preview.
    assert html.count("data:image/png;base64,") == len(DEPARTMENTS[locale])
    # A plausible quarter: some KPIs on track, a few drifting off it.
    assert "🟢" in out and "🔴" in out
    # Alerts in the channels, and one thread telling the whole story: the MQL alert, the
    # countermeasure logged in its thread, its measured effect and the recovery.
    story = {
        "ja": ["🔴 *SQL 数*", "*MQL 数の対策*", "2026-10 128(64 %) → 2026-11 *186*", "目標水準に戻りました"],
        "en": [
            "🔴 *SQLs*",
            "*Countermeasure for MQLs*",
            "2026-10 128 (64 %) → 2026-11 *186*",
            "Back on track",
        ],
    }[locale]
    for fragment in story:
        assert fragment in out, fragment
    assert "<button>" in html and "C0MARKETING" in html


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_demo_needs_no_configuration(capsys: pytest.CaptureFixture[str], tmp_path: Path, locale: str) -> None:
    pin_clock()
    argv = ["demo"] if locale == "ja" else ["demo", "--locale", "en"]

    code, out, err = run(capsys, *argv)

    assert (code, err) == (0, "")
    assert (tmp_path / "kpibot-demo.db").is_file()
    _assert_digests(out, locale, tmp_path / "kpibot-demo.html")
    # 13 weekly periods back from the pinned date end with the week before it.
    assert "2026-W48" in out and "2026-10" in out
    assert len([line for line in out.splitlines() if "🔴" in line]) >= 2


def test_demo_is_repeatable(capsys: pytest.CaptureFixture[str]) -> None:
    # Each run starts from a fresh file, so a second run shows the same quarter, not corrections.
    pin_clock()
    first = run(capsys, "--locale", "en", "demo")
    second = run(capsys, "--locale", "en", "demo")
    assert first == second


def test_demo_on_todays_date(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "demo", "--locale", "en")
    assert code == 0
    _assert_digests(out, "en", Path("kpibot-demo.html"))


def test_demo_on_the_test_database(
    db: Engine, database_url: URL, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Works on PostgreSQL too; a sqlite --database other than the default is used as given.
    pin_clock()
    code, out, _ = run(capsys, "--locale", "en", "demo", "--database", database_url.render_as_string(False))
    assert code == 0
    _assert_digests(out, "en", tmp_path / "kpibot-demo.html")
    # A quarter for every reported (non-formula) KPI: 3 weekly × 13 weeks + 11 monthly × 3 months,
    # the fiscal year so far (April–October) for revenue, which measures the KGI, and the
    # November MQLs that show the countermeasure's effect.
    assert table_counts(db)["actual"] == 3 * 13 + 11 * 3 + 7 + 1
    assert not (tmp_path / "kpibot-demo.db").exists()


# ---------------------------------------------------------------- failures: one line, no traceback


@pytest.mark.parametrize(
    "argv",
    [["migrate"], ["import-plan", str(EXAMPLE)], ["export"], ["export", "targets"]],
    ids=["migrate", "import-plan", "export", "export targets"],
)
def test_unreachable_database_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)

    code, out, err = run(capsys, *argv)

    assert code != 0
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "postgresql+psycopg://kpi:***@127.0.0.1:1/nope" in err
    assert "s3cret" not in err and "Traceback" not in err


def test_unreachable_demo_database(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "demo", "--database", UNREACHABLE)
    assert code != 0
    assert len(err.splitlines()) == 1
    assert "kpi:***@127.0.0.1:1/nope" in err and "s3cret" not in err


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("KPIBOT_TIMEZONE", "Mars/Olympus"),
        ("KPIBOT_LOCALE", "fr"),
        ("KPIBOT_FISCAL_YEAR_START", "13"),
        ("DATABASE_URL", "mysql://kpi@localhost/kpi"),
        ("DATABASE_URL", "not a url"),
        ("SLACK_API_URL", "slack.example"),
        ("DATABASE_URL", "postgresql://kpi:s3cret@db:port/kpi"),
    ],
)
def test_bad_setting_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    code, out, err = run(capsys, "migrate")

    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1, err
    assert name in err and "Traceback" not in err and "s3cret" not in err


def test_bad_setting_in_dotenv_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KPIBOT_TIMEZONE=Tokyo\n", encoding="utf-8")
    code, _, err = run(capsys, "migrate")
    assert code == 1
    assert err.splitlines() == [
        "kpibot: KPIBOT_TIMEZONE must be an IANA time zone such as Asia/Tokyo, got 'Tokyo'"
    ]


def test_defaults_need_no_configuration() -> None:
    settings = load_settings()
    assert settings.database_url.render_as_string() == "sqlite:///kpibot.db"
    assert (settings.port, settings.locale, str(settings.timezone)) == (3000, "ja", "Asia/Tokyo")
