"""What Slack knows about a user (locale, admin), cached: one `users.info` per user per hour."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import LOCALES

log = logging.getLogger(__name__)
TTL_SECONDS = 3600


@dataclass(frozen=True)
class UserProfile:
    user_id: str
    locale: str | None  # "ja" or "en" when Slack says so and we speak it
    is_admin: bool


class UserDirectory:
    def __init__(self, client: WebClient, admins: frozenset[str] = frozenset()) -> None:
        self._client = client
        self._admins = admins
        self._cache: dict[str, tuple[float, UserProfile]] = {}
        self._lock = threading.Lock()

    def profile(self, user_id: str) -> UserProfile:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(user_id)
        if cached and now - cached[0] < TTL_SECONDS:
            return cached[1]
        profile = self._fetch(user_id)
        with self._lock:
            self._cache[user_id] = (now, profile)
        return profile

    def _fetch(self, user_id: str) -> UserProfile:
        try:
            user = self._client.users_info(user=user_id, include_locale=True)["user"]
        except SlackApiError as error:
            # Not fatal: the reply falls back to the department's language, admin rights to the list.
            log.warning("users.info failed for %s: %s", user_id, error.response.get("error"))
            return UserProfile(user_id, None, user_id in self._admins)
        short = (user.get("locale") or "").split("-")[0].lower()
        is_admin = bool(user.get("is_admin") or user.get("is_owner")) or user_id in self._admins
        return UserProfile(user_id, short if short in LOCALES else None, is_admin)
