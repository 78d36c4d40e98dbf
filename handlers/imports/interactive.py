"""A CSV of actuals sent to kpibot in a DM: downloaded with the bot's token (files.info, then
url_private_download: the `files:read` scope), every row checked with the sender's permission,
and a preview answered in the DM with Save / Cancel. Save downloads the same file again (a
Slack file does not change) and stores every row in one transaction, once however often it is
clicked (the idempotency key is the file); Cancel stores nothing."""

from __future__ import annotations

import logging
from typing import Any
from urllib.request import Request, urlopen

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient

from bot import render
from bot.reports import csvimport
from bot.reports import rows as rowlib
from handlers.commands import CommandRequest, subcommand
from handlers.deps import Deps
from handlers.imports import messages
from handlers.report.followup import after_reports
from handlers.work import AlreadyHandled, answer_in, unit_of_work

log = logging.getLogger(__name__)


def is_csv(file: dict[str, Any]) -> bool:
    return file.get("filetype") == "csv" or str(file.get("name", "")).lower().endswith(".csv")


def download(client: WebClient, file_id: str) -> tuple[str, bytes]:
    """The file's name and bytes; its url_private needs the bot token (files:read)."""
    info = client.files_info(file=file_id)["file"]
    if int(info.get("size") or 0) > csvimport.MAX_BYTES:
        raise rowlib.FormatError("file_too_large", limit_mb=csvimport.MAX_BYTES // (1024 * 1024))
    url = info.get("url_private_download") or info["url_private"]
    request = Request(url, headers={"Authorization": f"Bearer {client.token}"})
    with urlopen(request, timeout=30) as response:  # noqa: S310 (Slack's URL, from files.info)
        return str(info.get("name") or file_id), response.read(csvimport.MAX_BYTES + 1)


def register(app: App, deps: Deps) -> None:
    @app.event({"type": "message", "subtype": "file_share"})
    def csv_in_dm(event: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        user_id, channel = event.get("user"), event.get("channel")
        if event.get("channel_type") != "im" or not user_id or not channel:
            return
        locale = deps.locale_for(user_id)
        answer_in(context, locale=locale, slack_error="imports.download_failed")
        for file in event.get("files") or []:
            if not is_csv(file):
                client.chat_postMessage(channel=channel, text=render.message("imports.not_csv", locale))
                continue
            name, body = download(client, file["id"])
            try:
                with unit_of_work(deps.engine) as session:
                    preview = csvimport.preview(
                        session, body, user_id=user_id, is_admin=deps.admin_check(user_id)
                    )
                    text, blocks = messages.preview(preview, file["id"], name, locale)
            except rowlib.FormatError as error:
                text, blocks = messages.unreadable(error, name, locale), None
            client.chat_postMessage(channel=channel, text=text, blocks=blocks)

    @app.action(messages.SAVE_ACTION)
    def save(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        ack()
        user_id = body["user"]["id"]
        file_id = body["actions"][0]["value"]
        locale = deps.locale_for(user_id)
        answer_in(context, locale=locale, slack_error="imports.download_failed")
        name, data = download(client, file_id)
        try:
            with unit_of_work(deps.engine, f"import:{file_id}") as session:
                result = csvimport.save(session, data, user_id=user_id, is_admin=deps.admin_check(user_id))
                if isinstance(result, list):
                    text = messages.refused_now(result, name, locale)
                    session.rollback()  # nothing stored, and the file may be saved once fixed
                    _replace(client, body, text)
                    return
                text = messages.saved(result, name, locale)
        except AlreadyHandled:
            _replace(client, body, render.message("imports.already_saved", locale, name=name))
            return
        _replace(client, body, text)
        after_reports(deps, client, result.saved)

    @app.action(messages.CANCEL_ACTION)
    def cancel(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        locale = deps.locale_for(body["user"]["id"])
        _replace(client, body, render.message("imports.cancelled", locale))


def _replace(client: WebClient, body: dict[str, Any], text: str) -> None:
    """The preview's message becomes the outcome (its buttons gone)."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    ts = (body.get("message") or {}).get("ts") or (body.get("container") or {}).get("message_ts")
    client.chat_update(channel=channel, ts=ts, text=text, blocks=[])


@subcommand("import", "取り込み")
def import_command(request: CommandRequest) -> None:
    """`/kpi import`: how to send a CSV (to kpibot, in a DM)."""
    request.reply(render.message("imports.usage", request.locale()))
