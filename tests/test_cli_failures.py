"""Every way the `kpibot` command fails ends in one line on stderr and an exit code, never a
traceback: what the user reads, the code, and what is left behind.

In-process through `handlers.cli.main` where the failure is in kpibot's own code; a real
subprocess where the process is the point: gunicorn's fork, a closed pipe, ctrl-C.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.clock import set_clock
from bot.database import make_engine, migrate
from tests.fakeslack import FakeSlack
from tests.fakeslack.harness import SlackHarness
from tests.plans import EXAMPLE_PLAN, import_plan
from tests.test_cli import SETTINGS, run
from tests.test_serve import environment, free_port, kpibot, run_kpibot

TOKYO = dt.timezone(dt.timedelta(hours=9))
SLACK_SETTINGS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")
REFUSED = {
    "en": "kpibot: Slack refused {variable} (invalid_auth); check the token in the environment or .env "
    "(see .env.example).",
    "ja": "kpibot: Slack が {variable} を拒否しました(invalid_auth)。環境変数または .env のトークンを確認して"
    "ください(.env.example を参照)。",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty working directory (no stray .env, and where a stray file would show), no
    settings from the developer's environment, and temporary directories under tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in (*SETTINGS, *SLACK_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return work


@pytest.fixture
def plan(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The example plan in the test database, DATABASE_URL pointing at it."""
    import_plan(engine, EXAMPLE_PLAN)
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    return engine


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def sqlite_plan(tmp_path: Path) -> str:
    """A SQLite file with the example plan, for commands run as a subprocess."""
    url = f"sqlite:///{tmp_path / 'kpibot.db'}"
    engine = make_engine(url)
    migrate(engine)
    import_plan(engine, EXAMPLE_PLAN)
    engine.dispose()
    return url


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- an unknown department ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["digest"], ["digest", "--dry-run"], ["alerts"], ["alerts", "--dry-run"]]
)
@pytest.mark.parametrize(
    ("locale", "said"),
    [("en", "No department with key 'nosuch'."), ("ja", "キー「nosuch」の部署はありません。")],
)
def test_an_unknown_department_is_one_line(
    plan: Engine, capsys: pytest.CaptureFixture[str], command: list[str], locale: str, said: str
) -> None:
    code, out, err = run(capsys, "--locale", locale, *command, "--department", "nosuch")
    assert (code, out, err) == (1, "", f"kpibot: {said}\n")


# -- Slack refuses the token -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "method", "variable", "locale"),
    [
        ("serve", "auth.test", "SLACK_BOT_TOKEN", "en"),
        ("serve", "auth.test", "SLACK_BOT_TOKEN", "ja"),
        ("socket", "auth.test", "SLACK_BOT_TOKEN", "ja"),
        ("socket", "apps.connections.open", "SLACK_APP_TOKEN", "en"),
    ],
)
def test_a_refused_token_stops_serving_with_one_line(
    tmp_path: Path, sqlite_plan: str, fake: FakeSlack, command: str, method: str, variable: str, locale: str
) -> None:
    fake.fail(method, "invalid_auth", times=None)
    env = environment(
        DATABASE_URL=sqlite_plan,
        SLACK_BOT_TOKEN="xoxb-revoked",
        SLACK_SIGNING_SECRET="secret",
        SLACK_APP_TOKEN="xapp-revoked",
        SLACK_API_URL=fake.url,
        PORT=str(free_port()),
        WEB_CONCURRENCY="1",
        KPIBOT_LOCALE=locale,
    )

    result = run_kpibot([command], env, tmp_path)

    # Refused in the parent: gunicorn never started ("Listening at"), no worker booted and failed.
    assert (result.returncode, result.stdout) == (1, ""), result
    assert one_line(result.stderr) == REFUSED[locale].format(variable=variable)
    assert [call.method for call in fake.calls()] == (
        ["auth.test"] if method == "auth.test" else ["auth.test", "apps.connections.open"]
    )


def test_serve_with_slack_unreachable_is_one_line(tmp_path: Path, sqlite_plan: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api/"
    env = environment(
        DATABASE_URL=sqlite_plan,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET="secret",
        SLACK_API_URL=nowhere,
        PORT=str(free_port()),
        KPIBOT_LOCALE="en",
    )

    result = run_kpibot(["serve"], env, tmp_path)

    assert (result.returncode, result.stdout) == (1, ""), result
    line = one_line(result.stderr)
    assert line.startswith(f"kpibot: Cannot reach Slack at {nowhere} (") and "refused" in line, line


def test_the_scheduler_refuses_a_refused_token(
    plan: Engine, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail("auth.test", "invalid_auth", times=None)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked")
    monkeypatch.setenv("SLACK_API_URL", fake.url)

    code, out, err = run(capsys, "--locale", "en", "scheduler")

    assert (code, out, err) == (1, "", REFUSED["en"].format(variable="SLACK_BOT_TOKEN") + "\n")
    assert [call.method for call in fake.calls()] == ["auth.test"]


# -- a reader that goes away -----------------------------------------------------------------------


@pytest.mark.parametrize("command", [["export"], ["export", "targets"], ["digest", "--dry-run"]])
def test_a_closed_stdout_ends_quietly(tmp_path: Path, sqlite_plan: str, command: list[str]) -> None:
    # As in `kpibot export | head` once head has gone: a pipe nobody reads any more.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [*kpibot(), *command],
            env=environment(DATABASE_URL=sqlite_plan, TMPDIR=str(tmp_path)),
            cwd=tmp_path,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(writer)

    assert result.returncode == 141  # 128 + SIGPIPE, as the shell reports a tool killed by it
    assert result.stderr == ""


def test_head_of_the_export_gets_the_header(tmp_path: Path, sqlite_plan: str) -> None:
    shell = f'{shlex.join(kpibot())} export targets | head -n 1; echo "exit ${{PIPESTATUS[0]}}" >&2'
    result = subprocess.run(
        ["bash", "-c", shell],
        env=environment(DATABASE_URL=sqlite_plan),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == "kpi,period,target\n"
    # Whether kpibot wrote everything before head left depends on the pipe's buffer: 0 or 141.
    assert result.stderr in ("exit 0\n", "exit 141\n"), result.stderr


# -- where --dry-run puts the charts ---------------------------------------------------------------


def test_dry_run_charts_go_to_a_new_temporary_directory(
    plan: Engine, capsys: pytest.CaptureFixture[str], _clean_environment: Path, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "--locale", "en", "digest", "--dry-run")

    assert code == 0
    assert list(_clean_environment.iterdir()) == [], "nothing written into the working directory"
    (folder,) = (tmp_path / "tmp").iterdir()
    assert folder.name.startswith("kpibot-digest-")
    charts = sorted(path.name for path in folder.iterdir())
    # The division's summary has no chart of its own.
    departments = ["customer_success", "inside_sales", "marketing", "sales"]
    assert charts == [f"kpibot-digest-{key}.png" for key in departments]
    assert one_line(err) == f"{len(charts)} chart(s) written to {folder}"
    assert out.count('"department":') == 5


def test_dry_run_charts_go_where_output_dir_says(
    plan: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "charts" / "this week"  # not there yet

    code, _, err = run(
        capsys, "--locale", "ja", "digest", "--dry-run", "--department", "sales", "--output-dir", str(folder)
    )

    assert code == 0
    assert one_line(err) == f"グラフ 1 枚を {folder} に書き出しました"
    assert (folder / "kpibot-digest-sales.png").read_bytes().startswith(b"\x89PNG")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_output_dir_that_is_a_file(plan: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    taken = tmp_path / "charts"
    taken.write_text("not a directory")

    code, _, err = run(capsys, "--locale", "en", "digest", "--dry-run", "--output-dir", str(taken))

    assert (code, err) == (1, f"kpibot: {taken}: cannot write there (Not a directory)\n")


# -- alerts whose posts fail -----------------------------------------------------------------------


def test_alerts_exit_1_when_every_post_failed(
    slack: SlackHarness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # January 5th: December's monthly KPIs and week 53 are unreported in every department.
    now = dt.datetime(2027, 1, 5, 9, tzinfo=TOKYO)
    set_clock(lambda: now)
    monkeypatch.setenv("DATABASE_URL", slack.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", slack.fake.url)
    slack.fake.fail("chat.postMessage", "not_in_channel", times=None)

    code, out, _ = run(capsys, "--locale", "en", "alerts")

    attempts = slack.fake.calls("chat.postMessage")
    assert attempts and all(call.failed for call in attempts)
    assert code == 1
    assert (
        out.splitlines()[-1]
        == f"Slack: 0 new message(s), 0 update(s), 0 thread note(s), {len(attempts)} failed (see the log)."
    )
    assert {call.args["channel"] for call in attempts} == {"C0MARKETING", "C0INSIDESALES", "C0SALES", "C0CS"}

    code, out, _ = run(capsys, "--locale", "en", "alerts")  # the next scan tries again, and fails again
    assert code == 1 and out.splitlines()[0] == "No alert changed."


# -- bad arguments and files -----------------------------------------------------------------------


@pytest.mark.parametrize("period", ["nope", "2026-13", "2026-W60", "2026-11-31"])
@pytest.mark.parametrize(
    ("locale", "said"),
    [
        ("en", "--period {}: use a date (2026-11-30), a week (2026-W48) or a month (2026-11)"),
        ("ja", "--period {}: 日付(2026-11-30)、週(2026-W48)、月(2026-11)のいずれかで指定してください"),
    ],
)
def test_a_bad_period_is_one_line(
    plan: Engine, capsys: pytest.CaptureFixture[str], period: str, locale: str, said: str
) -> None:
    code, out, err = run(capsys, "--locale", locale, "digest", "--dry-run", "--period", period)
    assert (code, out, err) == (1, "", f"kpibot: {said.format(period)}\n")


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("missing.yaml", None, "{}: no such file"),
        ("plan.yaml", "directory", "{}: cannot read it (Is a directory)"),
        (
            "plan.yaml",
            b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary",
            "{}: not a text file; a plan is UTF-8 YAML or CSV",
        ),
        ("kpis.csv", "営業部,売上\n".encode("shift_jis"), "{}: not a text file; a plan is UTF-8 YAML or CSV"),
    ],
    ids=["missing", "a directory", "binary", "Shift_JIS CSV"],
)
def test_a_plan_file_kpibot_cannot_read_is_one_line(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    content: bytes | str | None,
    said: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    path = tmp_path / name
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)

    code, out, err = run(capsys, "--locale", "en", "import-plan", str(path))

    assert (code, out, err) == (1, "", f"kpibot: {said.format(path)}\n")
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM department")).scalar_one() == 0


@pytest.mark.parametrize(
    ("where", "reason"), [("missing/actuals.csv", "No such file or directory"), (".", "Is a directory")]
)
def test_export_where_it_cannot_write_is_one_line(
    plan: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str, reason: str
) -> None:
    target = tmp_path / where
    code, out, err = run(capsys, "--locale", "en", "export", "-o", str(target))
    assert (code, out, err) == (1, "", f"kpibot: {target}: cannot write there ({reason})\n")


# -- an unmigrated database ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["digest", "--dry-run"], ["digest"], ["alerts"], ["alerts", "--dry-run"], ["scheduler"], ["export"]],
)
def test_an_unmigrated_database_says_to_migrate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")

    code, out, err = run(capsys, "--locale", "en", *command)

    assert (code, out) == (1, "")
    assert "run `kpibot migrate` first" in one_line(err)


# -- ctrl-C ----------------------------------------------------------------------------------------


def test_ctrl_c_while_posting_is_one_line(tmp_path: Path, sqlite_plan: str) -> None:
    with FakeSlack(latency=5) as slow:
        env = environment(
            DATABASE_URL=sqlite_plan, SLACK_BOT_TOKEN="xoxb-test", SLACK_API_URL=slow.url, KPIBOT_LOCALE="en"
        )
        # A shell that runs pytest in the background ignores SIGINT, and its children inherit
        # that: kpibot would never see the ctrl-C. Handled here, it is at its default in the child.
        ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen(
                [*kpibot(), "digest", "--department", "sales"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            signal.signal(signal.SIGINT, ignored)
        try:
            # The digest is claimed in the ledger just before it is sent: kpibot is now waiting on Slack.
            engine = make_engine(sqlite_plan)
            deadline = time.monotonic() + 30
            while not _claimed(engine):
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()
                time.sleep(0.05)
            engine.dispose()
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert (process.returncode, out) == (130, "")  # 128 + SIGINT
    assert one_line(err) == "kpibot: Interrupted."


def _claimed(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(sa.text("SELECT count(*) FROM post")).scalar_one())
