"""The one Web API client factory: Slack's URL (or a fake's), with retries on rate limits and faults.

A call that creates something (a message, an ephemeral answer, a shared file) is never repeated
blindly: after a dropped connection or a 5xx the request may have been carried out, and a second
send would post twice. Those calls are retried only when the request certainly never left
(connection refused) or Slack said to wait (429); otherwise the failure reaches the caller, and
bot/outbox.py looks for the message before it sends again.
"""

from __future__ import annotations

from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler

from bot.config import Settings

# Web API methods whose repetition creates a second something.
CREATING = frozenset(
    {"chat.postMessage", "chat.postEphemeral", "chat.scheduleMessage", "files.completeUploadExternal"}
)


def creates(url: str) -> bool:
    return url.rstrip("/").rsplit("/", 1)[-1] in CREATING


def never_sent(error: Exception | None) -> bool:
    """True when the request cannot have reached Slack (the connection was refused)."""
    return isinstance(error, URLError) and isinstance(error.reason, ConnectionRefusedError)


class RepeatableOnly(RetryHandler):
    """`inner`'s retries, except for a creating call that may already have been carried out."""

    def __init__(self, inner: RetryHandler) -> None:
        super().__init__(inner.max_retry_count, inner.interval_calculator)
        self.inner = inner

    def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        if creates(request.url) and not never_sent(error):
            return False
        return self.inner._can_retry(state=state, request=request, response=response, error=error)


def make_web_client(settings: Settings) -> WebClient:
    return WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            # Honours Retry-After on HTTP 429: Slack did not carry the request out.
            RateLimitErrorRetryHandler(max_retry_count=3),
            RepeatableOnly(ConnectionErrorRetryHandler(max_retry_count=2)),
            RepeatableOnly(ServerErrorRetryHandler(max_retry_count=2)),
        ],
    )
