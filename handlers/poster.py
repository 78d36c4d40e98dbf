"""The Slack side of `bot.outbox.Poster`: Web API calls, Slack's errors turned into PostFailed.

Every message posted for a ledger key carries it as message metadata (event type `kpibot_post`),
so that after an ambiguous outcome — a dropped connection, a timeout, a 5xx after the request was
sent — `find` can tell whether Slack has the message before anything is sent again. Reading it
back takes the `*:history` scopes (channels, groups, im, mpim) in the manifest.

A message with blocks Slack may not support yet (a table, a native chart: handlers.blocks.WithFallback)
that Slack refuses (`invalid_blocks`, or `invalid_arguments` naming a block) is posted at once in
its fallback rendering instead, tagged with the same key: the same claim, so never lost, never twice.
A message posted without a native chart (its fallback, or one that never had room for a chart) gets
its `plain_files` in its thread: a digest's PNG grid, drawn only then.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import threading
import time
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.outbox import Message, PostFailed, PostUncertain, Upload
from handlers.blocks import DataVisualizationBlock, WithFallback
from handlers.client import never_sent

log = logging.getLogger(__name__)


def error_code(error: SlackApiError) -> str:
    return str(error.response.get("error") or error)


METADATA_EVENT = "kpibot_post"
CHART_BLOCK = DataVisualizationBlock.type
# Pages of 200: a post is looked for among the latest 1,000 messages of its channel or thread. Its
# key is unique, so no time window is needed (and Slack's clock is not kpibot's injectable one).
FIND_PAGES = 5


def metadata(key: str) -> dict[str, Any]:
    return {"event_type": METADATA_EVENT, "event_payload": {"key": key}}


# After a refusal the fallback is sent straight away for a while (one wasted call per process and
# day, not per digest); then the new blocks are tried again, in case the workspace has them now.
REFUSAL_MEMORY_SECONDS = 24 * 3600


class BlocksRefused(PostFailed):
    """Slack did not accept a block in the message (nothing was posted)."""


def refuses_blocks(error: SlackApiError) -> bool:
    """Whether Slack refused the message for one of its blocks: `invalid_blocks`, or
    `invalid_arguments` whose details point into `/blocks`."""
    code = error.response.get("error")
    if code == "invalid_blocks":
        return True
    details = (error.response.get("response_metadata") or {}).get("messages") or []
    return code == "invalid_arguments" and any("/blocks" in str(detail) for detail in details)


class SlackPoster:
    """`in_flight` caps the Web API calls this poster has under way at once, whatever thread makes
    them: the scheduler posts many channels in parallel within Slack's workspace burst, and holds
    only the call to it, not the ledger's writes or the next digest's build around it."""

    def __init__(self, client: WebClient, *, in_flight: int | None = None) -> None:
        self.client = client
        self._refused_at: float | None = None  # when Slack last refused a WithFallback's blocks
        self._mutex = threading.Lock()
        self._calling: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if in_flight is None else threading.BoundedSemaphore(in_flight)
        )

    def post(
        self, channel: str, message: Message, *, thread_ts: str | None = None, key: str | None = None
    ) -> str:
        if not isinstance(message, WithFallback) or not message.fallback:
            ts = self._post(channel, message, thread_ts=thread_ts, key=key)
            self._plain_files(channel, message, thread_ts or ts, key, message.blocks)
            return ts
        if not self._refused_lately():
            try:
                ts = self._post(channel, message, thread_ts=thread_ts, key=key)
            except BlocksRefused as refused:
                log.warning("Slack refused the blocks of %s (%s): posting its fallback", key, refused.code)
                with self._mutex:
                    self._refused_at = time.monotonic()
            else:
                self._plain_files(channel, message, thread_ts or ts, key, message.blocks)
                return ts
        first, *more = message.fallback
        ts = self._post(channel, first, thread_ts=thread_ts, key=key)
        try:
            for reply in more:  # the part of the fallback that did not fit the root message
                self._post(channel, reply, thread_ts=thread_ts or ts)
        except PostFailed as error:
            # The root is in the channel: the post is done, its thread is incomplete (as Outbox logs).
            log.error("fallback thread of %s in %s incomplete: %s", key, channel, error.code)
        self._plain_files(channel, message, thread_ts or ts, key, first.blocks)
        return ts

    def _plain_files(
        self, channel: str, message: Message, thread_ts: str, key: str | None, posted: list[dict[str, Any]]
    ) -> None:
        """The message's `plain_files` in its thread when what was posted (`posted`: its blocks or its
        fallback's) has no native chart: the PNG grid stands in for the chart Slack did not show."""
        if message.plain_files is None or any(block.get("type") == CHART_BLOCK for block in posted):
            return
        try:
            for upload in message.plain_files():
                self.upload(channel, upload, thread_ts=thread_ts)
        except PostFailed as error:
            # The message is in the channel: the post is done, its thread is incomplete (as Outbox logs).
            log.error("files in the thread of %s in %s incomplete: %s", key, channel, error.code)

    def _refused_lately(self) -> bool:
        with self._mutex:
            at = self._refused_at
        return at is not None and time.monotonic() - at < REFUSAL_MEMORY_SECONDS

    def _post(
        self, channel: str, message: Message, *, thread_ts: str | None = None, key: str | None = None
    ) -> str:
        try:
            with self._calling:
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
            if refuses_blocks(error):
                raise BlocksRefused(error_code(error)) from error
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
                with self._calling:
                    channel = str(self.client.conversations_open(users=channel)["channel"]["id"])
            cursor = None
            for _ in range(FIND_PAGES):
                with self._calling:
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
            with self._calling:
                self.client.chat_update(channel=channel, ts=ts, text=message.text, blocks=message.blocks)
        except SlackApiError as error:
            raise PostFailed(error_code(error)) from error

    def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> None:
        try:
            with self._calling:  # its three requests one after the other
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
            with self._calling:
                self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError as error:
            raise PostFailed(error_code(error)) from error

    def permalink(self, channel: str, ts: str) -> str | None:
        try:
            with self._calling:
                return str(self.client.chat_getPermalink(channel=channel, message_ts=ts)["permalink"])
        except SlackApiError as error:
            log.warning("chat.getPermalink for %s %s failed: %s", channel, ts, error_code(error))
            return None
