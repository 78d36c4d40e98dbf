"""The gate in front of Bolt: a request from Slack is verified on its raw body before anything parses it.

Bolt parses the body (form fields, `payload=` JSON, a JSON event) before it checks the signature,
so a forged or broken body used to end in a 500. Here, in this order:

1. anything but POST → 405; a body over MAX_BODY → 413;
2. the signature (`v0=` HMAC-SHA256 of `v0:<timestamp>:<body>`, compared in constant time) and
   the timestamp (an integer within five minutes of now) → 401 when either is missing or wrong;
3. a signed body that is not what Slack sends (a form whose `payload` is not a JSON object, a
   JSON body that is not an object) → 400.

Only then does Bolt see the request (and verify it again, as it always does).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

MAX_BODY = 1_000_000  # Slack's payloads are a few kB; a modal with 100 blocks stays far below this
MAX_AGE_SECONDS = 300  # Slack's own rule: refuse requests older than five minutes

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def problem(body: bytes, content_type: str) -> str | None:
    """Why a signed body is not one Slack sends, or None when it is."""
    if content_type.startswith("application/json"):
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return "the JSON body does not parse"
        return None if isinstance(parsed, dict) else "the JSON body is not an object"
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return "the form is not UTF-8"
    if "payload" in fields:
        try:
            payload = json.loads(fields["payload"][0])
        except ValueError:
            return "payload is not JSON"
        if not isinstance(payload, dict):
            return "payload is not a JSON object"
    return None


def verified(app: WsgiApp, signing_secret: str, *, now: Callable[[], float] = time.time) -> WsgiApp:
    """`app` behind the gate. `now` is Slack's clock (real time), not kpibot's injectable one."""

    def gate(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start_response, "405 Method Not Allowed", "method_not_allowed")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _answer(start_response, "400 Bad Request", "bad_content_length")
        if length > MAX_BODY:
            return _answer(start_response, "413 Content Too Large", "body_too_large")
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        if body == b"ssl_check=1" or body.startswith(b"ssl_check=1&"):
            # Slack's check of a command URL's certificate: it acts on nothing, so it needs no signature.
            return _answer(start_response, "200 OK", "", ok=True)
        timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
        sent = environ.get("HTTP_X_SLACK_SIGNATURE", "")
        if (
            not timestamp.isascii()
            or not timestamp.isdigit()
            or abs(now() - int(timestamp)) > MAX_AGE_SECONDS
        ):
            log.warning("refused a request with a missing or stale timestamp")
            return _answer(start_response, "401 Unauthorized", "invalid_request")
        if not hmac.compare_digest(signature(signing_secret, timestamp, body), sent):
            log.warning("refused a request with a wrong signature")
            return _answer(start_response, "401 Unauthorized", "invalid_request")
        reason = problem(body, environ.get("CONTENT_TYPE", ""))
        if reason is not None:
            log.warning("refused a signed but malformed request: %s", reason)
            return _answer(start_response, "400 Bad Request", "malformed_request")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return app(environ, start_response)

    return gate


def _answer(start_response: Any, status: str, error: str, *, ok: bool = False) -> list[bytes]:
    payload = json.dumps({"ok": True} if ok else {"ok": False, "error": error}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
