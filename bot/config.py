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
            raise ConfigError(
                f"{', '.join(missing)} must be set (in the environment or .env); see .env.example"
            )


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

    return Settings(
        database_url=parse_database_url(get("DATABASE_URL") or "sqlite:///kpibot.db"),
        slack_bot_token=get("SLACK_BOT_TOKEN"),
        slack_signing_secret=get("SLACK_SIGNING_SECRET"),
        slack_app_token=get("SLACK_APP_TOKEN"),
        slack_api_url=_slack_api_url(get("SLACK_API_URL")),
        port=_int_in_range("PORT", get("PORT") or "3000", 1, 65535),
        timezone=_timezone("KPIBOT_TIMEZONE", get("KPIBOT_TIMEZONE") or "Asia/Tokyo"),
        locale=_locale("KPIBOT_LOCALE", get("KPIBOT_LOCALE") or "ja"),
        fiscal_year_start_month=_int_in_range(
            "KPIBOT_FISCAL_YEAR_START", get("KPIBOT_FISCAL_YEAR_START") or "4", 1, 12
        ),
        admins=_user_ids("KPIBOT_ADMINS", get("KPIBOT_ADMINS") or ""),
        web_concurrency=_int_in_range("WEB_CONCURRENCY", get("WEB_CONCURRENCY") or "2", 1, 256),
        web_threads=_int_in_range("KPIBOT_THREADS", get("KPIBOT_THREADS") or "8", 1, 1024),
        listener_threads=_int_in_range(
            "KPIBOT_LISTENER_THREADS", get("KPIBOT_LISTENER_THREADS") or "32", 1, 1024
        ),
    )


def parse_database_url(raw: str, name: str = "DATABASE_URL") -> URL:
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise ConfigError(f"{name} is not a database URL: expected e.g. sqlite:///kpibot.db") from None
    # Heroku-style URLs say postgres:// and would pick psycopg2, which we do not ship.
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"{name} uses {url.get_backend_name()!r}; kpibot supports sqlite:// and postgresql:// URLs"
        )
    return url


def _user_ids(name: str, raw: str) -> frozenset[str]:
    ids = frozenset(part.strip() for part in raw.split(",") if part.strip())
    bad = sorted(user_id for user_id in ids if user_id[:1] not in ("U", "W") or not user_id.isalnum())
    if bad:
        raise ConfigError(
            f"{name} must list Slack user IDs separated by commas (e.g. U0123ABCD), got {bad[0]!r}"
        )
    return ids


def _slack_api_url(raw: str | None) -> str:
    if raw is None:
        return DEFAULT_SLACK_API_URL
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"SLACK_API_URL must start with http:// or https://, got {raw!r}")
    return raw if raw.endswith("/") else raw + "/"


def _int_in_range(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return value


def _timezone(name: str, raw: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name} must be an IANA time zone such as Asia/Tokyo, got {raw!r}") from None


def _locale(name: str, raw: str) -> str:
    if raw not in LOCALES:
        raise ConfigError(f"{name} must be one of {', '.join(LOCALES)}, got {raw!r}")
    return raw
