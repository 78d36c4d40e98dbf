"""The one clock. Everything that asks "what time is it" asks here, so tests can set it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

_now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)  # noqa: E731


def utcnow() -> dt.datetime:
    return _now()


def set_clock(now: Callable[[], dt.datetime] | None) -> None:
    """Replace the clock (tests, the demo's simulated quarter); None restores real time."""
    global _now
    _now = now if now is not None else (lambda: dt.datetime.now(dt.UTC))


def today(tz: dt.tzinfo) -> dt.date:
    return utcnow().astimezone(tz).date()
