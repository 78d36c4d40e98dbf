"""Errors that end a command with a clear message instead of a traceback."""

from __future__ import annotations


class KpibotError(Exception):
    """An expected failure; its message is meant for the person running kpibot."""


class ConfigError(KpibotError):
    """A setting is missing or malformed; the message names the variable."""


class DatabaseUnavailable(KpibotError):
    """The database cannot be reached; the message names the URL without its password."""


class SchemaOutOfDate(KpibotError):
    """The database has not been migrated to the code's schema."""


class SlackRefused(KpibotError):
    """Slack refused a token, or could not be reached, before kpibot started serving."""
