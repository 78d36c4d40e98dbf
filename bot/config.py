"""The one settings object, read from the environment and `.env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from bot.errors import ConfigError

LOCALES = ("ja", "en")
DEFAULT_SLACK_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class Settings:
    database_url: URL
    slack_bot_token: str | None
    slack_signing_secret: str | None
    slack_app_token: str | None
    slack_api_url: str
    port: int
    timezone: ZoneInfo
    locale: str
    fiscal_year_start_month: int
    admins: frozenset[str] = frozenset()
    # Sizing of `kpibot serve` and `kpibot socket`.
    web_concurrency: int = 2  # gunicorn worker processes
    web_threads: int = 8  # request threads per gunicorn worker
    # Bolt's default pool has 5 threads and every listener, ack included, waits for one:
    # under 16 concurrent commands acks queued past Slack's 3 s (bench/README.md).
    listener_threads: int = 32

    @property
    def safe_database_url(self) -> str:
        """The URL as it may be shown or logged: never with its password."""
        return self.database_url.render_as_string(hide_password=True)

    def require_slack(self, *, socket_mode: bool = False) -> None:
        """Fail early, naming the variable, when a Slack process lacks its credentials."""
        required = {"SLACK_BOT_TOKEN": self.slack_bot_token}
        if socket_mode:
            required["SLACK_APP_TOKEN"] = self.slack_app_token
        else:
            required["SLACK_SIGNING_SECRET"] = self.slack_signing_secret
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise config_error(self.locale, "slack_missing", names=missing)


def environment(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> dict[str, str]:
    """The variables kpibot reads: `.env` (optional), then the process environment over it.

    Settings are built from these; data sources read their own secrets (`KPIBOT_SQL_<NAME>`, API
    tokens: names only the plan knows) from them too, at each fetch, so a rotated secret needs
    no restart."""
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Read settings; the process environment wins over `.env`, which is optional."""
    values = environment(environ, env_file)

    def get(name: str) -> str | None:
        value = values.get(name, "").strip()
        return value or None

    # First, so that every other error is told in the operator's language.
    locale = _locale("KPIBOT_LOCALE", get("KPIBOT_LOCALE") or "ja")

    def whole(name: str, default: str, low: int, high: int) -> int:
        return _int_in_range(name, get(name) or default, low, high, locale)

    return Settings(
        database_url=parse_database_url(get("DATABASE_URL") or "sqlite:///kpibot.db", locale=locale),
        slack_bot_token=get("SLACK_BOT_TOKEN"),
        slack_signing_secret=get("SLACK_SIGNING_SECRET"),
        slack_app_token=get("SLACK_APP_TOKEN"),
        slack_api_url=_slack_api_url(get("SLACK_API_URL"), locale),
        port=whole("PORT", "3000", 1, 65535),
        timezone=_timezone("KPIBOT_TIMEZONE", get("KPIBOT_TIMEZONE") or "Asia/Tokyo", locale),
        locale=locale,
        fiscal_year_start_month=whole("KPIBOT_FISCAL_YEAR_START", "4", 1, 12),
        admins=_user_ids("KPIBOT_ADMINS", get("KPIBOT_ADMINS") or "", locale),
        web_concurrency=whole("WEB_CONCURRENCY", "2", 1, 256),
        web_threads=whole("KPIBOT_THREADS", "8", 1, 1024),
        listener_threads=whole("KPIBOT_LISTENER_THREADS", "32", 1, 1024),
    )


def config_error(locale: str | None, key: str, **params: object) -> ConfigError:
    """A settings error in `locale` (templates/<locale>/messages/config.yaml); with no locale known
    (KPIBOT_LOCALE itself is wrong) in every language kpibot speaks, on one line."""
    from bot import render  # bot.render reads LOCALES from this module

    shown = [locale] if locale in LOCALES else list(LOCALES)
    return ConfigError(" / ".join(render.message(f"config.{key}", each, **params) for each in shown))


def parse_database_url(raw: str, name: str = "DATABASE_URL", *, locale: str = "en") -> URL:
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise config_error(locale, "not_a_database_url", name=name) from None
    # Heroku-style URLs say postgres:// and would pick psycopg2, which we do not ship.
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise config_error(locale, "unsupported_database", name=name, backend=url.get_backend_name())
    return url


def _user_ids(name: str, raw: str, locale: str) -> frozenset[str]:
    ids = frozenset(part.strip() for part in raw.split(",") if part.strip())
    bad = sorted(user_id for user_id in ids if user_id[:1] not in ("U", "W") or not user_id.isalnum())
    if bad:
        raise config_error(locale, "user_ids", name=name, value=repr(bad[0]))
    return ids


def _slack_api_url(raw: str | None, locale: str) -> str:
    if raw is None:
        return DEFAULT_SLACK_API_URL
    if not raw.startswith(("http://", "https://")):
        raise config_error(locale, "slack_api_url", value=repr(raw))
    return raw if raw.endswith("/") else raw + "/"


def _int_in_range(name: str, raw: str, low: int, high: int, locale: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise config_error(locale, "whole_number", name=name, low=low, high=high, value=repr(raw))
    return value


def _timezone(name: str, raw: str, locale: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise config_error(locale, "timezone", name=name, value=repr(raw)) from None


def _locale(name: str, raw: str) -> str:
    if raw not in LOCALES:
        raise config_error(None, "locale", name=name, locales=LOCALES, value=repr(raw))
    return raw
