"""The files kpibot reads at run time — templates, migrations, the example plan — found as package data.

They live in the repository's top-level templates/, migrations/ and examples/; pyproject.toml installs
them as the packages `bot.templates`, `bot.migrations` and `bot.examples`, so a wheel carries them and an
editable install finds them in the checkout, both through the import system. Each folder holds an
`__init__.py` because setuptools' editable finder cannot resolve a remapped namespace package
(pypa/setuptools#4943)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _folder(package: str) -> Path:
    folder = files(package)
    if not isinstance(folder, Path):
        # Jinja2's FileSystemLoader and Alembic read real directories; a zipped install has none.
        raise RuntimeError(f"kpibot must be installed as files on disk: {package} is in {folder}")
    return folder


TEMPLATES_DIR = _folder("bot.templates")
MIGRATIONS_DIR = _folder("bot.migrations")
EXAMPLE_PLAN = _folder("bot.examples") / "b2b-plan.yaml"
# The seed's funnel (and the KPIs it needs) for the example plan, imported after it.
EXAMPLE_FUNNEL = _folder("bot.examples") / "b2b-funnel.yaml"
# `kpibot demo --fetched`: one KPI more, fetched by SQL from the demo's own database.
EXAMPLE_FETCHED = _folder("bot.examples") / "demo-fetched.yaml"
