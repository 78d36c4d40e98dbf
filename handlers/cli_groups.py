"""What `kpibot`'s parser (handlers/cli.py, the composition root) hands a command group that
registers its own subcommands (`kpibot source …`, `kpibot hubspot …`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from bot.config import Settings


@dataclass(frozen=True)
class CommandGroups:
    commands: Any  # argparse's subparsers action of `kpibot` (its type is private to argparse)
    locale_option: argparse.ArgumentParser  # `--locale` accepted after every (sub)command too
    database: Callable[[Settings], Engine]  # the configured database, its schema checked
    say: Callable[[str], str]  # the help text `cli.help.<key>` in the language of --help

    def group(self, name: str) -> tuple[argparse.ArgumentParser, Any]:
        """`kpibot NAME ACTION …`: the group's parser (help `cli.help.NAME`) and its actions."""
        parser = self.commands.add_parser(name, parents=[self.locale_option], help=self.say(name))
        return parser, parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(self, actions: Any, name: str, help_key: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[self.locale_option], help=self.say(help_key))
