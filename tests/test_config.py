"""Settings: defaults, `.env`, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError


def test_defaults_with_nothing_configured(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=tmp_path / "missing.env")
    assert settings.database_url.render_as_string() == "sqlite:///kpibot.db"
    assert settings.slack_api_url == "https://slack.com/api/"
    assert (settings.port, settings.locale, str(settings.timezone)) == (3000, "ja", "Asia/Tokyo")
    assert settings.fiscal_year_start_month == 4
    assert settings.slack_bot_token is None
    assert (settings.web_concurrency, settings.web_threads, settings.listener_threads) == (2, 8, 32)


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=8080\nKPIBOT_LOCALE=en\nSLACK_BOT_TOKEN=xoxb-from-file\n")
    settings = load_settings({"PORT": "9000"}, env_file=env_file)
    assert (settings.port, settings.locale, settings.slack_bot_token) == (9000, "en", "xoxb-from-file")


def test_sizing_comes_from_env_file_too(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("WEB_CONCURRENCY=4\nKPIBOT_THREADS=16\nKPIBOT_LISTENER_THREADS=64\n")
    settings = load_settings({"KPIBOT_THREADS": "12"}, env_file=env_file)
    assert (settings.web_concurrency, settings.web_threads, settings.listener_threads) == (4, 12, 64)


def test_heroku_style_postgres_url_uses_psycopg() -> None:
    settings = load_settings({"DATABASE_URL": "postgres://u:secret@db.example.com/kpi"}, env_file=None)
    assert settings.database_url.drivername == "postgresql+psycopg"
    assert "secret" not in settings.safe_database_url


def test_slack_api_url_gets_a_trailing_slash() -> None:
    assert load_settings({"SLACK_API_URL": "http://127.0.0.1:9/api"}, env_file=None).slack_api_url == (
        "http://127.0.0.1:9/api/"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "mysql://root@localhost/kpi"),
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("KPIBOT_TIMEZONE", "Mars/Olympus"),
        ("KPIBOT_LOCALE", "fr"),
        ("KPIBOT_FISCAL_YEAR_START", "13"),
        ("SLACK_API_URL", "slack.com/api"),
        ("WEB_CONCURRENCY", "two"),
        ("WEB_CONCURRENCY", "0"),
        ("KPIBOT_THREADS", "-1"),
        ("KPIBOT_LISTENER_THREADS", "many"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({name: value}, env_file=None)
    assert name in str(error.value)


def test_slack_credentials_are_required_only_to_serve() -> None:
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-1"}, env_file=None)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        settings.require_slack()
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        settings.require_slack(socket_mode=True)
    load_settings({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, env_file=None).require_slack()


def test_errors_are_in_the_configured_language() -> None:
    with pytest.raises(ConfigError) as ja:
        load_settings({"PORT": "eighty"}, env_file=None)
    assert str(ja.value) == "PORT は 1〜65535 の整数にしてください(指定値: 'eighty')"
    with pytest.raises(ConfigError) as en:
        load_settings({"PORT": "eighty", "KPIBOT_LOCALE": "en"}, env_file=None)
    assert str(en.value) == "PORT must be a whole number from 1 to 65535, got 'eighty'"
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-1"}, env_file=None)
    with pytest.raises(ConfigError) as missing:
        settings.require_slack()
    assert str(missing.value) == (
        "SLACK_SIGNING_SECRET を設定してください(環境変数か .env に。.env.example を参照)"
    )
