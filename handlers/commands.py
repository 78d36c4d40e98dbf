"""`/kpi <subcommand> …`: one Slack command, routed to the module that owns each subcommand."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot import render
from bot.database import reading
from bot.models import Department
from handlers.deps import Deps, department_of_channel
from handlers.work import after_ack

log = logging.getLogger(__name__)


@dataclass
class CommandRequest:
    deps: Deps
    user_id: str
    channel_id: str
    text: str  # what follows the subcommand
    trigger_id: str
    respond: Respond
    client: WebClient
    context: BoltContext  # what app.error needs to answer well (handlers.work.answer_in)
    channel_department: Department | None = None

    def locale(self, department: Department | None = None) -> str:
        return self.deps.locale_for(self.user_id, department or self.channel_department)

    def reply(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """An ephemeral answer through response_url; a failure to deliver is logged, never raised."""
        try:
            response = self.respond(text=text, blocks=blocks, response_type="ephemeral")
            if response.status_code != 200:
                log.error("reply to %s failed: HTTP %s %s", self.user_id, response.status_code, response.body)
        except Exception:
            log.exception("reply to %s failed", self.user_id)


Subcommand = Callable[[CommandRequest], None]
SUBCOMMANDS: dict[str, Subcommand] = {}
# Subcommands whose whole work waits its turn on the worker's post-ack pool (handlers/work.py):
# they read and answer through response_url (valid 30 minutes), so a burst of them queues there
# instead of computing on as many listener threads beside the next requests' acks. The others run
# on the listener thread: they open a form with the trigger_id, which dies ~3 s after the command.
QUEUED: set[Subcommand] = set()


def subcommand(*names: str, queued: bool = False) -> Callable[[Subcommand], Subcommand]:
    """Register a handler for `/kpi <name>`; the first name is the one shown in help. `queued`: it
    never opens a form, so it runs on the post-ack pool."""

    def register(handler: Subcommand) -> Subcommand:
        for name in names:
            SUBCOMMANDS[name] = handler
        if queued:
            QUEUED.add(handler)
        return handler

    return register


def register(app: App, deps: Deps) -> None:
    @app.command("/kpi")
    def kpi_command(
        ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient, context: BoltContext
    ) -> None:
        # Ack first and empty: every answer goes through response_url, so the 3 s budget
        # is never spent on the database or the Web API.
        ack()
        name, _, rest = (command.get("text") or "").strip().partition(" ")
        request = CommandRequest(
            deps=deps,
            user_id=command["user_id"],
            channel_id=command.get("channel_id", ""),
            text=rest.strip(),
            trigger_id=command.get("trigger_id", ""),
            respond=respond,
            client=client,
            context=context,
        )
        dispatch(request, name.lower() or "report")


def dispatch(request: CommandRequest, name: str) -> None:
    """What escapes a subcommand is told to the user by the app's error handler (handlers/work.py)."""
    # Only reads: a listener thread never waits here for a save's write lock (SQLite).
    with reading(request.deps.engine) as session:
        request.channel_department = department_of_channel(session, request.channel_id)
    handler = SUBCOMMANDS.get(name)
    if handler is None:
        request.reply(render.message("command.unknown", request.locale(), name=name))
        return
    if handler in QUEUED:
        after_ack(request.context, handler, request)
        return
    handler(request)


@subcommand("help", "ヘルプ", "?")
def help_command(request: CommandRequest) -> None:
    request.reply(render.template("help.md", request.locale()))
