"""A Web API client that keeps messages instead of sending them: the demo's "Slack".

It is a real `slack_sdk.WebClient` whose transport is replaced, so the code that posts
alerts, thread notes and countermeasures runs unchanged; only the wire is missing. The
methods kpibot calls answer the way Slack does (a `ts` for each message, a permalink).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from slack_sdk import WebClient
from slack_sdk.web.slack_response import SlackResponse


@dataclass
class PreviewMessage:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    edited: bool = False


class PreviewClient(WebClient):
    def __init__(self, *, locale: str = "ja") -> None:
        super().__init__(token="xoxb-preview")
        self.locale = locale
        self.messages: list[PreviewMessage] = []
        self._clock = itertools.count(1)

    def api_call(  # type: ignore[override]
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> SlackResponse:
        args = {**(params or {}), **(data or {}), **(json or {})}
        answer = getattr(self, "_" + api_method.replace(".", "_"), self._ok)(args)
        return SlackResponse(
            client=self,
            http_verb=http_verb,
            api_url=api_method,
            req_args=args,
            data={"ok": True, **answer},
            headers={},
            status_code=200,
        )

    def _ok(self, args: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = f"1700000000.{next(self._clock):06d}"
        self.messages.append(
            PreviewMessage(args["channel"], ts, args.get("text") or "", _blocks(args), args.get("thread_ts"))
        )
        return {"channel": args["channel"], "ts": ts}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        for message in self.messages:
            if message.channel == args["channel"] and message.ts == args["ts"]:
                message.text, message.blocks, message.edited = args.get("text") or "", _blocks(args), True
        return {"channel": args["channel"], "ts": args["ts"]}

    def _chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"permalink": f"https://example.slack.com/archives/{args['channel']}/p{args['message_ts']}"}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"user": {"id": args.get("user"), "locale": f"{self.locale}-JP", "is_admin": False}}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": {"id": args.get("channel"), "is_member": True}}

    def threads(self) -> dict[str, list[tuple[PreviewMessage, list[PreviewMessage]]]]:
        """Root messages with their replies, by channel, in posting order."""
        channels: dict[str, list[tuple[PreviewMessage, list[PreviewMessage]]]] = {}
        roots = {m.ts: (m, []) for m in self.messages if m.thread_ts is None}
        for message in self.messages:
            if message.thread_ts is None:
                channels.setdefault(message.channel, []).append(roots[message.ts])
            elif message.thread_ts in roots:
                roots[message.thread_ts][1].append(message)
        return channels


def _blocks(args: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = args.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)
