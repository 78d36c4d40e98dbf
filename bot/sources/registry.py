"""The kinds of fetched source a plan may name (`source: {kind: …}`), each a module that follows
bot.sources.fetching's contract. Imported when first used: a plan with only SQL sources never
loads the HTTP fetchers, and a web worker that never fetches loads none of them."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import cast

from bot.sources.fetching import Fetcher, SpecError

MODULES: dict[str, str] = {
    "sql": "bot.sources.sql",
    "hubspot": "bot.sources.remote.hubspot_search",
    "salesforce": "bot.sources.remote.salesforce",
}


def fetcher(kind: str) -> Fetcher:
    """The module of a kind; SpecError for a kind kpibot does not know."""
    path = MODULES.get(kind)
    if path is None:
        raise SpecError(f"unknown kind {kind!r}: one of {', '.join(sorted(MODULES))}")
    module: ModuleType = importlib.import_module(path)
    return cast(Fetcher, module)


def validate(source: Mapping[str, object]) -> str:
    """A plan's `source:` block checked by its kind; returns the kind."""
    kind = source.get("kind")
    if not isinstance(kind, str) or not kind:
        raise SpecError(f"`kind` is required: one of {', '.join(sorted(MODULES))}")
    fetcher(kind).validate(spec(source))
    return kind


def spec(source: Mapping[str, object]) -> dict[str, object]:
    """What the kind's module reads: the block without `kind` itself."""
    return {name: value for name, value in source.items() if name != "kind"}


def label(source: Mapping[str, object]) -> str:
    """How people name a source in one line: ``sql (WAREHOUSE)``, ``hubspot (deals)``."""
    kind = str(source.get("kind", "?"))
    where = source.get("connection") or source.get("object") or source.get("connection_env")
    return f"{kind} ({where})" if where else kind
