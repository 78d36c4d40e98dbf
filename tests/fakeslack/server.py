"""A fake Slack Web API served over real HTTP, and a threaded WSGI server for the app under test.

Only Slack is faked, and only at the wire: slack_sdk and Bolt talk to these servers through their
ordinary HTTP code paths, so retries, JSON/form encoding and signing are all exercised for real.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import WSGIApplication

TEAM_ID = "T0TEST"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0KPIBOT"

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One request the fake received. Header names are lower-cased so lookups don't depend on the client."""

    method: str  # "chat.postMessage", "response_url" or "upload"
    args: JsonDict
    token: str | None
    headers: dict[str, str]
    timestamp: float
    path: str = ""
    failed: bool = False


@dataclass
class _Failure:
    error: str
    remaining: int | None  # None: fail forever
    retry_after: int
    channel: str | None = None  # only calls to this channel (None: any call)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: JsonDict
    headers: dict[str, str] = field(default_factory=dict)


_DROPPED = _Reply(0, {})  # no answer at all: the connection is closed


def _maybe_json(value: str) -> Any:
    # slack_sdk form-encodes structured args (blocks, view, files) as JSON strings; tests want objects.
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _parse_args(query: str, raw: bytes, content_type: str) -> JsonDict:
    args: JsonDict = {k: _maybe_json(v) for k, v in parse_qsl(query, keep_blank_values=True)}
    if not raw:
        return args
    if content_type.startswith("application/json"):
        body = json.loads(raw)
        args.update(body if isinstance(body, dict) else {"_body": body})
    else:
        args.update({k: _maybe_json(v) for k, v in parse_qsl(raw.decode(), keep_blank_values=True)})
    return args


def _bearer_token(headers: Message) -> str | None:
    auth = headers.get("Authorization", "")
    return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None


class _Handler(BaseHTTPRequestHandler):
    server: _FakeHTTPServer

    def do_GET(self) -> None:  # slack_sdk sends some methods (users.info, ...) as GET
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # per-request lines would drown pytest output

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = self.server.fake
        fake._enter()
        try:
            reply = fake._dispatch(self.path, raw, self.headers)
        finally:
            fake._leave()
        if reply is _DROPPED:
            self.close_connection = True
            return
        body = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # as many listeners calling at once as the app under test runs

    def __init__(self, fake: FakeSlack) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeSlack:
    """Records Web API calls and answers them like Slack. Use as a context manager or start()/stop()."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.uploads: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        # Messages posted, as Slack keeps them (channel history, threads, metadata).
        self._messages: list[JsonDict] = []
        self._stopping = threading.Event()  # ends a HANG_AFTER_SEND early
        self._failures: dict[str, deque[_Failure]] = {}
        # Block types Slack does not accept (yet) in this workspace, with the error it answers.
        self._refused_blocks: dict[str, str] = {}
        self._users: dict[str, JsonDict] = {}
        self._filenames: dict[str, str] = {}
        self._ts_us = 1_700_000_000_000_000
        # Requests being answered now, and the most at once since start or reset(): posting in parallel.
        self._in_flight = 0
        self.max_in_flight = 0
        self._next_serial = 0
        self._server: _FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._handlers: dict[str, Callable[[JsonDict], JsonDict]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.postEphemeral": lambda args: {"message_ts": self._new_ts()},
            "chat.update": self._chat_update,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self._view,
            "views.update": self._view,
            "views.publish": self._view,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        self._stopping.clear()
        self._server = _FakeHTTPServer(self)
        self._thread = _serving_thread(self._server, "fakeslack")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """Web API root, for WebClient(base_url=...)."""
        return f"{self.base_url}/api/"

    def response_url(self, name: str) -> str:
        """A URL to hand out as response_url; posts to it are recorded as method "response_url"."""
        return f"{self.base_url}/response_url/{name}"

    # -- configuration -----------------------------------------------------------------------------

    def set_user(
        self,
        user_id: str,
        *,
        locale: str = "ja-JP",
        tz: str = "Asia/Tokyo",
        is_admin: bool = False,
        real_name: str | None = None,
    ) -> None:
        with self._lock:
            self._users[user_id] = self._make_user(user_id, locale, tz, is_admin, real_name)

    def fail(
        self,
        method: str,
        error: str = "ratelimited",
        times: int | None = 1,
        retry_after: int = 1,
        *,
        channel: str | None = None,
    ) -> None:
        """Make the next `times` calls of `method` fail (None: until clear_failures()); with
        `channel`, only its calls to that channel (calls to several channels at once need it to
        say which one fails).

        Queued failures for the same method are used in order, so a test can script a sequence.
        """
        with self._lock:
            failure = _Failure(error, times, retry_after, channel)
            self._failures.setdefault(method, deque()).append(failure)

    def refuse_blocks(self, *block_types: str, error: str = "invalid_blocks") -> None:
        """Refuse messages (chat.postMessage, chat.update) carrying any of these block types, as Slack
        does for a block type it does not support: `invalid_blocks`, or `invalid_arguments`, with
        the offending block named in `response_metadata.messages`."""
        with self._lock:
            self._refused_blocks.update(dict.fromkeys(block_types, error))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()
            self._refused_blocks.clear()

    def reset(self) -> None:
        """Forget calls, messages, uploads, failures and users, keeping the server running."""
        with self._lock:
            self._calls.clear()
            self._failures.clear()
            self._refused_blocks.clear()
            self._users.clear()
            self._filenames.clear()
            self.uploads.clear()
            self._messages.clear()
            self.max_in_flight = self._in_flight

    # -- inspection --------------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def messages(self, channel: str | None = None) -> list[JsonDict]:
        """What Slack holds: every message posted (also those whose answer was lost), oldest first."""
        with self._lock:
            return [dict(m) for m in self._messages if channel is None or m["channel"] == channel]

    def last(self, method: str) -> Call:
        matching = self.calls(method)
        if not matching:
            raise AssertionError(f"no {method} call; received: {self._summary()}")
        return matching[-1]

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait for work Bolt does after ack() in background threads."""
        deadline = time.monotonic() + timeout
        while True:
            matching = self.calls(method)
            if len(matching) >= count:
                return matching
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected {count} {method} call(s) within {timeout}s, got {len(matching)}; "
                    f"received: {self._summary()}"
                )
            time.sleep(0.01)

    def _summary(self) -> str:
        calls = self.calls()
        if not calls:
            return "(nothing)"
        return ", ".join(f"{c.method}{' (failed)' if c.failed else ''} {c.args}" for c in calls)

    # -- request handling --------------------------------------------------------------------------

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _dispatch(self, raw_path: str, raw: bytes, headers: Message) -> _Reply:
        if self.latency:
            time.sleep(self.latency)
        url = urlsplit(raw_path)
        kind, _, rest = url.path.lstrip("/").partition("/")
        content_type = headers.get("Content-Type", "")
        if kind == "api":
            method, args = rest, _parse_args(url.query, raw, content_type)
        elif kind == "response_url":
            method, args = "response_url", _parse_args("", raw, content_type)
        elif kind == "upload":
            method, args = "upload", {"file_id": rest, "size": len(raw)}
        else:
            return _Reply(404, {"ok": False, "error": "not_found"})

        token = _bearer_token(headers) or args.get("token")
        with self._lock:
            failure = self._take_failure(method, args)
            refused = self._refused_block(method, args) if failure is None else None
            self._calls.append(
                Call(
                    method=method,
                    args=args,
                    token=token,
                    headers={k.lower(): v for k, v in headers.items()},
                    timestamp=time.time(),
                    path=url.path,
                    failed=failure is not None or refused is not None,
                )
            )
            if refused is not None:
                return refused
            if failure is not None and failure.error not in (DROP_AFTER_SEND, HANG_AFTER_SEND):
                return _failure_reply(failure)
            if method == "upload":
                self.uploads[rest] = raw
                return _Reply(200, {"ok": True})
            if method == "response_url":
                return _Reply(200, {"ok": True})
            handler = self._handlers.get(method)
            if handler is None:
                return _Reply(200, {"ok": False, "error": "unknown_method"})
            answer = _Reply(200, {"ok": True, **handler(args)})
            if failure is None:
                return answer
        if failure.error == HANG_AFTER_SEND:
            self._stopping.wait(HANG_SECONDS)
        # Carried out, then the connection drops before the answer: the caller cannot know.
        return _DROPPED

    def _refused_block(self, method: str, args: JsonDict) -> _Reply | None:
        if method not in ("chat.postMessage", "chat.update") or not self._refused_blocks:
            return None
        blocks = args.get("blocks")
        for index, block in enumerate(blocks if isinstance(blocks, list) else []):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in self._refused_blocks:
                detail = f"[ERROR] unsupported type: {kind} [json-pointer:/blocks/{index}/type]"
                body = {"ok": False, "error": self._refused_blocks[kind]}
                return _Reply(200, {**body, "response_metadata": {"messages": [detail]}})
        return None

    def _take_failure(self, method: str, args: JsonDict) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        # The first queued failure that applies to this call (one for another channel waits).
        index = next((i for i, f in enumerate(queue) if f.channel in (None, args.get("channel"))), None)
        if index is None:
            return None
        failure = queue[index]
        if failure.remaining is not None:
            failure.remaining -= 1
            if failure.remaining <= 0:
                del queue[index]
        return failure

    # -- Web API answers (called with the lock held) -----------------------------------------------

    def _new_ts(self) -> str:
        self._ts_us += 100
        return f"{self._ts_us // 1_000_000}.{self._ts_us % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        self._next_serial += 1
        return f"{prefix}{self._next_serial:09d}"

    @staticmethod
    def _make_user(user_id: str, locale: str, tz: str, is_admin: bool, real_name: str | None) -> JsonDict:
        name = user_id.lower()
        real_name = real_name or f"User {user_id}"
        return {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name,
            "real_name": real_name,
            "tz": tz,
            "locale": locale,
            "is_admin": is_admin,
            "is_owner": False,
            "is_bot": False,
            "deleted": False,
            "profile": {"real_name": real_name, "display_name": name},
        }

    def _auth_test(self, args: JsonDict) -> JsonDict:
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "kpibot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _bot_message(self, args: JsonDict, ts: str) -> JsonDict:
        message: JsonDict = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "ts": ts,
            "text": args.get("text", ""),
        }
        for key in ("blocks", "thread_ts"):
            if key in args:
                message[key] = args[key]
        return message

    def _chat_post_message(self, args: JsonDict) -> JsonDict:
        ts = self._new_ts()
        channel = _im_of(str(args.get("channel", "")))
        message = self._bot_message(args, ts)
        kept = {**message, "channel": channel, "thread_ts": args.get("thread_ts")}
        if isinstance(args.get("metadata"), dict):
            kept["metadata"] = args["metadata"]
        self._messages.append(kept)
        return {"channel": args.get("channel"), "ts": ts, "message": message}

    def _conversations_open(self, args: JsonDict) -> JsonDict:
        return {"channel": {"id": _im_of(str(args.get("users", "")))}}

    def _listed(self, messages: list[JsonDict], args: JsonDict) -> JsonDict:
        oldest = float(args.get("oldest") or 0)
        shown = [m for m in messages if float(m["ts"]) > oldest]
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        return {
            "messages": [
                {k: v for k, v in m.items() if k != "channel" and (with_metadata or k != "metadata")}
                for m in sorted(shown, key=lambda m: float(m["ts"]), reverse=True)
            ],
            "has_more": False,
        }

    def _conversations_history(self, args: JsonDict) -> JsonDict:
        channel = args.get("channel")
        roots = [
            m for m in self._messages if m["channel"] == channel and m.get("thread_ts") in (None, m["ts"])
        ]
        return self._listed(roots, args)

    def _conversations_replies(self, args: JsonDict) -> JsonDict:
        channel, thread = args.get("channel"), str(args.get("ts", ""))
        thread_messages = [
            m for m in self._messages if m["channel"] == channel and thread in (m["ts"], m.get("thread_ts"))
        ]
        return self._listed(thread_messages, args)

    def _chat_update(self, args: JsonDict) -> JsonDict:
        ts = args.get("ts", "")
        return {
            "channel": args.get("channel"),
            "ts": ts,
            "text": args.get("text", ""),
            "message": self._bot_message(args, ts),
        }

    def _chat_get_permalink(self, args: JsonDict) -> JsonDict:
        channel, ts = args.get("channel", ""), str(args.get("message_ts", ""))
        return {
            "channel": channel,
            "permalink": f"https://fake.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _view(self, args: JsonDict) -> JsonDict:
        view = args.get("view")
        view = dict(view) if isinstance(view, dict) else {}
        view_id = args.get("view_id") or self._new_id("V")
        view.setdefault("state", {"values": {}})
        view.update(id=view_id, hash=self._new_ts(), team_id=TEAM_ID, app_id=APP_ID, bot_id=BOT_ID)
        return {"view": view}

    def _users_info(self, args: JsonDict) -> JsonDict:
        user_id = args.get("user", "")
        user = self._users.get(user_id) or self._make_user(user_id, "ja-JP", "Asia/Tokyo", False, None)
        return {"user": user}

    def _conversations_info(self, args: JsonDict) -> JsonDict:
        channel_id = args.get("channel", "")
        return {
            "channel": {"id": channel_id, "name": channel_id.lower(), "is_channel": True, "is_member": True}
        }

    def _files_get_upload_url(self, args: JsonDict) -> JsonDict:
        file_id = self._new_id("F")
        self._filenames[file_id] = args.get("filename", "")
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, args: JsonDict) -> JsonDict:
        files = args.get("files")
        files = files if isinstance(files, list) else []
        return {
            "files": [
                {
                    "id": f["id"],
                    "name": self._filenames.get(f["id"], ""),
                    "title": f.get("title") or self._filenames.get(f["id"], ""),
                    "size": len(self.uploads.get(f["id"], b"")),
                }
                for f in files
            ]
        }


# fail(method, DROP_AFTER_SEND): the call is carried out (a message is posted) and the connection
# is closed before the answer, as when a network drops between Slack and us.
DROP_AFTER_SEND = "drop_after_send"
# fail(method, HANG_AFTER_SEND): carried out, then no answer for HANG_SECONDS (then dropped): time
# for a test to kill the caller between Slack having the message and the caller knowing it.
HANG_AFTER_SEND = "hang_after_send"
HANG_SECONDS = 30.0


def _im_of(channel: str) -> str:
    """Posting to a user id posts in the IM with them (D…), as Slack does."""
    return f"D{channel[1:]}" if channel[:1] in ("U", "W") else channel


def _failure_reply(failure: _Failure) -> _Reply:
    if failure.error == "ratelimited":
        return _Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(failure.retry_after)})
    if failure.error == "http_500":
        return _Reply(500, {"ok": False, "error": "internal_error"})
    return _Reply(200, {"ok": False, "error": failure.error})


def _serving_thread(server: socketserver.BaseServer, name: str) -> threading.Thread:
    # shutdown() waits for the loop to wake up and see it: with two servers per test the default
    # 0.5s (or even 0.05s) adds up over a suite, while an idle wake-up costs microseconds.
    return threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.005}, name=name, daemon=True
    )


# -- serving the app under test --------------------------------------------------------------------


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    # Slack retries and concurrent users overlap; a single-threaded server would serialize them.
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections beyond it when many users send at
    # once (gunicorn in `kpibot serve` queues 2048): the harness takes what Slack may send together.
    request_queue_size = 128


class _QuietWSGIRequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class WsgiServer:
    """Serves a WSGI app (e.g. Bolt's SlackRequestHandler) on 127.0.0.1:<random port> in a thread."""

    def __init__(self, app: WSGIApplication) -> None:
        self._httpd = make_server(
            "127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietWSGIRequestHandler
        )
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = _serving_thread(self._httpd, "wsgi-app")

    def start(self) -> WsgiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop that never started
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> WsgiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
