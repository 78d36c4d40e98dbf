"""The wheel carries what kpibot reads at run time, and finds it there rather than in a checkout.

.ci/wheel-check installs the wheel and runs the demo; these tests look inside the wheel, which
is quicker and names the missing file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from bot import resources

REPO = Path(__file__).resolve().parent.parent
# What `pip wheel` needs from the repository; copied so the build never uses a stale build/.
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "bot", "handlers", "templates", "migrations", "examples"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--verbose",
            "--no-deps",
            "--wheel-dir",
            str(dist),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    # A deprecated license form or data setuptools would drop shows up only as a build warning.
    warnings = [
        line
        for line in (built.stdout + built.stderr).splitlines()
        if "SetuptoolsDeprecationWarning" in line or "BuildBackendWarning" in line
    ]
    assert warnings == []
    (path,) = dist.glob("kpibot-*.whl")
    return path


def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def repo_files(folder: str, *patterns: str) -> set[str]:
    root = REPO / folder
    return {
        path.relative_to(root).as_posix()
        for pattern in patterns
        for path in root.rglob(pattern)
        if "__pycache__" not in path.parts
    }


def test_wheel_holds_every_template_of_both_locales(wheel: Path) -> None:
    templates = repo_files("templates", "*.j2", "*.yaml", "*.css")
    assert "preview.css" in templates  # the preview's look, shared by both languages
    for locale in ("ja", "en"):
        assert f"{locale}/messages.yaml" in templates
        assert f"{locale}/preview.html.j2" in templates
    inside = {
        name.removeprefix("bot/templates/") for name in names(wheel) if name.startswith("bot/templates/")
    }
    assert templates <= inside


def test_wheel_holds_alembic_environment_and_every_migration(wheel: Path) -> None:
    migrations = repo_files("migrations", "*.py", "*.mako")
    assert {"env.py", "script.py.mako"} <= migrations
    assert any(name.startswith("versions/") for name in migrations)
    inside = {
        name.removeprefix("bot/migrations/") for name in names(wheel) if name.startswith("bot/migrations/")
    }
    assert migrations <= inside


def test_wheel_holds_the_example_plan_every_module_and_the_license(wheel: Path) -> None:
    inside = names(wheel)
    assert "bot/examples/b2b-plan.yaml" in inside
    # Packages are listed by hand in pyproject.toml: a module added there must not be left out.
    modules = {
        path.relative_to(REPO).as_posix()
        for folder in ("bot", "handlers")
        for path in (REPO / folder).glob("*.py")
    }
    assert modules <= inside
    with zipfile.ZipFile(wheel) as archive:
        dist_info = next(name.split("/")[0] for name in inside if name.endswith(".dist-info/METADATA"))
        assert archive.read(f"{dist_info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata.splitlines()


# Run in a child interpreter whose only copy of kpibot is the unpacked wheel (purelib is laid
# out as in the archive), from an empty directory: the checkout is not on its path.
RESOLVE = """
import json, sys
from alembic.script import ScriptDirectory
from bot import database, render, resources
from handlers.cli import main

status = main(["--locale", "en", "migrate"])
engine = database.make_engine(sys.argv[1])
print(json.dumps({
    "bot": __import__("bot").__file__,
    "templates": str(resources.TEMPLATES_DIR),
    "migrations": str(resources.MIGRATIONS_DIR),
    "plan": str(resources.EXAMPLE_PLAN),
    "plan_exists": resources.EXAMPLE_PLAN.is_file(),
    "head": ScriptDirectory.from_config(database.alembic_config(engine)).get_current_head(),
    "status": status,
    "revision": database.schema_revision(engine),
    "ja": render.message("demo.alerts_heading", "ja"),
}))
"""


def test_resources_resolve_inside_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    empty = tmp_path / "run"
    empty.mkdir()
    url = f"sqlite:///{empty / 'kpibot.db'}"
    env = {**os.environ, "PYTHONPATH": str(site), "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-c", RESOLVE, url], cwd=empty, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert Path(result["bot"]).is_relative_to(site)
    assert Path(result["templates"]) == site / "bot" / "templates"
    assert Path(result["migrations"]) == site / "bot" / "migrations"
    assert Path(result["plan"]) == site / "bot" / "examples" / "b2b-plan.yaml"
    assert result["plan_exists"]
    latest = max(path.name.split("_")[1] for path in (REPO / "migrations" / "versions").glob("*.py"))
    assert result["head"] == latest
    assert result["status"] == 0
    assert result["revision"] == latest
    assert "is at the latest schema" in done.stdout
    catalog = yaml.safe_load((REPO / "templates" / "ja" / "messages.yaml").read_text(encoding="utf-8"))
    assert result["ja"] == catalog["demo.alerts_heading"]


def test_resources_resolve_in_this_install() -> None:
    # Editable or not, the same lookup finds the folders with the files in them.
    assert (resources.TEMPLATES_DIR / "en" / "messages.yaml").is_file()
    assert (resources.TEMPLATES_DIR / "ja" / "messages.yaml").is_file()
    assert (resources.MIGRATIONS_DIR / "env.py").is_file()
    assert (resources.MIGRATIONS_DIR / "versions").is_dir()
    assert resources.EXAMPLE_PLAN.is_file()
