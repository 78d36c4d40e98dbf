"""One way to handle a request after `ack()`: a unit of work, and one place for what escapes it.

A listener reads as parse → authorize → call `bot/` → render. What every listener needs besides
is here, once (in the manner of Dispatch's `decorators.py` and Bolt's `app.error`):

- `unit_of_work(engine, key)`: one transaction for one action; with an idempotency key, a request
  Slack delivers again raises `AlreadyHandled` before anything is done, and the key is committed
  with the work it guards (a request that failed half-way leaves no key, so its retry runs).
- `on_error`, installed as the app's `app.error`: a retry already handled is dropped quietly; an
  unreachable database is told to the user (the listener's own wording when it set one with the
  `database_error` listener middleware, else `error.database`); anything else is logged with the
  request's kind and told as `error.unexpected`. Nothing a listener raises reaches Slack as a 500.
- `answer_in(context, ...)`: what a listener knows better than the request body, for that answer:
  the channel a view was opened from, the department's language, the words for a refusal by Slack.
- `tell(...)`: an answer only the user sees, wherever the request came from; a failure to deliver
  it is logged, never raised.
- `acknowledge_other_events(app)`, registered after every listener: an event none of them takes
  is answered 200 and dropped (Bolt's answer is a 404, which Slack redelivers and counts as failed).
- `PostAckPool` and `after_ack(context, fn, ...)`: work that may wait (a save and its answer)
  runs on a few threads of its own per web worker, so a burst of it neither holds the listeners'
  threads that the next request's ack needs nor has many threads competing for the interpreter;
  `later(context, fn, ...)`: follow-ups (alerts, effects, Home tabs) after the saves, once the
  worker has no request to answer. What escapes either is told to the user as app.error would
  (`failures_told`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, BoltContext, BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from bot import render
from bot.database import transaction
from bot.errors import DatabaseUnavailable
from bot.idempotency import first_time

log = logging.getLogger(__name__)

# Context keys: set by a listener's middleware (database_error) or by the listener (answer_in).
DATABASE_ERROR = "database_error"
SLACK_ERROR = "slack_error"
ANSWER_CHANNEL = "answer_channel"
ANSWER_LOCALE = "answer_locale"
POST_ACK = "post_ack"  # the worker's PostAckPool (handlers/web.py puts it there)
FAILED_AFTER_ACK = "failed_after_ack"  # app.error's handler for this request (failures_told)

# Two threads: at most two CPU-bound follow-ups compete with the request threads for the GIL.
POST_ACK_THREADS = 2
# Waiting beyond the threads; more than that runs where it was handed over (never dropped).
POST_ACK_QUEUE = 64
# Follow-ups start once, for this long, no request has been in flight and no save waits or runs,
# or once they have waited the patience (so a steady stream delays them by that much at most).
FOLLOW_UP_IDLE_S = 0.02
FOLLOW_UP_PATIENCE_S = 2.0
# Follow-ups waiting (they hold only their arguments); beyond that they run where handed over.
FOLLOW_UP_QUEUE = 2048
# A post-ack thread with nothing to do for this long ends (the next work starts another).
THREAD_IDLE_S = 5.0


class KeptAck(Ack):
    """An ack that stays given. When a listener raises after `ack()`, Bolt's thread runner sets
    the ack back to None (slack_bolt/listener/thread_runner.py); if that happens before the
    request thread has seen it, Slack gets a 404 three seconds later instead of the ack."""

    @property  # type: ignore[override]
    def response(self) -> BoltResponse | None:
        return self._response

    @response.setter
    def response(self, value: BoltResponse | None) -> None:
        if value is None and getattr(self, "_response", None) is not None:
            return
        self._response = value


def keep_ack(context: BoltContext, next: Callable[[], None]) -> None:  # noqa: A002 (Bolt's name)
    """Global middleware: every request's ack is a KeptAck."""
    context["ack"] = KeptAck()
    next()


class AlreadyHandled(Exception):
    """The request was handled before (Slack delivered it again): there is nothing to do."""


@contextmanager
def unit_of_work(engine: Engine, key: str | None = None) -> Iterator[Session]:
    with transaction(engine) as session:
        if key is not None and not first_time(session, key):
            raise AlreadyHandled(key)
        yield session


def database_error(message_key: str) -> Callable[..., None]:
    """Listener middleware: the words this surface uses when the database is down."""

    def middleware(context: BoltContext, next: Callable[[], None]) -> None:  # noqa: A002 (Bolt's name)
        context[DATABASE_ERROR] = message_key
        next()

    return middleware


def answer_in(
    context: BoltContext,
    *,
    channel: str | None = None,
    locale: str | None = None,
    slack_error: str | None = None,
) -> None:
    """For app.error's answer to this request: the channel when the body has none (a view
    submission), the language once the department is known, and the message key (given the
    Slack error code as `error`) when Slack refuses a call the listener makes from here on."""
    for key, value in ((ANSWER_CHANNEL, channel), (ANSWER_LOCALE, locale), (SLACK_ERROR, slack_error)):
        if value is not None:
            context[key] = value


def is_database_down(error: BaseException) -> bool:
    return isinstance(error, DatabaseUnavailable | OperationalError)


def where(body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(user, channel, thread ts) of any request body: command, action, shortcut, view or event."""
    event = body.get("event") or {}
    user = body.get("user_id") or (body.get("user") or {}).get("id") or event.get("user")
    channel = (
        body.get("channel_id")
        or (body.get("channel") or {}).get("id")
        or (body.get("container") or {}).get("channel_id")
        or event.get("channel")
    )
    message = body.get("message") or {}
    thread = message.get("thread_ts") or event.get("thread_ts") or event.get("ts")
    return user, channel, thread


def tell(
    client: WebClient,
    body: dict[str, Any],
    text: str,
    *,
    thread_ts: str | None = None,
    channel: str | None = None,
) -> None:
    """An ephemeral answer: through the request's response_url when it has one (it works where
    kpibot is not a member), else chat.postEphemeral in its channel (or `channel`, for a body
    that names none)."""
    user, in_channel, thread = where(body)
    channel = channel or in_channel
    response_url = body.get("response_url") or next(
        (u.get("response_url") for u in body.get("response_urls") or [] if u.get("response_url")), None
    )
    if response_url:
        try:
            answer = WebhookClient(response_url, timeout=10).send(
                text=text, response_type="ephemeral", replace_original=False
            )
            if answer.status_code == 200:
                return
            log.warning("response_url answer to %s failed: HTTP %s", user, answer.status_code)
        except Exception:
            log.exception("response_url answer to %s failed", user)
    if not user or not channel:
        log.warning("no way to tell %s: %s", user, text[:80])
        return
    try:
        client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts or thread)
    except SlackApiError as error:
        log.error("ephemeral answer to %s in %s failed: %s", user, channel, error.response.get("error"))


def on_error(locale_for: Callable[[str | None], str]) -> Callable[..., None]:
    """The app's error handler (`app.error`); `locale_for(user)` is the language to answer in."""

    def handle(error: Exception, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        if isinstance(error, AlreadyHandled):
            log.info("request %s already handled; nothing done again", error)
            return
        user, _, _ = where(body)
        kind = body.get("command") or body.get("type") or "request"
        params: dict[str, Any] = {}
        if is_database_down(error):
            log.error("database unavailable for %s from %s: %s", kind, user, error)
            key = context.get(DATABASE_ERROR) or "error.database"
        elif isinstance(error, SlackApiError) and context.get(SLACK_ERROR):
            params["error"] = error.response.get("error", "unknown")
            log.warning("Slack refused %s from %s: %s", kind, user, params["error"])
            key = context[SLACK_ERROR]
        else:
            log.error("%s from %s failed", kind, user, exc_info=error)
            key = "error.unexpected"
        locale = context.get(ANSWER_LOCALE) or locale_for(user)
        tell(client, body, render.message(key, locale, **params), channel=context.get(ANSWER_CHANNEL))

    return handle


def acknowledge_other_events(app: App) -> None:
    """Register after every other listener: an event no listener takes (`app_home_opened`, which
    the manifest subscribes to, or a message) is acknowledged and dropped. Bolt would answer it
    404, and Slack would deliver it three more times and count each as a failed delivery."""

    @app.event(re.compile(".*"))
    def other_event(body: dict[str, Any]) -> None:
        log.debug("event %s not handled by kpibot", (body.get("event") or {}).get("type"))


class PostAckPool:
    """Work after an ack on at most `threads` threads of its own, in two priorities.

    - `submit`: what the user waits for (a save and its answer), first come first served; at most
      `queue` waiting.
    - `submit_later`: follow-ups nobody waits on (alerts, effects, Home tabs); at most `later`
      waiting. They start once, for `idle` seconds, the worker has had no request in flight
      (handlers/web.py counts them with `answering`) and no save to do, or once the oldest has
      waited `patience`: a burst is answered and saved before its follow-ups compete with it, and
      a steady stream delays them that long at most.

    When full, or stopping, work runs in the thread that hands it over: slower for that request,
    never lost. `shutdown` finishes everything queued (a worker stopping drains it first). A thread
    left with nothing to do for a while ends; the next work starts another."""

    def __init__(
        self,
        threads: int = POST_ACK_THREADS,
        queue: int = POST_ACK_QUEUE,
        *,
        later: int = FOLLOW_UP_QUEUE,
        idle: float = FOLLOW_UP_IDLE_S,
        patience: float = FOLLOW_UP_PATIENCE_S,
    ) -> None:
        # Places: the saves' (threads + queue), and the follow-ups' own, which wait longer by design.
        self._room = {
            True: threading.BoundedSemaphore(threads + queue),
            False: threading.BoundedSemaphore(later),
        }
        self._threads, self._idle, self._patience = threads, idle, patience
        self._changed = threading.Condition()
        self._now: deque[_Task] = deque()
        self._later: deque[_Task] = deque()
        self._running: dict[int, threading.Thread] = {}  # by thread number
        self._busy = 0  # of them, running a task
        self._answering = 0  # requests in flight
        self._saving = 0  # `submit` work running
        self._quiet_since = time.monotonic()  # when the last request or save ended
        self._stopping = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._enqueue(True, fn, args, kwargs)

    def submit_later(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._enqueue(False, fn, args, kwargs)

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Around answering one request: follow-ups wait while any is in flight."""
        with self._changed:
            self._answering += 1
        try:
            yield
        finally:
            with self._changed:
                self._answering -= 1
                self._quieter()

    def shutdown(self) -> None:
        """Take no more work (it runs where it is handed over) and finish what is queued."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            threads = list(self._running.values())
        for thread in threads:
            thread.join()

    def _enqueue(
        self, urgent: bool, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        room = self._room[urgent]
        if self._stopping:
            return _run_here(fn, *args, **kwargs)
        if not room.acquire(blocking=False):
            # Overloaded: the handing thread (a listener's, which the next acks need) does it.
            log.warning("post-ack pool full: %s runs in the thread that handed it over", _name(fn, args))
            return _run_here(fn, *args, **kwargs)
        future: Future[Any] = Future()
        with self._changed:
            if self._stopping:  # shut down meanwhile
                room.release()
                return _run_here(fn, *args, **kwargs)
            queue = self._now if urgent else self._later
            queue.append(_Task(time.monotonic(), future, fn, args, kwargs, urgent))
            free = [n for n in range(self._threads) if n not in self._running]
            waiting_threads = len(self._running) - self._busy
            if free and len(self._now) + len(self._later) > waiting_threads:
                thread = threading.Thread(
                    target=self._work, args=(free[0],), name=f"kpibot-after-ack_{free[0]}", daemon=True
                )
                self._running[free[0]] = thread
                thread.start()
            self._changed.notify()
        return future

    def _busy_answering(self) -> bool:
        """A request in flight, or a save queued or running: what a user is waiting for."""
        return bool(self._answering or self._saving or self._now)

    def _quieter(self) -> None:
        if not self._busy_answering():
            self._quiet_since = time.monotonic()
            self._changed.notify_all()

    def _next(self, now: float) -> tuple[_Task | None, float | None]:
        """The task to run now, or how long to wait before one may start (None: until told)."""
        if self._now:
            self._saving += 1
            return self._now.popleft(), None
        if not self._later:
            return None, None
        waited = now - self._later[0].queued
        busy = self._busy_answering()
        quiet = 0.0 if busy else now - self._quiet_since
        if self._stopping or waited >= self._patience or (not busy and quiet >= self._idle):
            return self._later.popleft(), None
        wait = self._patience - waited
        if not busy:
            wait = min(wait, self._idle - quiet)
        return None, max(wait, 0.001)

    def _work(self, number: int) -> None:
        while True:
            with self._changed:
                idle_since = time.monotonic()
                while True:
                    now = time.monotonic()
                    task, wait = self._next(now)
                    if task is not None:
                        self._busy += 1
                        break
                    nothing = not self._now and not self._later
                    if nothing and (self._stopping or now - idle_since >= THREAD_IDLE_S):
                        del self._running[number]
                        return
                    self._changed.wait(wait if wait is not None else THREAD_IDLE_S)
            result: Any = None
            failed: BaseException | None = None
            try:
                if task.future.set_running_or_notify_cancel():
                    result = task.fn(*task.args, **task.kwargs)
            except BaseException as error:
                log.error("work after an ack failed", exc_info=error)
                failed = error
            finally:
                # Its place is free before anyone waiting on it hears it is done.
                self._room[task.urgent].release()
                with self._changed:
                    self._busy -= 1
                    if task.urgent:
                        self._saving -= 1
                        self._quieter()
            if task.future.cancelled():
                continue
            if failed is None:
                task.future.set_result(result)
            else:
                task.future.set_exception(failed)


@dataclass
class _Task:
    queued: float
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    urgent: bool  # `submit`'s, not `submit_later`'s


def _name(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """What a task is, for a log line (`after_ack` and `later` wrap it in `_told`)."""
    if fn is _told and len(args) > 1:
        fn = args[1]
    return getattr(fn, "__qualname__", repr(fn))


def _run_here(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
    future: Future[Any] = Future()
    try:
        future.set_result(fn(*args, **kwargs))
    except Exception as error:
        log.exception("work after an ack failed")
        future.set_exception(error)
    return future


def post_ack_pool(pool: PostAckPool) -> Callable[..., None]:
    """Global middleware: the worker's pool, for `after_ack`."""

    def middleware(context: BoltContext, next: Callable[[], None]) -> None:  # noqa: A002 (Bolt's name)
        context[POST_ACK] = pool
        next()

    return middleware


def failures_told(handler: Callable[..., None]) -> Callable[..., None]:
    """Global middleware: what escapes work handed to the pool goes to `handler` (the app's
    error handler) with this request's body — as it would from the listener's own thread."""

    def middleware(context: BoltContext, body: dict[str, Any], next: Callable[[], None]) -> None:  # noqa: A002
        context[FAILED_AFTER_ACK] = lambda error: handler(error, body, context.client, context)
        next()

    return middleware


def after_ack(context: BoltContext, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    """Run `fn` after the ack on the worker's PostAckPool, or here when the app has none (Socket
    Mode, an app dispatched in-process). Call it after `ack()`: queued work is not the ack's."""
    _hand_over(context, True, fn, args, kwargs)


def later(context: BoltContext, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    """`after_ack` for a follow-up nobody waits on (alerts, effects, Home tabs): it yields to the
    requests being answered and to the saves (PostAckPool.submit_later)."""
    _hand_over(context, False, fn, args, kwargs)


def _hand_over(
    context: BoltContext, urgent: bool, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    pool: PostAckPool | None = context.get(POST_ACK)
    if pool is None:
        fn(*args, **kwargs)
        return
    submit = pool.submit if urgent else pool.submit_later
    submit(_told, context.get(FAILED_AFTER_ACK), fn, args, kwargs)


def _told(
    failed: Callable[[Exception], None] | None,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as error:
        if failed is None:
            raise  # the pool logs it
        failed(error)
        return None
