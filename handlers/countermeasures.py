"""Countermeasures: logged from alert threads, followed up until the KPI recovers. (Being built: issue 5.)"""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot.reporting import Reported
from handlers.deps import Deps


def on_reported(deps: Deps, client: WebClient, reported: Reported) -> None:
    """Post the measured effect of the KPI's open countermeasures in their threads."""


def register(app: App, deps: Deps) -> None:
    """Actions, views, shortcuts and events of countermeasures."""
