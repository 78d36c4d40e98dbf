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


def test_without_warm_a_message_is_compiled_on_first_use_and_only_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CLI run says a few messages: compiling all ~700 of a language first cost it ~0.4 s.
    monkeypatch.setattr(render, "_compiled", {})
    monkeypatch.setattr(render, "_constants", {})  # said already: not rendered, so not compiled, again
    compiled: list[str] = []
    original = jinja2.Environment.from_string

    def counting(self: jinja2.Environment, source: str, *args: object, **kwargs: object) -> jinja2.Template:
        compiled.append(source)
        return original(self, source, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jinja2.Environment, "from_string", counting)
    first = render.message("status.green", "ja")
    again = render.message("status.green", "ja")
    assert first and first == again
    assert compiled == [render._sources("ja")["status.green"]]  # once, and no other message
    with pytest.raises(KeyError, match="no message 'no.such.message' in templates/en/"):
        render.message("no.such.message", "en")


def test_a_message_without_parameters_is_rendered_once_and_reads_as_rendered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(render, "_constants", {})
    rendered: list[str | None] = []
    original = jinja2.Template.render

    def counting(self: jinja2.Template, *args: object, **kwargs: object) -> str:
        rendered.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Template, "render", counting)
    for locale in ("ja", "en", "ja-JP"):
        assert [render.message("digest.arrow.up", locale) for _ in range(3)] == [
            render._message_template(render.normalize_locale(locale), "digest.arrow.up")
            .render(locale=locale)
            .strip()
        ] * 3
    # Three renders per locale above are the expectations'; the messages were rendered once each.
    assert len(rendered) == 3 * 2
    # With parameters, every call renders: they may differ.
    half, most = (render.message("format.attainment", "en", pct=pct) for pct in ("50%", "90%"))
    assert (half, most) == ("50% of target", "90% of target")
