"""`POST /hooks/hubspot/<source>`: a HubSpot app's webhook events, each +1 on a KPI.

parse → authorize → call bot/ → render, as the push API (handlers/api): the source found by the
name in the path, the v3 signature checked over the raw body (bot.sources.hubspot.verify_v3), the
events counted by bot.sources.hubspot.receive in one transaction, the answer JSON. Order of the
checks: method (405), source (404), size (413), signature (401), body (400), events (422, or 403
for a KPI outside the source's scope). A database that does not answer is a 503 with Retry-After
(HubSpot retries); nothing HubSpot or anyone else sends gets a 500.

The URI HubSpot signed is the public one: behind a proxy that terminates TLS, the scheme comes
from X-Forwarded-Proto and the host from the Host header (X-Forwarded-Host when the proxy sets it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from bot import render
from bot.clock import utcnow
from bot.database import transaction
from bot.errors import DatabaseUnavailable
from bot.reports import rows as rowlib
from bot.reports.service import Reported, plain_number
from bot.sources import hubspot
from bot.sources import service as sources
from handlers.api.endpoint import Answer, write_answer

log = logging.getLogger(__name__)

PREFIX = "/hooks/hubspot/"
LIMIT_BYTES = 1024 * 1024  # 100 events are a few tens of kB
RETRY_AFTER_UNAVAILABLE = 5


class Refused(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        locale: str,
        *,
        problems: list[dict[str, Any]] | None = None,
        headers: list[tuple[str, str]] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(code)
        error: dict[str, Any] = {
            "code": code,
            "message": render.message(f"hubspot.error.{code}", locale, **params),
        }
        if problems is not None:
            error["problems"] = problems
        self.answer = Answer(status, {"error": error}, headers or [])


class HubSpotReceiver:
    """The WSGI app of /hooks/hubspot/…; `after_commit` gets the values stored (alerts, follow-ups)."""

    def __init__(
        self,
        engine: Engine,
        *,
        locale: str = "en",
        after_commit: Callable[[list[Reported]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.locale = locale  # HubSpot sends no Accept-Language: the server's language
        self.after_commit = after_commit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            answer = self._receive(environ)
        except Refused as refusal:
            answer = refusal.answer
        except (DatabaseUnavailable, DBAPIError):
            log.warning("HubSpot receiver: database unavailable", exc_info=True)
            headers = [("Retry-After", str(RETRY_AFTER_UNAVAILABLE))]
            answer = Refused(503, "unavailable", self.locale, headers=headers).answer
        except Exception:
            log.exception("HubSpot receiver: unexpected failure on %s", environ.get("PATH_INFO"))
            answer = Refused(500, "internal_error", self.locale).answer
        return write_answer(answer, start_response)

    def _receive(self, environ: dict[str, Any]) -> Answer:
        locale, path = self.locale, environ.get("PATH_INFO") or ""
        if environ.get("REQUEST_METHOD") != "POST":
            raise Refused(405, "method_not_allowed", locale, headers=[("Allow", "POST")])
        name = path.removeprefix(PREFIX).strip("/")
        with Session(self.engine) as session:
            try:
                source = sources.by_name(session, name) if sources.NAME.match(name) else None
            except sources.SourceError:
                source = None
            config = hubspot.config_of(source) if source is not None and source.revoked_at is None else None
            if source is None or config is None:
                raise Refused(404, "unknown_source", locale, name=name[:64])
            session.expunge(source)
        body = _read_body(environ, locale)
        headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
        try:
            hubspot.verify_v3(config.client_secret, "POST", public_uri(environ), body, headers, utcnow())
        except hubspot.HubSpotError as error:
            raise Refused(401, error.code, locale) from None
        try:
            events, problems = hubspot.parse_events(body)
        except rowlib.FormatError as error:
            raise Refused(400, error.code, locale, **error.params) from None
        if problems:
            raise _refusal(problems, locale)
        with transaction(self.engine) as session:
            result = hubspot.receive(session, source, events)
            if isinstance(result, list):
                raise _refusal(result, locale)  # rolled back: nothing counted, no event id kept
        saved = result.stored.saved if result.stored is not None else []
        if saved and self.after_commit is not None:
            try:
                self.after_commit(saved)
            except Exception:  # the counts are stored whatever Slack does
                log.exception("HubSpot receiver: follow-ups failed to start")
        return Answer(
            200,
            {
                "received": result.events,
                "counted": result.counted,
                "replayed": result.replayed,
                "actuals": [
                    {
                        "kpi": item.kpi.key,
                        "period": item.period.key,
                        "value": plain_number(item.recorded.actual.value),
                    }
                    for item in saved
                ],
            },
        )


def public_uri(environ: dict[str, Any]) -> str:
    """The URI HubSpot sent the request to: scheme, host, path and query as received."""
    scheme = (environ.get("HTTP_X_FORWARDED_PROTO") or environ.get("wsgi.url_scheme") or "http").split(",")[0]
    host = (environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST") or "").split(",")[0].strip()
    if not host:
        host = f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    # PATH_INFO is decoded by the server; RAW_URI/REQUEST_URI (gunicorn, uwsgi) is the path as sent.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        query = environ.get("QUERY_STRING")
        raw = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) + (f"?{query}" if query else "")
    return f"{scheme.strip()}://{host}{raw}"


def _read_body(environ: dict[str, Any], locale: str) -> bytes:
    raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
    stream = environ["wsgi.input"]
    if raw_length.isdigit():
        if int(raw_length) > LIMIT_BYTES:
            raise Refused(413, "too_large", locale, limit_kb=LIMIT_BYTES // 1024)
        return stream.read(int(raw_length)) if int(raw_length) else b""
    body = stream.read(LIMIT_BYTES + 1) if raw_length == "" and environ.get("HTTP_TRANSFER_ENCODING") else b""
    if len(body) > LIMIT_BYTES:
        raise Refused(413, "too_large", locale, limit_kb=LIMIT_BYTES // 1024)
    return body


def _refusal(problems: list[rowlib.Problem], locale: str) -> Refused:
    listed = []
    for problem in problems:
        params = dict(problem.params)
        family = "report.error" if params.pop("from_report", False) else "hubspot.problem"
        if family == "hubspot.problem" and f"hubspot.problem.{problem.code}" not in render.message_keys(
            locale
        ):
            family = "push.problem"
        listed.append(
            {
                "event": problem.row,
                "field": problem.field,
                "code": problem.code,
                "message": render.message(f"{family}.{problem.code}", locale, **params),
            }
        )
    if any(problem.code == "out_of_scope" for problem in problems):
        return Refused(403, "out_of_scope", locale, problems=listed, count=len(listed))
    return Refused(422, "invalid_events", locale, problems=listed, count=len(listed))
