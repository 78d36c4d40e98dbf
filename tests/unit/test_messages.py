"""templates/: every message catalog parses, and every locale says the same things.

Catalogs are templates/<locale>/messages.yaml and templates/<locale>/messages/*.yaml (keys to
Jinja2 strings); layouts are templates/<locale>/**/*.j2. A message or layout that exists in one
language only fails here, not in front of a user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import render
from bot.config import LOCALES

TEMPLATES = render.TEMPLATES_DIR


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key written twice in one file is an error instead of the last one winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def catalog_files() -> list[Path]:
    files = []
    for locale in LOCALES:
        folder = TEMPLATES / locale
        files += [folder / "messages.yaml", *sorted((folder / "messages").glob("*.yaml"))]
    return files


def layouts(locale: str) -> set[str]:
    folder = TEMPLATES / locale
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*.j2")}


def difference(found: dict[str, set[str]]) -> str:
    """What each locale lacks that another has, for the assertion message."""
    everything = set().union(*found.values())
    missing = {locale: sorted(everything - names) for locale, names in found.items()}
    return "; ".join(f"missing in {locale}: {names}" for locale, names in missing.items() if names)


@pytest.mark.parametrize("path", catalog_files(), ids=lambda path: path.relative_to(TEMPLATES).as_posix())
def test_every_catalog_parses(path: Path) -> None:
    name = path.relative_to(TEMPLATES).as_posix()
    assert path.is_file(), f"{name} is missing"
    entries = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    assert isinstance(entries, dict) and entries, f"{name} is not a mapping of keys to messages"
    wrong = [key for key, text in entries.items() if not isinstance(key, str) or not isinstance(text, str)]
    assert not wrong, f"{name}: not a text message: {wrong}"
    # kpibot reads the catalogs with libyaml where PyYAML has it: the same text as pure Python reads.
    assert yaml.load(path.read_text(encoding="utf-8"), Loader=render._YAML_LOADER) == entries


@pytest.mark.parametrize("locale", LOCALES)
def test_every_message_compiles(locale: str) -> None:
    # Loading the catalog compiles each message with the real filters and refuses a key
    # defined in two files of the same locale.
    assert render.message_keys(locale)


def test_every_locale_defines_the_same_messages() -> None:
    keys = {locale: render.message_keys(locale) for locale in LOCALES}
    assert len(set(map(frozenset, keys.values()))) == 1, difference(keys)


def test_every_layout_exists_in_every_locale() -> None:
    found = {locale: layouts(locale) for locale in LOCALES}
    assert found["en"], "no layouts found: is TEMPLATES right?"
    assert len(set(map(frozenset, found.values()))) == 1, difference(found)
