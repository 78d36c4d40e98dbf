"""The `kpibot` command speaks the user's language everywhere: `--help` (argparse's own words
included), its usage errors, the import's counts and the places of a plan's problems. Run
in-process, at a pinned terminal width (argparse wraps help to $COLUMNS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL, Engine

from handlers.cli import main

SMALL = Path(__file__).resolve().parent / "fixtures" / "small-plan.yaml"


@pytest.fixture(autouse=True)
def _terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("KPIBOT_LOCALE", "ja")


def parse_exit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str, str]:
    """What argparse prints before it ends the process (help: 0, usage error: 2)."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_help_is_japanese_with_kpibot_locale_ja(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = parse_exit(capsys, "--help")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "使い方: kpibot [-h] [--locale {ja,en}] COMMAND ...",
        "",
        "Slack で KPI レビューを回します。",
        "",
        "引数:",
        "  COMMAND",
        "    migrate         データベースのスキーマを作成・更新します",
        "    import-plan     部署・KGI・KFS・KPI・目標値を取り込みます",
        "    plan            計画ファイルを確認します",
        "    export          実績や目標値を CSV で、計画を YAML で書き出します",
        "    demo            例の計画で四半期分の実績を模擬して実行します(Slack は不要)",
        "    digest          ダイジェストを今すぐ作成して投稿します(--dry-run なら表示だけ)",
        "    scheduler       ダイジェストとリマインダーを予定どおりに投稿します(Procfile の clock)",
        "    serve           $PORT の HTTP で Slack に応答します(gunicorn。GET /healthz)",
        "    socket          Socket Mode で Slack に応答します(SLACK_APP_TOKEN が必要)",
        "    alerts          KPI のアラートを一度だけ確認して投稿します(毎時のジョブと同じ処理)",
        "    source          実績を送信できるシステム(POST /api/v1/actuals)",
        "    hubspot         KPI に数える HubSpot の Webhook(POST /hooks/hubspot/NAME)",
        "",
        "オプション:",
        "  -h, --help        このヘルプを表示して終了します",
        "  --locale {ja,en}  メッセージの言語(既定: KPIBOT_LOCALE、なければ ja)",
    ]


def test_help_is_english_with_kpibot_locale_en(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPIBOT_LOCALE", "en")
    code, out, _ = parse_exit(capsys, "--help")
    lines = out.splitlines()
    assert code == 0
    assert lines[:6] == [
        "usage: kpibot [-h] [--locale {ja,en}] COMMAND ...",
        "",
        "KPI reviews in Slack.",
        "",
        "positional arguments:",
        "  COMMAND",
    ]
    assert "    migrate         create or upgrade the database schema" in lines
    assert lines[-3:] == [
        "options:",
        "  -h, --help        show this help message and exit",
        "  --locale {ja,en}  language of messages (default: KPIBOT_LOCALE or ja)",
    ]


def test_a_subcommands_help_is_in_the_locale_given_after_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = parse_exit(capsys, "plan", "check", "--help")
    assert code == 0
    assert out.splitlines() == [
        "使い方: kpibot plan check [-h] [--locale {ja,en}] file",
        "",
        "引数:",
        "  file              .yaml/.yml の計画、または KPI 表か目標値表の .csv",
        "",
        "オプション:",
        "  -h, --help        このヘルプを表示して終了します",
        "  --locale {ja,en}  メッセージの言語",
    ]
    # --help acts before --locale is parsed; the language is still the one asked for.
    code, out, _ = parse_exit(capsys, "plan", "check", "--help", "--locale", "en")
    assert out.splitlines()[:4] == [
        "usage: kpibot plan check [-h] [--locale {ja,en}] file",
        "",
        "positional arguments:",
        "  file              a .yaml/.yml plan or a .csv KPI or targets table",
    ]


@pytest.mark.parametrize(
    ("argv", "ja", "en"),
    [
        (
            ("import-plan",),
            "kpibot import-plan: エラー: 次の引数を指定してください: file",
            "kpibot import-plan: error: the following arguments are required: file",
        ),
        (
            ("digest", "--period"),
            "kpibot digest: エラー: 引数 --period: 値を 1 つ指定してください",
            "kpibot digest: error: argument --period: expected one argument",
        ),
        (
            ("export", "kpis"),
            "kpibot export: エラー: 引数 what: 'kpis' は選べません"
            "(次のいずれか: 'actuals', 'targets', 'plan')",
            "kpibot export: error: argument what: invalid choice: 'kpis' "
            "(choose from 'actuals', 'targets', 'plan')",
        ),
        (
            ("source", "add", "crm", "--rate", "many"),
            "kpibot source add: エラー: 引数 --rate: 'many' は int の値として正しくありません",
            "kpibot source add: error: argument --rate: invalid int value: 'many'",
        ),
        (
            ("migrate", "--force"),
            "kpibot: エラー: 認識できない引数です: --force",
            "kpibot: error: unrecognized arguments: --force",
        ),
    ],
)
def test_usage_errors_in_both_languages(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], ja: str, en: str
) -> None:
    code, out, err = parse_exit(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.splitlines()[0].startswith("使い方: kpibot")
    assert err.splitlines()[-1] == ja
    code, _, err = parse_exit(capsys, "--locale", "en", *argv)
    assert code == 2
    assert err.splitlines()[0].startswith("usage: kpibot")
    assert err.splitlines()[-1] == en


def test_import_counts_and_problem_places_in_japanese(
    engine: Engine, database_url: URL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    assert main(["import-plan", str(SMALL)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1:7] == [
        "  目標(KGI): 新規 1、更新 0、変更なし 0",
        "  部署: 新規 1、更新 0、変更なし 0",
        "  成功要因(KFS): 新規 1、更新 0、変更なし 0",
        "  KPI: 新規 5、更新 0、変更なし 0",
        "  目標値: 新規 6、更新 0、変更なし 0",
        f"{SMALL}: 警告 6件(インポートは止めません):",
    ]
    assert "  35 行目、`owner`: 「sqls」に担当者がいません。誰にも報告を求めません" in out.splitlines()
    bad = Path("bad.yaml")
    bad.write_text(
        SMALL.read_text(encoding="utf-8")
        .replace("owner: U0OWNER\n    unit: count", "owner: U0OWNER\n    unit: kg")
        .replace("locale: ja", "locale: fr"),
        encoding="utf-8",
    )
    assert main(["import-plan", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "bad.yaml: 問題が 2件あります。何も取り込んでいません:",
        "  21 行目、`locale`: 言語「fr」は使えません。次のいずれかにしてください: ja、en",
        "  31 行目、`unit`: 単位「kg」は使えません。次のいずれかにしてください: "
        "count、percent、jpy、usd、score、hours、days",
    ]
    assert main(["--locale", "en", "import-plan", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  line 21, `locale`: unknown locale 'fr'; use one of: ja, en",
        "  line 31, `unit`: unknown unit 'kg'; use one of: count, percent, jpy, usd, score, hours, days",
    ]
