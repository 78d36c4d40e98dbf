"""`kpibot serve` as production runs it: the real command, gunicorn, real HTTP, a fake Slack.

SQLite only: this tests the server process, not storage (the command tests cover PostgreSQL).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
import yaml
from sqlmodel import Session, col, select

from bot.database import make_engine, migrate
from bot.models import Actual, Kpi
from handlers.web import EVENTS_PATH
from tests.fakeslack import FakeSlack, SignedSlackClient
from tests.fakeslack.client import FORM
from tests.plans import EXAMPLE_PLAN, import_plan

SECRET = "serve-test-signing-secret"
STARTUP_SECONDS = 20


def kpibot() -> list[str]:
    """The installed `kpibot` script next to this Python; `python -m handlers.cli` if there is none."""
    script = Path(sys.executable).with_name("kpibot")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "handlers.cli"]


def environment(**values: str) -> dict[str, str]:
    """This process's environment minus anything kpibot reads, plus `values`."""
    ours = ("DATABASE_URL", "PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KPIBOT_")) and k not in ours}
    env.update(values)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_kpibot(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd is a temporary directory, so no developer's .env is read.
    return subprocess.run([*kpibot(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite database with the example plan imported."""
    url = f"sqlite:///{tmp_path / 'kpibot.db'}"
    engine = make_engine(url)
    migrate(engine)
    import_plan(engine, EXAMPLE_PLAN)
    engine.dispose()
    yield url


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def wait_for_health(port: int, process: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"kpibot serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                assert response.status == 200
                return dict(json.loads(response.read()))
        except (URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"/healthz did not answer within {STARTUP_SECONDS} s:\n{log.read_text()}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (gunicorn's graceful shutdown); SIGKILL to the process group we started if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    return process.returncode


def test_serve_answers_slack_over_http(tmp_path: Path, database: str, fake: FakeSlack) -> None:
    port = free_port()
    env = environment(
        DATABASE_URL=database,
        SLACK_BOT_TOKEN="xoxb-serve-test",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=fake.url,
        PORT=str(port),
        WEB_CONCURRENCY="1",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*kpibot(), "serve"],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: gunicorn's workers go with it
        )
    try:
        assert wait_for_health(port, process, log)["ok"] is True

        client = SignedSlackClient(f"http://127.0.0.1:{port}", SECRET, fake=fake)
        response = client.command("report new_approaches 85", user_id="U0SALES1")
        assert response.status == 200, log.read_text()
        answer = fake.wait_for("response_url", timeout=10)[0]
        assert answer.args["response_type"] == "ephemeral"
        assert "新規アプローチ数" in answer.args["text"] and "85" in answer.args["text"]
        assert fake.calls("users.info"), "the app's Web API client must use SLACK_API_URL"

        fields = {"command": "/kpi", "text": "report new_approaches 1", "user_id": "U0SALES1"}
        body = urlencode(fields).encode()
        assert client.raw(body, FORM, signature="v0=" + "0" * 64).status == 401
        assert client.raw(body, FORM, timestamp=int(time.time()) - 600).status == 401  # replayed, stale
    finally:
        returncode = stop(process)

    assert returncode == 0, log.read_text()  # a clean, graceful shutdown
    engine = make_engine(database)
    try:
        with Session(engine) as session:
            values = session.exec(
                select(Actual.value)
                .join(Kpi, col(Kpi.id) == Actual.kpi_id)
                .where(Kpi.key == "new_approaches", col(Actual.superseded_at).is_(None))
            ).all()
    finally:
        engine.dispose()
    assert [Decimal(value) for value in values] == [Decimal(85)]  # the forged requests stored nothing


@pytest.mark.parametrize(
    ("command", "missing"),
    [("serve", "SLACK_SIGNING_SECRET"), ("serve", "SLACK_BOT_TOKEN"), ("socket", "SLACK_APP_TOKEN")],
)
def test_missing_credentials_exit_1_naming_the_variable(
    tmp_path: Path, database: str, command: str, missing: str
) -> None:
    values = {
        "DATABASE_URL": database,
        "SLACK_BOT_TOKEN": "xoxb-serve-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_APP_TOKEN": "xapp-serve-test",
        "PORT": str(free_port()),
    }
    del values[missing]

    result = run_kpibot([command], environment(**values), tmp_path)

    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0], result.stderr
    assert result.stdout == ""


def test_serve_on_an_unmigrated_database_says_to_migrate(tmp_path: Path) -> None:
    env = environment(
        DATABASE_URL="sqlite:///kpibot.db",  # relative, as on a fresh machine: in tmp_path
        SLACK_BOT_TOKEN="xoxb-serve-test",
        SLACK_SIGNING_SECRET=SECRET,
        PORT=str(free_port()),
    )

    result = run_kpibot(["serve"], env, tmp_path)

    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "kpibot migrate" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == [], "refusing to serve must not leave a database file behind"


def test_the_manifest_points_slack_at_the_served_path() -> None:
    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "slack-app-manifest.yaml").read_text())
    url = f"https://YOUR-HOST{EVENTS_PATH}"
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/kpi" and command["url"] == url
    settings = manifest["settings"]
    assert settings["interactivity"] == {"is_enabled": True, "request_url": url}
    assert settings["event_subscriptions"]["request_url"] == url
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "app_home_opened",
        "message.im",
    }
    assert settings["socket_mode_enabled"] is False
    assert "commands" in manifest["oauth_config"]["scopes"]["bot"]
