"""The report modal: `/kpi report` with no arguments. (Being built: see issue 3.)"""

from __future__ import annotations

from slack_bolt import App

from handlers.commands import CommandRequest
from handlers.deps import Deps


def open_report_modal(request: CommandRequest) -> None:
    raise NotImplementedError


def register(app: App, deps: Deps) -> None:
    pass
