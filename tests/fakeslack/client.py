"""Sends signed requests to a running Bolt app the way Slack's servers do (stdlib only)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

from tests.fakeslack.server import APP_ID, BOT_ID, BOT_USER_ID, FakeSlack

JsonDict = dict[str, Any]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
VERIFICATION_TOKEN = "verification-token-test"  # legacy field Slack still sends; Bolt ignores it


_CLIENTS = itertools.count(1)  # every client of this process, for unique response URLs


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class SignedSlackClient:
    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        fake: FakeSlack | None = None,
        team_id: str = "T0TEST",
        path: str = "/slack/events",
        timeout: float = 10.0,
    ) -> None:
        self.url = app_url.rstrip("/") + path
        self.signing_secret = signing_secret
        self.fake = fake
        self.team_id = team_id
        self.timeout = timeout
        self.last_response_url: str | None = None  # of the most recent request, to find its Call
        self._serial = itertools.count(1)
        # Response URLs are recorded by name at the fake: unique across clients, so one virtual user
        # of a benchmark (each has a client) never counts another's answer as its own.
        self._prefix = f"c{next(_CLIENTS)}"

    # -- Slack request kinds -----------------------------------------------------------------------

    def command(
        self,
        text: str,
        user_id: str = "U0OWNER",
        command: str = "/kpi",
        channel_id: str = "C0SALES",
        user_name: str | None = None,
        retry_num: int | None = None,
        trigger_id: str | None = None,
    ) -> Response:
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": "kpitest",
            "channel_id": channel_id,
            "channel_name": channel_id.lower(),
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self._new_response_url("commands"),
            "trigger_id": trigger_id or self._new_trigger_id(),
        }
        return self.raw(urlencode(fields).encode(), FORM, headers=_retry_headers(retry_num))

    def block_action(
        self,
        action_id: str,
        value: str | None = None,
        user_id: str = "U0OWNER",
        channel_id: str = "C0SALES",
        message_ts: str | None = None,
        thread_ts: str | None = None,
        block_id: str | None = None,
        container: JsonDict | None = None,
        view: JsonDict | None = None,
        selected_option: JsonDict | None = None,
    ) -> Response:
        action: JsonDict = {
            "action_id": action_id,
            "block_id": block_id or "b-" + action_id,
            "action_ts": self._now_ts(),
        }
        if selected_option is not None:
            action.update(type="static_select", selected_option=selected_option)
        else:
            action.update(type="button", value=value, text={"type": "plain_text", "text": action_id})

        payload = self._interactive_base("block_actions", user_id)
        payload.update(actions=[action], state={"values": {}})
        if view is not None:
            # Actions inside a modal carry the view instead of a channel/message/response_url.
            payload.update(container=container or {"type": "view", "view_id": view.get("id")}, view=view)
        else:
            ts = message_ts or self._now_ts()
            message: JsonDict = {
                "type": "message",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "ts": ts,
                "text": "",
            }
            if thread_ts is not None:
                message["thread_ts"] = thread_ts
            payload.update(
                container=container
                or {"type": "message", "message_ts": ts, "channel_id": channel_id, "is_ephemeral": False},
                channel={"id": channel_id, "name": channel_id.lower()},
                message=message,
                response_url=self._new_response_url("actions"),
            )
        return self._send_payload(payload)

    def view_submission(
        self,
        callback_id: str,
        values: dict[str, dict[str, JsonDict]],
        user_id: str = "U0OWNER",
        private_metadata: str = "",
        view_id: str | None = None,
    ) -> Response:
        view_id = view_id or f"V{next(self._serial):09d}"
        payload = self._interactive_base("view_submission", user_id)
        payload.update(
            view={
                "id": view_id,
                "team_id": self.team_id,
                "type": "modal",
                "callback_id": callback_id,
                "private_metadata": private_metadata,
                "state": {"values": values},
                "hash": self._now_ts(),
                "blocks": [],
                "root_view_id": view_id,
                "previous_view_id": None,
                "app_id": APP_ID,
                "bot_id": BOT_ID,
            },
            response_urls=[],
        )
        return self._send_payload(payload)

    def message_shortcut(
        self, callback_id: str, message: JsonDict, channel_id: str = "C0SALES", user_id: str = "U0OWNER"
    ) -> Response:
        payload = self._interactive_base("message_action", user_id)
        payload.update(
            callback_id=callback_id,
            action_ts=self._now_ts(),
            channel={"id": channel_id, "name": channel_id.lower()},
            message=message,
            message_ts=message.get("ts"),
            response_url=self._new_response_url("shortcuts"),
        )
        return self._send_payload(payload)

    def event(self, event: JsonDict, event_id: str | None = None, retry_num: int | None = None) -> Response:
        self.last_response_url = None
        body = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._serial):09d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        return self.raw(json.dumps(body).encode(), JSON, headers=_retry_headers(retry_num))

    # -- wire level --------------------------------------------------------------------------------

    def sign(self, timestamp: str, body: bytes) -> str:
        base = b"v0:" + timestamp.encode() + b":" + body
        return "v0=" + hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()

    def raw(
        self,
        body: bytes,
        content_type: str,
        timestamp: int | str | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """POST exactly these bytes; pass timestamp/signature to forge or age a request."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        request = Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": content_type,
                "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": signature or self.sign(ts, body),
                **(headers or {}),
            },
        )
        try:
            with urlopen(request, timeout=self.timeout) as resp:
                return Response(resp.status, resp.read().decode(), dict(resp.headers.items()))
        except HTTPError as err:  # Tests assert on 401/404/500 etc., so hand them back instead
            with err:
                return Response(err.code, err.read().decode(), dict(err.headers.items()))

    # -- helpers -----------------------------------------------------------------------------------

    def _interactive_base(self, kind: str, user_id: str) -> JsonDict:
        self.last_response_url = None
        return {
            "type": kind,
            "token": VERIFICATION_TOKEN,
            "api_app_id": APP_ID,
            "team": {"id": self.team_id, "domain": "kpitest"},
            "user": {
                "id": user_id,
                "username": user_id.lower(),
                "name": user_id.lower(),
                "team_id": self.team_id,
            },
            "trigger_id": self._new_trigger_id(),
            "enterprise": None,
            "is_enterprise_install": False,
        }

    def _send_payload(self, payload: JsonDict) -> Response:
        return self.raw(urlencode({"payload": json.dumps(payload)}).encode(), FORM)

    def _new_response_url(self, kind: str) -> str:
        name = f"{kind}-{self._prefix}-{next(self._serial)}"
        if self.fake is not None:
            url = self.fake.response_url(name)
        else:  # same shape as Slack's; without a fake there is nothing local to receive it
            url = f"https://hooks.slack.com/{kind}/{self.team_id}/{name}/{secrets.token_hex(12)}"
        self.last_response_url = url
        return url

    def _new_trigger_id(self) -> str:
        return f"{next(self._serial)}.{int(time.time())}.{secrets.token_hex(16)}"

    @staticmethod
    def _now_ts() -> str:
        return f"{time.time():.6f}"


def _retry_headers(retry_num: int | None) -> dict[str, str]:
    if retry_num is None:
        return {}
    return {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
