"""The Slack side of `bot.outbox.Poster`: Web API calls, Slack's errors turned into PostFailed."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.outbox import Message, PostFailed, Upload

log = logging.getLogger(__name__)


def error_code(error: SlackApiError) -> str:
    return str(error.response.get("error") or error)


class SlackPoster:
    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(self, channel: str, message: Message, *, thread_ts: str | None = None) -> str:
        try:
            response = self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=message.text, blocks=message.blocks or None
            )
        except SlackApiError as error:
            raise PostFailed(error_code(error)) from error
        return str(response["ts"])

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
