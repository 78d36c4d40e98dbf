"""`kpibot hubspot add NAME --rule … --client-secret-file FILE`: a HubSpot app's webhooks as a source.

Registered on the `kpibot` parser by handlers/cli.py; the rules are in bot.sources.hubspot. The
client secret is read from a file (or stdin with `-`), never from the command line, where it
would stay in the shell's history and the process list.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bot import render
from bot.config import Settings
from bot.database import transaction
from bot.errors import KpibotError
from bot.sources import hubspot
from bot.sources import service as sources
from handlers.api.commands import _issued
from handlers.cli_groups import CommandGroups


def register(cli: CommandGroups) -> None:
    parser, actions = cli.group("hubspot")
    add = cli.action(actions, "add", "hubspot_add")
    add.add_argument("name", help=cli.say("source_name"))
    add.add_argument("--rule", action="append", default=[], help=cli.say("hubspot_rule"))
    add.add_argument("--client-secret-file", required=True, help=cli.say("hubspot_secret"))

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        locale = args.locale
        try:
            secret = _read_secret(args.client_secret_file)
        except OSError as error:
            raise KpibotError(
                render.message(
                    "hubspot.cli.secret_unreadable",
                    locale,
                    path=args.client_secret_file,
                    reason=error.strerror,
                )
            ) from None
        engine = cli.database(settings)
        try:
            rules = [hubspot.parse_rule(text) for text in args.rule]
            with transaction(engine) as session:
                done = hubspot.configure(session, args.name, client_secret=secret, rules=rules)
                name = done.source.name if isinstance(done, sources.Issued) else done.name
        except hubspot.HubSpotError as error:
            raise KpibotError(render.message(f"hubspot.cli.{error.code}", locale, **error.params)) from None
        except sources.SourceError as error:
            raise KpibotError(render.message(f"sources.error.{error.code}", locale, **error.params)) from None
        headline = "hubspot.added" if isinstance(done, sources.Issued) else "hubspot.updated"
        lines = [render.message(headline, locale, name=name)]
        lines += [render.message("hubspot.rule", locale, rule=rule.text()) for rule in rules]
        if isinstance(done, sources.Issued):  # the token also lets it push to /api/v1/actuals
            lines += _issued("sources.added", locale, done)
        print("\n".join(lines))
        return 0

    parser.set_defaults(handler=handler)


def _read_secret(path: str) -> str:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    return text.strip()
