"""Alert messages in department channels. (Being built: issue 5.)"""

from __future__ import annotations

from slack_sdk import WebClient

from bot.reporting import Reported
from handlers.deps import Deps


def on_reported(deps: Deps, client: WebClient, reported: Reported) -> None:
    """Raise, update or resolve the KPI's alerts after a report."""
