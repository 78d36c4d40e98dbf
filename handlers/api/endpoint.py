"""POST /api/v1/actuals: values pushed by other systems, over WSGI on the web process.

parse → authorize → call bot/ → render, as every surface: the token and the signature are
checked by bot.sources, the rows read by bot.reports.rows and stored by bot.reports.batch, and
the answer is JSON. Order of the checks: method (405), token (401), rate (429), content type
(415), size (413: the Content-Length alone when it says too much, else at most LIMIT + 1 bytes
are read), signature (401), body (400), idempotency replay, rows (403 out of scope, 422).
Whatever the sender sends is answered one of those ways; a database that does not answer is
a 503 with Retry-After, and a fault of ours is logged and answered as JSON too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, select

from bot import render
from bot.clock import utcnow
from bot.config import LOCALES
from bot.database import transaction
from bot.errors import DatabaseUnavailable
from bot.models import DataSource, ProcessedRequest, Source
from bot.reports import rows as rowlib
from bot.reports.batch import Sender, Stored, ingest
from bot.reports.service import Reported, plain_number
from bot.sources import service as sources
from bot.sources import tokens

log = logging.getLogger(__name__)

ACTUALS_PATH = "/api/v1/actuals"
OPENAPI_PATH = "/api/v1/openapi.json"
# 1,000 values with the longest notes (2,000 characters, up to 3 bytes each) fit.
LIMIT_BYTES = 8 * 1024 * 1024
IDEMPOTENCY_KEY_MAX = 150
RETRY_AFTER_UNAVAILABLE = 5
_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)


class Refusal(Exception):
    """An answer that ends the request early."""

    def __init__(
        self,
        status: int,
        code: str,
        locale: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        problems: list[dict[str, Any]] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(code)
        error: dict[str, Any] = {
            "code": code,
            "message": render.message(f"push.error.{code}", locale, **params),
        }
        if problems is not None:
            error["problems"] = problems
        self.answer = Answer(status, {"error": error}, list(headers))


def _locale(environ: dict[str, Any], default: str) -> str:
    for part in environ.get("HTTP_ACCEPT_LANGUAGE", "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LOCALES:
            return tag
    return default


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    return {
        key[5:].lower().replace("_", "-"): value for key, value in environ.items() if key.startswith("HTTP_")
    }


class PushApi:
    """The WSGI app of /api/v1/…; `after_commit` gets the values stored (alerts, follow-ups)."""

    def __init__(
        self,
        engine: Engine,
        *,
        default_locale: str = "ja",
        after_commit: Callable[[list[Reported]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.default_locale = default_locale
        self.after_commit = after_commit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        locale = _locale(environ, self.default_locale)
        try:
            answer = self._route(environ, locale)
        except Refusal as refusal:
            answer = refusal.answer
        except (DatabaseUnavailable, DBAPIError):
            log.warning("push API: database unavailable", exc_info=True)
            answer = Refusal(
                503, "unavailable", locale, headers=[("Retry-After", str(RETRY_AFTER_UNAVAILABLE))]
            ).answer
        except Exception:
            log.exception("push API: unexpected failure on %s", environ.get("PATH_INFO"))
            answer = Refusal(500, "internal_error", locale).answer
        return write_answer(answer, start_response)

    def _route(self, environ: dict[str, Any], locale: str) -> Answer:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == OPENAPI_PATH:
            if method not in ("GET", "HEAD"):
                raise Refusal(
                    405, "method_not_allowed", locale, headers=[("Allow", "GET")], path=path, allowed="GET"
                )
            from handlers.api.openapi import document

            return Answer(200, document())
        if path != ACTUALS_PATH:
            raise Refusal(404, "not_found", locale, path=path)
        if method != "POST":
            raise Refusal(
                405, "method_not_allowed", locale, headers=[("Allow", "POST")], path=path, allowed="POST"
            )
        return self._push(environ, locale)

    # -- POST /api/v1/actuals ------------------------------------------------------------------------

    def _push(self, environ: dict[str, Any], locale: str) -> Answer:
        headers = _headers(environ)
        with Session(self.engine) as session:
            try:
                source = sources.authenticate(session, environ.get("HTTP_AUTHORIZATION"))
            except sources.SourceError:
                raise Refusal(401, "unauthorized", locale, headers=[("WWW-Authenticate", "Bearer")]) from None
            session.expunge(source)
        assert source.id is not None
        wait = sources.take_request(self.engine, source.id)
        if wait:
            raise Refusal(
                429,
                "rate_limited",
                locale,
                headers=[("Retry-After", str(wait))],
                rate=source.rate_per_minute,
                retry_after=wait,
            )
        media, charset = _content_type(environ.get("CONTENT_TYPE", ""))
        if media not in ("application/json", "text/csv"):
            raise Refusal(415, "unsupported_media_type", locale, content_type=media or "—")
        body = _read_body(environ, locale)
        key = _idempotency_key(headers, locale)
        if tokens.signed(headers):
            try:
                webhook_id = tokens.verify(source.signing_key, headers, body, utcnow())
            except tokens.SignatureError as error:
                raise Refusal(401, error.code, locale, header=error.header) from None
            key = key or webhook_id
        try:
            parsed = rowlib.from_json(body) if media == "application/json" else rowlib.from_csv(body, charset)
        except rowlib.FormatError as error:
            raise Refusal(400, error.code, locale, **error.params) from None
        return self._store(source, parsed, key, hashlib.sha256(body).hexdigest(), locale)

    def _store(
        self, source: DataSource, parsed: rowlib.Parsed, key: str | None, body_hash: str, locale: str
    ) -> Answer:
        sender = Sender(
            reported_by=f"source:{source.name}",
            source=Source.API,
            source_name=source.name,
            may_write=lambda kpi, department: sources.in_scope(source, kpi, department),
        )
        stored: Stored | None = None
        with transaction(self.engine) as session:
            ledger = None
            if key is not None:
                ledger, replay = _claim(session, f"push:{source.id}:{key}", body_hash, locale)
                if replay is not None:
                    return replay
            if parsed.problems:
                result: list[rowlib.Problem] | Stored = parsed.problems
            else:
                result = ingest(session, parsed.rows, sender=sender)
            if isinstance(result, list):
                # Nothing written, and no key kept (rolled back): a fixed batch may reuse the key.
                raise _refusal_for(result, locale)
            stored = result
            answer = Answer(200, _stored_body(stored, parsed.rows))
            if ledger is not None:
                ledger.response_status = answer.status
                ledger.response_body = json.dumps(answer.body, ensure_ascii=False)
                session.add(ledger)
        if stored.saved and self.after_commit is not None:
            try:
                self.after_commit(stored.saved)
            except Exception:  # the values are stored whatever Slack does
                log.exception("push API: follow-ups failed to start")
        return answer


def write_answer(answer: Answer, start_response: Any) -> list[bytes]:
    """An answer as JSON over WSGI (the push API's and the HubSpot receiver's)."""
    payload = json.dumps(answer.body, ensure_ascii=False).encode()
    headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Content-Length", str(len(payload))),
        *answer.headers,
    ]
    start_response(f"{answer.status} {_STATUS_TEXT.get(answer.status, '')}".strip(), headers)
    return [payload]


def _content_type(raw: str) -> tuple[str, str | None]:
    media, _, rest = raw.partition(";")
    charset = None
    for parameter in rest.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return media.strip().lower(), charset


def _read_body(environ: dict[str, Any], locale: str) -> bytes:
    limit_mb = LIMIT_BYTES // (1024 * 1024)
    raw_length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if raw_length.strip():
        if not raw_length.strip().isdigit():
            raise Refusal(411, "length_required", locale)
        length = int(raw_length)
        if length > LIMIT_BYTES:
            # Not read at all (WSGI leaves closing the connection to the server).
            raise Refusal(413, "too_large", locale, limit_mb=limit_mb)
        return stream.read(length) if length else b""
    # No length (chunked): read at most one byte more than allowed.
    chunks: list[bytes] = []
    size = 0
    while size <= LIMIT_BYTES:
        chunk = stream.read(min(65536, LIMIT_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > LIMIT_BYTES:
        raise Refusal(413, "too_large", locale, limit_mb=limit_mb)
    return b"".join(chunks)


def _idempotency_key(headers: dict[str, str], locale: str) -> str | None:
    if "idempotency-key" not in headers:
        return None
    key = headers["idempotency-key"].strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise Refusal(400, "bad_idempotency_key", locale)
    return key


def _claim(
    session: Session, key: str, body_hash: str, locale: str
) -> tuple[ProcessedRequest | None, Answer | None]:
    """The ledger row for this key, inserted in the caller's transaction; or the answer given
    before. A second request with the key waits here for the first one's transaction
    (PostgreSQL: the primary key's insert; SQLite: the write lock) and then replays its answer."""
    ledger = ProcessedRequest(key=key, request_hash=body_hash)
    try:
        with session.begin_nested():
            session.add(ledger)
    except IntegrityError:
        previous = session.exec(
            select(ProcessedRequest)
            .where(ProcessedRequest.key == key)
            .execution_options(populate_existing=True)
        ).one()
        if previous.request_hash != body_hash:
            raise Refusal(422, "idempotency_key_reused", locale) from None
        body = json.loads(previous.response_body or "{}")
        return None, Answer(previous.response_status or 200, body, [("Idempotent-Replayed", "true")])
    return ledger, None


def _refusal_for(problems: list[rowlib.Problem], locale: str) -> Refusal:
    listed = [_problem_json(problem, locale) for problem in problems]
    scope = [problem for problem in problems if problem.code == "out_of_scope"]
    if scope:
        return Refusal(403, "out_of_scope", locale, problems=listed, count=len(scope))
    return Refusal(422, "invalid_rows", locale, problems=listed, count=len(problems))


def _problem_json(problem: rowlib.Problem, locale: str) -> dict[str, Any]:
    params = dict(problem.params)
    family = "report.error" if params.pop("from_report", False) else "push.problem"
    return {
        "row": problem.row,
        "field": problem.field,
        "code": problem.code,
        "message": render.message(f"{family}.{problem.code}", locale, **params),
    }


def _stored_body(stored: Stored, rows: Sequence[rowlib.Row]) -> dict[str, Any]:
    items = []
    for reported in stored.saved:
        items.append(
            {
                "kpi": reported.kpi.key,
                "period": reported.period.key,
                "value": plain_number(Decimal(reported.recorded.actual.value)),
                "status": "corrected" if reported.recorded.is_correction else "created",
                "id": reported.recorded.actual.id,
            }
        )
    for checked in stored.unchanged:
        items.append(
            {
                "kpi": checked.kpi.key,
                "period": checked.period.key,
                "value": plain_number(checked.value),
                "status": "unchanged",
                "id": None,
            }
        )
    return {
        "received": len(rows),
        "created": stored.created,
        "corrected": stored.corrected,
        "unchanged": len(stored.unchanged),
        "actuals": items,
    }
