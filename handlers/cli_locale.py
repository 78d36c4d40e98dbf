"""The `kpibot` command's own words in the user's language: argparse's included.

argparse looks up every word it prints ("usage: ", "options", "show this help message and exit", its
errors) through its module-level names `_` and `ngettext`, its gettext hook, when a parser is built
(the -h help and the section titles), formats its help (usage) or fails (errors). `argparse_in(locale)`
points that hook at templates/<locale>/messages/cli.yaml while the `kpibot` parser is built and used.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from bot import render
from bot.config import LOCALES

# argparse's English text (its gettext message id, Python 3.11) → our key in cli.yaml. A text not
# listed (argparse's errors about a parser built wrongly, which a user never meets) stays English.
_ARGPARSE = {
    "usage: ": "usage",
    "positional arguments": "positional_arguments",
    "options": "options",
    "subcommands": "subcommands",
    "show this help message and exit": "help",
    "%(prog)s: error: %(message)s\n": "error",
    "argument %(argument_name)s: %(message)s": "argument",
    "the following arguments are required: %s": "required",
    "one of the arguments %s is required": "one_of_required",
    "invalid choice: %(value)r (choose from %(choices)s)": "invalid_choice",
    "invalid %(type)s value: %(value)r": "invalid_value",
    "unrecognized arguments: %s": "unrecognized",
    "ambiguous option: %(option)s could match %(matches)s": "ambiguous",
    "not allowed with argument %s": "not_allowed_with",
    "ignored explicit argument %r": "ignored_explicit",
    "unexpected option string: %s": "unexpected_option",
    "expected one argument": "expected_one",
    "expected at most one argument": "expected_at_most_one",
    "expected at least one argument": "expected_at_least_one",
    "expected %s argument": "expected_n_one",
    "expected %s arguments": "expected_n",
    "can't open '%(filename)s': %(error)s": "cannot_open",
}


def argparse_words(locale: str) -> Callable[[str], str]:
    """argparse's `_`: its English text in `locale`, with the spaces and line ends argparse puts
    around it kept (the catalog's messages are stripped; "usage: " needs its space, errors their newline)."""

    def gettext(text: str) -> str:
        key = _ARGPARSE.get(text)
        if key is None:
            return text
        lead = text[: len(text) - len(text.lstrip())]
        tail = text[len(text.rstrip()) :]
        return lead + render.message(f"cli.argparse.{key}", locale) + tail

    return gettext


@contextmanager
def argparse_in(locale: str) -> Iterator[None]:
    """argparse speaks `locale` inside the block. The hook is module state: the CLI parses once per
    process, on one thread, so swapping it there and back is safe."""
    gettext = argparse_words(locale)
    saved = argparse._, argparse.ngettext  # type: ignore[attr-defined]

    def ngettext(singular: str, plural: str, count: int) -> str:
        return gettext(singular if count == 1 else plural)

    argparse._ = gettext  # type: ignore[attr-defined]
    argparse.ngettext = ngettext  # type: ignore[attr-defined]
    try:
        yield
    finally:
        argparse._, argparse.ngettext = saved  # type: ignore[attr-defined]


def argv_locale(argv: Sequence[str], default: str) -> str:
    """The language of `--help` and of argparse's errors, known before parsing: the last `--locale X`
    given (before and after the command both count, as in the parser), else `default`. A value that
    is not a locale is left for the parser to refuse, in `default`'s language."""
    chosen = default
    for index, word in enumerate(argv):
        if word == "--":
            break
        value = None
        if word == "--locale" and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith("--locale="):
            value = word.partition("=")[2]
        if value in LOCALES:
            chosen = value
    return chosen
