"""The Slack side of `bot.outbox.Poster`: Web API calls, Slack's errors turned into PostFailed.

Every message posted for a ledger key carries it as message metadata (event type `kpibot_post`),
so that after an ambiguous outcome — a dropped connection, a timeout, a 5xx after the request was
sent — `find` can tell whether Slack has the message before anything is sent again. Reading it
back takes the `*:history` scopes (channels, groups, im, mpim) in the manifest.
"""

from __future__ import annotations

import http.client
import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.outbox import Message, PostFailed, PostUncertain, Upload
from handlers.client import never_sent

log = logging.getLogger(__name__)


def error_code(error: SlackApiError) -> str:
    return str(error.response.get("error") or error)


METADATA_EVENT = "kpibot_post"
# Pages of 200: a post is looked for among the latest 1,000 messages of its channel or thread. Its
# key is unique, so no time window is needed (and Slack's clock is not kpibot's injectable one).
FIND_PAGES = 5


def metadata(key: str) -> dict[str, Any]:
    return {"event_type": METADATA_EVENT, "event_payload": {"key": key}}


class SlackPoster:
    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(
        self, channel: str, message: Message, *, thread_ts: str | None = None, key: str | None = None
    ) -> str:
        try:
            response = self.client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=message.text,
                blocks=message.blocks or None,
                metadata=metadata(key) if key else None,
            )
        except SlackApiError as error:
            if error.response.status_code >= 500:
                raise PostUncertain(f"http_{error.response.status_code}") from error
            raise PostFailed(error_code(error)) from error
        except (OSError, http.client.HTTPException) as error:
            if never_sent(error):
                raise PostFailed("unreachable") from error
            # The request may have been carried out: the outbox looks before it sends again.
            raise PostUncertain(type(error).__name__) from error
        return str(response["ts"])

    def find(self, channel: str, key: str, *, thread_ts: str | None = None) -> str | None:
        """The ts of the message posted for `key` in `channel` (or its thread), if Slack has it."""
        try:
            if channel[:1] in ("U", "W"):  # a DM posted to a user id: its history is the IM's
                channel = str(self.client.conversations_open(users=channel)["channel"]["id"])
            cursor = None
            for _ in range(FIND_PAGES):
                if thread_ts:
                    page = self.client.conversations_replies(
                        channel=channel,
                        ts=thread_ts,
                        include_all_metadata=True,
                        limit=200,
                        cursor=cursor,
                    )
                else:
                    page = self.client.conversations_history(
                        channel=channel, include_all_metadata=True, limit=200, cursor=cursor
                    )
                for found in page.get("messages") or []:
                    tag = found.get("metadata") or {}
                    if (
                        tag.get("event_type") == METADATA_EVENT
                        and (tag.get("event_payload") or {}).get("key") == key
                    ):
                        return str(found["ts"])
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    return None
        except SlackApiError as error:
            raise PostUncertain(f"find: {error_code(error)}") from error
        except (OSError, http.client.HTTPException) as error:
            raise PostUncertain(f"find: {type(error).__name__}") from error
        return None

    def update(self, channel: str, ts: str, message: Message) -> None:
        try:
            self.client.chat_update(channel=channel, ts=ts, text=message.text, blocks=message.blocks)
        except SlackApiError as error:
            raise PostFailed(error_code(error)) from error

    def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> None:
        try:
            self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                content=upload.content,
                filename=upload.filename,
                title=upload.title,
                initial_comment=upload.comment,
            )
        except SlackApiError as error:
            raise PostFailed(error_code(error)) from error

    def ephemeral(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> None:
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError as error:
            raise PostFailed(error_code(error)) from error

    def permalink(self, channel: str, ts: str) -> str | None:
        try:
            return str(self.client.chat_getPermalink(channel=channel, message_ts=ts)["permalink"])
        except SlackApiError as error:
            log.warning("chat.getPermalink for %s %s failed: %s", channel, ts, error_code(error))
            return None
