"""The HTTP part the fake vendors share: a threaded server on 127.0.0.1 that records each request
and hands it to the fake's `answer(request) -> Answer`, with failures queued ahead of it."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Request:
    """One request a fake received. Header names lower-cased."""

    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # JSON-serialisable
    headers: dict[str, str] = field(default_factory=dict)


class FakeServer:
    """Subclasses implement `answer`. Use as a context manager; `url` is the base URL."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._failures: deque[tuple[str | None, Answer]] = deque()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self)

            def do_POST(self) -> None:
                fake._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it at every test's end.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, answer: Answer, *, times: int = 1, path_contains: str | None = None) -> None:
        """Answer the next `times` requests (whose path contains `path_contains`) with `answer`."""
        with self._lock:
            self._failures.extend([(path_contains, answer)] * times)

    def answer(self, request: Request) -> Answer:
        raise NotImplementedError

    def _next_failure(self, path: str) -> Answer | None:
        with self._lock:
            for index, (fragment, answer) in enumerate(self._failures):
                if fragment is None or fragment in path:
                    del self._failures[index]
                    return answer
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        request = Request(
            method=handler.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=raw,
            at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(request)
        answer = self._next_failure(parts.path) or self.answer(request)
        body = json.dumps(answer.body).encode()
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/json;charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
