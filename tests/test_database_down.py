"""The database stopped under every kind of listener: each request gets HTTP 200 and the user is
told, ephemerally and in their language (or the form shows the error); once the database is back,
the same request works.

The database is a PostgreSQL instance of this module's own (initdb + pg_ctl in a temporary
directory, on a free port), started and stopped by the tests: never the machine's shared server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlmodel import SQLModel, col, select

from bot import render
from bot.database import make_engine, migrate
from bot.models import Alert, AlertStatus, Countermeasure, CountermeasureStatus, Kpi
from tests.fakeslack.client import Response
from tests.fakeslack.harness import SlackHarness, start_harness, stop_harness
from tests.fakeslack.server import BOT_USER_ID, Call

SALES1 = "U0SALES1"  # owns new_approaches (count, monthly, target 100)
CHANNEL = "C0SALES"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")

JsonDict = dict[str, Any]


# -- a PostgreSQL of this module's own ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnPostgres:
    """A throwaway PostgreSQL cluster: initdb into a temporary directory, pg_ctl start/stop.

    PostgreSQL refuses to run as root; as root, its programs run as the `postgres` user."""

    def __init__(self) -> None:
        binaries = POSTGRES_BIN if (POSTGRES_BIN / "pg_ctl").exists() else None
        found = shutil.which("pg_ctl")
        if binaries is None and found:
            binaries = Path(found).parent
        if binaries is None:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="kpibot-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.running = self.started = False

    @property
    def url(self) -> URL:
        return sa.make_url(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres")

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin / program), *args], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            log = self.root / "log"
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(
                f"{program} {' '.join(args)} failed: {done.stderr}{done.stdout}\n{server_log}"
            )

    def start(self) -> None:
        # The port was free when it was drawn; another test's server may take it before this one
        # binds (seen once under xdist). Before anything knows the port, draw another and retry.
        for attempt in range(3 if not self.started else 1):
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
                )
                break
            except AssertionError as error:
                if self.started or attempt == 2:
                    raise
                print(f"own PostgreSQL on port {self.port} did not start, trying another port: {error}")
                self.port = _free_port()
        self.running = self.started = True

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        server.start()
        engine = make_engine(server.url)
        migrate(engine)
        engine.dispose()
        yield server
    finally:
        server.remove()


def _empty_tables(engine: Engine) -> None:
    tables = ", ".join(table.name for table in reversed(SQLModel.metadata.sorted_tables))
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def down_engine(own_postgres: OwnPostgres) -> Iterator[Engine]:
    engine = make_engine(own_postgres.url)
    try:
        yield engine
    finally:
        if not own_postgres.running:
            own_postgres.start()
        _empty_tables(engine)
        engine.dispose()


@pytest.fixture
def slack_down(down_engine: Engine) -> Iterator[SlackHarness]:
    """kpibot on this module's PostgreSQL, against the fake Slack, with the example plan."""
    harness = start_harness(down_engine)
    try:
        yield harness
    finally:
        stop_harness(harness)


# -- what the user has on screen before the database stops -------------------------------------------


@dataclass
class Scene:
    """An alert in #sales with its thread, a countermeasure logged in it (with its Done button),
    and the two forms as Slack showed them, all made while the database was up."""

    slack: SlackHarness
    alert: Alert
    countermeasure: Countermeasure
    confirmation_ts: str
    report_view: JsonDict
    countermeasure_view: JsonDict
    # Where the calls stood before the request under test: what came after is its answer.
    told_before: int = 0
    views_before: int = 0

    def mark(self) -> None:
        self.told_before = len(told(self.slack))
        self.views_before = len(self.slack.fake.calls("views.open"))


def _opened_view(slack: SlackHarness, send: Callable[[], Response]) -> JsonDict:
    before = len(slack.fake.calls("views.open"))
    assert send().status == 200
    view: JsonDict = slack.fake.wait_for("views.open", count=before + 1)[before].args["view"]
    return view


def make_scene(slack: SlackHarness) -> Scene:
    # 40 of 100 for last month: a red alert, posted in #sales by the report's alert check.
    slack.command("report new_approaches 40 2026-10", user_id=SALES1)
    slack.settle()
    with slack.session() as session:
        alert = session.exec(
            select(Alert).join(Kpi, col(Kpi.id) == Alert.kpi_id).where(Kpi.key == "new_approaches")
        ).one()
    assert alert.thread_ts is not None and alert.channel_id == CHANNEL
    slack.command("cm new_approaches 架電を増やす 12/15", user_id=SALES1)
    slack.settle()
    with slack.session() as session:
        (countermeasure,) = session.exec(select(Countermeasure)).all()
    # The confirmation in the thread, with its Done / Dropped buttons.
    (confirmation_ts,) = [
        message["ts"]
        for message in slack.fake.messages(CHANNEL)
        if message.get("thread_ts") == alert.thread_ts and "countermeasure_done" in json.dumps(message)
    ]
    report_view = _opened_view(slack, lambda: slack.send("report", user_id=SALES1, channel_id=CHANNEL))
    countermeasure_view = _opened_view(
        slack,
        lambda: slack.client.block_action(
            "alert_log_countermeasure",
            value=str(alert.id),
            user_id=SALES1,
            channel_id=CHANNEL,
            message_ts=alert.thread_ts,
        ),
    )
    slack.settle()
    return Scene(slack, alert, countermeasure, confirmation_ts, report_view, countermeasure_view)


# -- each kind of request ------------------------------------------------------------------------------


def _report_form(scene: Scene, value: str) -> Response:
    values = {
        "kpi:new_approaches": {"value": {"type": "plain_text_input", "value": value}},
        "note": {"note": {"type": "plain_text_input", "value": None}},
    }
    return scene.slack.client.view_submission(
        "report_modal", values, user_id=SALES1, private_metadata=scene.report_view["private_metadata"]
    )


def _countermeasure_form(scene: Scene, text: str) -> Response:
    values = {
        "text": {"value": {"type": "plain_text_input", "value": text}},
        "owner": {"value": {"type": "users_select", "selected_user": SALES1}},
        "due": {"value": {"type": "datepicker", "selected_date": "2026-12-15"}},
        "effect": {"value": {"type": "plain_text_input", "value": None}},
    }
    return scene.slack.client.view_submission(
        "countermeasure_modal",
        values,
        user_id=SALES1,
        private_metadata=scene.countermeasure_view["private_metadata"],
    )


def _button(
    scene: Scene, action: str, value: str, *, message_ts: str, thread_ts: str | None = None
) -> Response:
    return scene.slack.client.block_action(
        action, value=value, user_id=SALES1, channel_id=CHANNEL, message_ts=message_ts, thread_ts=thread_ts
    )


def _event(scene: Scene, kind: str, text: str) -> Response:
    ts = f"{time.time():.6f}"
    event = {
        "type": kind,
        "user": SALES1,
        "text": text,
        "ts": ts,
        "channel": CHANNEL,
        "event_ts": ts,
        "thread_ts": scene.alert.thread_ts,
        "channel_type": "channel",
    }
    return scene.slack.client.event(event)


@dataclass(frozen=True)
class Kind:
    """One kind of request: how to send it (the n-th time), the words it answers with when the
    database is down, and what shows that it worked once the database is back."""

    send: Callable[[Scene, int], Response]
    database_key: str
    worked: Callable[[Scene, Response, int], bool]


def _stored(scene: Scene, value: int, period: str = "2026-11") -> bool:
    return _wait(lambda: scene.slack.live_values("new_approaches").get(period) == value)


def _logged(scene: Scene, text: str) -> bool:
    def found() -> bool:
        with scene.slack.session() as session:
            return any(row.text == text for row in session.exec(select(Countermeasure)).all())

    return _wait(found)


def _answered_normally(scene: Scene, _response: Response, _n: int) -> bool:
    """An answer came, and it is not the database's error."""
    errors = {render.message(key, locale) for key in DATABASE_KEYS for locale in ("ja", "en")}
    return _wait(lambda: len(told(scene.slack)) > scene.told_before) and all(
        call.args.get("text") not in errors for call in told(scene.slack, scene.told_before)
    )


def _opened(scene: Scene, _response: Response, _n: int) -> bool:
    return _wait(lambda: len(scene.slack.fake.calls("views.open")) > scene.views_before)


def _closed(response: Response) -> bool:
    return response.status == 200 and form_errors(response) is None


def _status_becomes(
    scene: Scene, table: type[Alert] | type[Countermeasure], row_id: int | None, status: Any
) -> bool:
    def found() -> bool:
        with scene.slack.session() as session:
            row = session.get(table, row_id)
            return row is not None and row.status is status

    return _wait(found)


def _reply_in_thread(scene: Scene, n: int) -> JsonDict:
    ts = f"{time.time():.6f}"
    return {
        "type": "message",
        "user": SALES1,
        "ts": ts,
        "text": f"提案書の改善{n}",
        "thread_ts": scene.alert.thread_ts,
    }


DATABASE_KEYS = ("error.database", "countermeasure.error.database")
GENERAL, COUNTERMEASURE = DATABASE_KEYS

KINDS: dict[str, Kind] = {
    "command report": Kind(
        lambda s, n: s.slack.send(f"report new_approaches {50 + n}", user_id=SALES1),
        GENERAL,
        lambda s, r, n: _stored(s, 50 + n),
    ),
    "command report (form)": Kind(lambda s, n: s.slack.send("report", user_id=SALES1), GENERAL, _opened),
    "command status": Kind(lambda s, n: s.slack.send("status", user_id=SALES1), GENERAL, _answered_normally),
    "command cm": Kind(
        lambda s, n: s.slack.send(f"cm new_approaches 台本を見直す{n} 12/15", user_id=SALES1),
        GENERAL,
        lambda s, r, n: _logged(s, f"台本を見直す{n}"),
    ),
    "report form": Kind(  # `/kpi report` opened it on the oldest month unreported (October has the 40)
        lambda s, n: _report_form(s, str(70 + n)),
        GENERAL,
        lambda s, r, n: _closed(r) and _stored(s, 70 + n, "2026-09"),
    ),
    "countermeasure form": Kind(
        lambda s, n: _countermeasure_form(s, f"紹介を依頼する{n}"),
        COUNTERMEASURE,
        lambda s, r, n: _closed(r) and _logged(s, f"紹介を依頼する{n}"),
    ),
    "Acknowledge button": Kind(
        lambda s, n: _button(s, "alert_acknowledge", str(s.alert.id), message_ts=s.alert.thread_ts or ""),
        GENERAL,
        lambda s, r, n: _status_becomes(s, Alert, s.alert.id, AlertStatus.ACKNOWLEDGED),
    ),
    "Log countermeasure button": Kind(
        lambda s, n: _button(
            s, "alert_log_countermeasure", str(s.alert.id), message_ts=s.alert.thread_ts or ""
        ),
        COUNTERMEASURE,
        _opened,
    ),
    "countermeasure Done button": Kind(
        lambda s, n: _button(
            s,
            "countermeasure_done",
            str(s.countermeasure.id),
            message_ts=s.confirmation_ts,
            thread_ts=s.alert.thread_ts,
        ),
        GENERAL,
        lambda s, r, n: _status_becomes(s, Countermeasure, s.countermeasure.id, CountermeasureStatus.DONE),
    ),
    "Log countermeasure shortcut": Kind(
        lambda s, n: s.slack.client.message_shortcut(
            "log_countermeasure", _reply_in_thread(s, n), channel_id=CHANNEL, user_id=SALES1
        ),
        COUNTERMEASURE,
        _opened,
    ),
    "mention in an alert thread": Kind(
        lambda s, n: _event(s, "app_mention", f"<@{BOT_USER_ID}> 対策: 商談の事前準備{n}"),
        COUNTERMEASURE,
        lambda s, r, n: _logged(s, f"商談の事前準備{n}"),
    ),
}


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def told(slack: SlackHarness, since: int = 0) -> list[Call]:
    """What only the user saw: answers through response_url and chat.postEphemeral, in order."""
    calls = [c for c in slack.fake.calls() if c.method in ("response_url", "chat.postEphemeral")]
    return calls[since:]


def form_errors(response: Response) -> dict[str, str] | None:
    body = response.json()
    if isinstance(body, dict) and body.get("response_action") == "errors":
        return dict(body["errors"])
    return None


# -- the tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["ja", "en"])
@pytest.mark.parametrize("name", list(KINDS))
def test_every_listener_answers_while_the_database_is_down_and_works_once_it_is_back(
    name: str, locale: str, slack_down: SlackHarness, own_postgres: OwnPostgres
) -> None:
    slack, kind = slack_down, KINDS[name]
    if locale == "en":
        slack.fake.set_user(SALES1, locale="en-US")
    scene = make_scene(slack)

    own_postgres.stop()
    scene.mark()
    response = kind.send(scene, 1)
    assert response.status == 200, response
    expected = render.message(kind.database_key, locale)
    errors = form_errors(response)
    if errors is not None:
        # A form stays open with the error in it, everything typed still there.
        assert list(errors.values()) == [expected]
    else:
        _wait(lambda: len(told(slack)) > scene.told_before)
    slack.settle()
    answers = told(slack, scene.told_before)
    if errors is not None:
        assert answers == []
    else:
        (answer,) = answers
        assert answer.args["text"] == expected
        if answer.method == "response_url":
            assert answer.args["response_type"] == "ephemeral"
        else:
            assert answer.args["user"] == SALES1 and answer.args["channel"] == CHANNEL

    own_postgres.start()
    scene.mark()
    response = kind.send(scene, 2)
    assert response.status == 200, response
    assert kind.worked(scene, response, 2), slack.fake.calls()


def test_an_event_kpibot_does_not_act_on_is_acknowledged_database_down_or_not(
    slack_down: SlackHarness, own_postgres: OwnPostgres
) -> None:
    # A plain reply in an alert's thread: nothing for kpibot to do or to say, but a 200, so that
    # Slack does not deliver it again and count it as failed. (App Home, which the manifest
    # subscribes to, gets a 200 too; what it shows is App Home's business.)
    scene = make_scene(slack_down)
    statuses = []
    for up in (False, True):
        if up:
            own_postgres.start()
        else:
            own_postgres.stop()
        scene.mark()
        statuses.append(_event(scene, "message", "ただの返信").status)
        slack_down.settle()
        assert told(slack_down, scene.told_before) == []
        statuses.append(_event(scene, "app_home_opened", "").status)
    assert statuses == [200] * 4
