"""`render.warm()`: a serving process compiles every message and template before its first ack."""

from __future__ import annotations

import jinja2
import pytest

from bot import render
from bot.config import LOCALES


def test_after_warm_no_message_or_template_is_compiled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    render.warm()
    compiled: list[str | None] = []
    original = jinja2.Environment._compile

    def counting(self: jinja2.Environment, source: str, filename: str) -> object:
        compiled.append(filename)
        return original(self, source, filename)

    monkeypatch.setattr(jinja2.Environment, "_compile", counting)
    env = render._environment()
    for locale in LOCALES:
        assert render.message("status.green", locale)
        assert render.message_keys(locale)
    for name in env.list_templates(extensions=["j2"]):
        env.get_template(name)
    assert compiled == []
