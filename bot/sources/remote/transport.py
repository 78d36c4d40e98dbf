"""HTTP for the fetchers behind a vendor's API: one request, its answer, throttling and 429 retries.

Standard library only (urllib.request): the project has no HTTP client dependency and a fetch is
a handful of JSON requests. Every failure of the wire becomes a FetchError, so a fetcher only maps
the vendor's own statuses and bodies; secrets travel in headers or form bodies and never appear in
an error's detail (details carry the vendor's message, the status and the host).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from bot.sources.fetching import FetchError

log = logging.getLogger(__name__)

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, whatever its status (urllib raises on 4xx/5xx; we want to read those)."""

    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    host: str

    def json(self) -> Any:
        """The body as JSON, numbers with a fraction as Decimal (a sum is compared to a typed target)."""
        try:
            return json.loads(self.body, parse_float=Decimal)
        except ValueError as error:
            raise FetchError(
                "bad_response", f"{self.host} answered {self.status} with a body that is not JSON"
            ) from error


def send(
    method: str, url: str, *, headers: Mapping[str, str], data: bytes | None = None, timeout: float
) -> Reply:
    host = urlsplit(url).hostname or "?"
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (scheme checked by base_url)
            return Reply(answer.status, _lower(answer.headers.items()), answer.read(), host)
    except urllib.error.HTTPError as answer:
        with answer:
            return Reply(answer.code, _lower(answer.headers.items()), answer.read(), host)
    except TimeoutError as error:
        raise FetchError("timeout", f"{host} did not answer within {timeout:g} s") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError | socket.timeout):
            raise FetchError("timeout", f"{host} did not answer within {timeout:g} s") from error
        raise FetchError("connect", f"{host}: {error.reason}") from error
    except (OSError, ValueError) as error:  # reset connection, malformed status line
        raise FetchError("connect", f"{host}: {error}") from error


def _lower(items: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


def base_url(raw: str, variable: str) -> str:
    """A vendor URL from the environment: https, or http to this machine only (the tests' fakes),
    since a token or client secret is sent to it."""
    parts = urlsplit(raw.strip())
    local_http = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
    if not parts.hostname or not (parts.scheme == "https" or local_http):
        raise FetchError("bad_spec", f"{variable} must be an https:// URL", transient=False)
    return raw.strip().rstrip("/")


def secret(env: Mapping[str, str], variable: str) -> str:
    value = env.get(variable, "").strip()
    if not value:
        raise FetchError("bad_spec", f"environment variable {variable} is not set", transient=False)
    return value


def retry_after(reply: Reply) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    raw = reply.headers.get("retry-after", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Throttle:
    """At most `per_second` requests per key (a token's hash) from this process, spaced evenly.

    In-process only: the scheduler is the one process that fetches (leader only), so a shared
    store would buy nothing. A 429 pushes the key's next slot back by the peer's Retry-After, so
    the other threads fetching with the same token wait as well instead of drawing more 429s.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def wait(self, key: str, per_second: float) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(key, now))
            self._next[key] = slot + 1.0 / per_second
        if slot > now:
            time.sleep(slot - now)

    def defer(self, key: str, seconds: float) -> None:
        with self._lock:
            self._next[key] = max(self._next.get(key, 0.0), time.monotonic() + seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one fetch keeps trying through rate limiting before it reports rate_limited."""

    attempts: int = 4  # the first request and three retries
    max_wait_s: float = 10.0  # a Retry-After longer than this (a daily limit) is not waited out here
    default_wait_s: float = 1.0  # when the peer gives no Retry-After


def with_rate_limit_retries(
    call: Callable[[], Reply],
    *,
    limited: Callable[[Reply], bool],
    policy: RetryPolicy,
    vendor: str,
    on_wait: Callable[[float], None] | None = None,
) -> Reply:
    """`call()` again while `limited(reply)`, sleeping what the peer asked, a bounded number of times.

    Gives up with FetchError("rate_limited", retry_after=…) when the attempts are spent or when the
    peer asks for a longer wait than the policy allows: the scheduler's backoff takes it from there.
    """
    for attempt in range(1, policy.attempts + 1):
        reply = call()
        if not limited(reply):
            return reply
        wait = retry_after(reply)
        if attempt == policy.attempts or (wait is not None and wait > policy.max_wait_s):
            raise FetchError(
                "rate_limited",
                f"{vendor} answered {reply.status} {attempt} time(s)",
                retry_after=wait if wait is not None else policy.default_wait_s,
            )
        wait = policy.default_wait_s if wait is None else wait
        log.warning("%s answered %s (rate limited); retrying in %.1f s", vendor, reply.status, wait)
        if on_wait is not None:
            on_wait(wait)
        time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises
