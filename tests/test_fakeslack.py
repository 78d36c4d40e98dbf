"""The harness itself, proven against real slack_sdk and slack_bolt over real HTTP."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_bolt import Ack, App, Respond, Say
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, select

from bot.clock import set_clock
from bot.database import transaction
from bot.models import Department
from tests.conftest import _empty_tables
from tests.fakeslack import FakeSlack, SignedSlackClient, WsgiServer
from tests.fakeslack.harness import NOW, start_harness, stop_harness
from tests.plans import EXAMPLE_PLAN, import_plan, import_plan_into_empty

SECRET = "secret"


def build_app(client: WebClient) -> App:
    app = App(client=client, signing_secret=SECRET)

    @app.command("/kpi")
    def kpi(ack: Ack, command: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        client.chat_postMessage(channel=command["channel_id"], text=f"KPI {command['text']}")
        respond(f"done: {command['text']}")

    @app.action("approve")
    def approve(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        client.chat_update(channel=body["channel"]["id"], ts=body["message"]["ts"], text="approved")
        respond("approved")

    @app.view("target_modal")
    def submit(ack: Ack, view: dict[str, Any]) -> None:
        amount = view["state"]["values"]["target"]["amount"]["value"]
        if amount.isdigit():
            ack()
        else:
            ack(response_action="errors", errors={"target": "数字で入力してください"})

    @app.shortcut("save_kpi")
    def save(ack: Ack, shortcut: dict[str, Any], client: WebClient) -> None:
        ack()
        client.chat_postMessage(
            channel=shortcut["channel"]["id"], thread_ts=shortcut["message_ts"], text="saved"
        )

    @app.event("app_mention")
    def mention(event: dict[str, Any], say: Say) -> None:
        say(text="hi", thread_ts=event["ts"])

    return app


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def web_client(fake: FakeSlack) -> WebClient:
    return WebClient(
        token="xoxb-test", base_url=fake.url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )


@pytest.fixture
def slack(fake: FakeSlack, web_client: WebClient) -> Iterator[SignedSlackClient]:
    with WsgiServer(SlackRequestHandler(build_app(web_client))) as server:
        yield SignedSlackClient(server.url, SECRET, fake=fake)


# -- end to end through Bolt -----------------------------------------------------------------------


def test_slash_command_is_acked_and_api_calls_reach_the_fake(
    slack: SignedSlackClient, fake: FakeSlack
) -> None:
    response = slack.command("sales 2024-06")

    assert response.status == 200
    posted = fake.wait_for("chat.postMessage")[0]
    assert posted.args["channel"] == "C0SALES"
    assert posted.args["text"] == "KPI sales 2024-06"
    assert posted.token == "xoxb-test"
    responded = fake.wait_for("response_url")[0]
    assert responded.args["text"] == "done: sales 2024-06"
    assert slack.last_response_url is not None
    assert slack.last_response_url.endswith(responded.path)


def test_forged_signature_is_rejected(slack: SignedSlackClient, fake: FakeSlack) -> None:
    response = slack.raw(
        b"command=%2Fkpi&text=x", "application/x-www-form-urlencoded", signature="v0=" + "0" * 64
    )

    assert response.status == 401
    assert fake.calls("chat.postMessage") == []


def test_request_older_than_five_minutes_is_rejected(slack: SignedSlackClient) -> None:
    # Correctly signed, so only the age can be the reason for the rejection.
    response = slack.raw(
        b"command=%2Fkpi&text=x", "application/x-www-form-urlencoded", timestamp=int(time.time()) - 6 * 60
    )

    assert response.status == 401


def test_block_action_view_submission_shortcut_and_event_are_understood_by_bolt(
    slack: SignedSlackClient, fake: FakeSlack
) -> None:
    assert slack.block_action("approve", value="42", message_ts="1700000000.000100").status == 200
    updated = fake.wait_for("chat.update")[0]
    assert updated.args["ts"] == "1700000000.000100"
    assert fake.wait_for("response_url")[0].args["text"] == "approved"

    def amount(value: str) -> dict[str, dict[str, dict[str, Any]]]:
        return {"target": {"amount": {"type": "plain_text_input", "value": value}}}

    ok = slack.view_submission("target_modal", amount("10"))
    assert (ok.status, ok.body) == (200, "")
    bad = slack.view_submission("target_modal", amount("x"))
    assert bad.json() == {"response_action": "errors", "errors": {"target": "数字で入力してください"}}

    message = {"type": "message", "user": "U0OWNER", "ts": "1700000000.000200", "text": "売上"}
    assert slack.message_shortcut("save_kpi", message).status == 200
    assert fake.wait_for("chat.postMessage")[0].args["thread_ts"] == "1700000000.000200"

    ts = "1700000000.000300"
    mention = {
        "type": "app_mention",
        "user": "U0OWNER",
        "text": "<@U0BOT> hi",
        "channel": "C0SALES",
        "ts": ts,
    }
    assert slack.event(mention).status == 200
    said = fake.wait_for("chat.postMessage", count=2)[1]
    assert (said.args["channel"], said.args["thread_ts"]) == ("C0SALES", ts)


def test_client_signs_and_shapes_requests_like_slack() -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        received.append((headers, body))
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"busy"]

    with WsgiServer(echo) as server:
        client = SignedSlackClient(server.url, SECRET)
        response = client.command("売上", retry_num=2)

    assert (response.status, response.body) == (503, "busy")  # non-2xx is returned, not raised
    headers, body = received[0]
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    assert (headers["x-slack-retry-num"], headers["x-slack-retry-reason"]) == ("2", "http_timeout")
    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    assert fields["text"] == "売上"
    assert fields["trigger_id"] and fields["response_url"].startswith("https://")


# -- slack_sdk against the fake --------------------------------------------------------------------


def test_rate_limited_call_is_retried_by_slack_sdk(web_client: WebClient, fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", "ratelimited", retry_after=0)  # a retry without the wait

    response = web_client.chat_postMessage(channel="C0SALES", text="hello")

    assert response["ok"]
    assert [c.failed for c in fake.calls("chat.postMessage")] == [True, False]


def test_slack_errors_surface_as_slack_api_error(web_client: WebClient, fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", "channel_not_found")
    with pytest.raises(SlackApiError) as raised:
        web_client.chat_postMessage(channel="C0GONE", text="hello")
    assert raised.value.response["error"] == "channel_not_found"
    assert fake.last("chat.postMessage").failed

    fake.fail("chat.update", "http_500", times=None)
    for _ in range(2):
        with pytest.raises(SlackApiError) as raised:
            web_client.chat_update(channel="C0SALES", ts="1.2", text="x")
        assert raised.value.response.status_code == 500
    fake.clear_failures()
    assert web_client.chat_update(channel="C0SALES", ts="1.2", text="x")["ok"]


def test_file_upload_v2_records_the_bytes(web_client: WebClient, fake: FakeSlack) -> None:
    response = web_client.files_upload_v2(
        content=b"month,sales\n6,100\n", channel="C0SALES", filename="kpi.csv"
    )

    (file_id,) = fake.uploads
    assert fake.uploads[file_id] == b"month,sales\n6,100\n"
    assert response["file"]["id"] == file_id
    completed = fake.last("files.completeUploadExternal")
    assert completed.args["channel_id"] == "C0SALES"
    assert completed.args["files"][0]["id"] == file_id  # JSON string in the form body, decoded


def test_web_api_answers(web_client: WebClient, fake: FakeSlack) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*売上*"}}]
    first = web_client.chat_postMessage(channel="C0SALES", text="a", blocks=blocks)
    second = web_client.chat_postMessage(channel="C0SALES", text="b")
    assert float(first["ts"]) < float(second["ts"])
    assert fake.calls("chat.postMessage")[0].args["blocks"] == blocks
    assert first["message"]["blocks"] == blocks

    view = {"type": "modal", "callback_id": "target_modal", "title": {"type": "plain_text", "text": "目標"}}
    opened = web_client.views_open(trigger_id="t", view=view)["view"]
    assert opened["id"].startswith("V") and opened["callback_id"] == "target_modal"
    assert fake.last("views.open").args["view"] == view  # JSON body

    assert web_client.users_info(user="U0X")["user"]["locale"] == "ja-JP"
    fake.set_user("U0X", locale="en-US", is_admin=True, real_name="Pat")
    user = web_client.users_info(user="U0X")["user"]
    assert user["locale"] == "en-US" and user["is_admin"] and user["real_name"] == "Pat"
    assert user["tz"] == "Asia/Tokyo"  # untouched settings keep their defaults

    link = web_client.chat_getPermalink(channel="C0SALES", message_ts="1700000000.000100")["permalink"]
    assert link == "https://fake.slack.com/archives/C0SALES/p1700000000000100"
    assert web_client.conversations_info(channel="C0SALES")["channel"]["is_member"]
    with pytest.raises(SlackApiError, match="unknown_method"):
        web_client.api_call("kpi.nothing")


def test_inspection_helpers_explain_failures(fake: FakeSlack, web_client: WebClient) -> None:
    web_client.auth_test()
    with pytest.raises(AssertionError, match=r"no chat.postMessage call; received: auth.test"):
        fake.last("chat.postMessage")
    with pytest.raises(AssertionError, match="expected 1 chat.postMessage"):
        fake.wait_for("chat.postMessage", timeout=0.05)
    fake.reset()
    assert fake.calls() == []


def test_concurrent_calls_are_served_in_parallel() -> None:
    with FakeSlack(latency=0.3) as slow:
        client = WebClient(token="xoxb-test", base_url=slow.url)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(lambda i: client.chat_postMessage(channel="C0SALES", text=str(i)), range(5)))
        assert time.monotonic() - started < 1.0
        assert sorted(c.args["text"] for c in slow.calls()) == ["0", "1", "2", "3", "4"]


# -- the harness's starting point ------------------------------------------------------------------


def _everything(engine: Engine) -> dict[str, Any]:
    """Every row of every table, and (PostgreSQL) every sequence's position.

    Rows are sorted: without ORDER BY, PostgreSQL may return them in any order after an update."""
    with engine.connect() as connection:
        state: dict[str, Any] = {
            table.name: sorted(
                (tuple(row) for row in connection.exec_driver_sql(f"SELECT * FROM {table.name}")), key=repr
            )
            for table in SQLModel.metadata.sorted_tables
        }
        if engine.dialect.name == "postgresql":
            names = connection.exec_driver_sql(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"
            ).scalars()
            for name in list(names):
                state[name] = tuple(
                    connection.exec_driver_sql(f"SELECT last_value, is_called FROM {name}").one()
                )
    return state


def test_the_example_plan_restored_from_its_snapshot_is_exactly_a_fresh_import(engine: Engine) -> None:
    # Harnesses after the first write the first import's rows back instead of parsing the YAML;
    # a test must not be able to tell.
    set_clock(lambda: NOW.astimezone(dt.UTC))
    import_plan(engine, EXAMPLE_PLAN)
    fresh = _everything(engine)
    assert fresh["kpi"] and fresh["target"]
    for _ in range(2):  # the first call may take the snapshot, the second restores it
        _empty_tables(engine)
        import_plan_into_empty(engine, EXAMPLE_PLAN)
        assert _everything(engine) == fresh


def test_a_snapshot_is_not_used_on_a_database_that_is_not_empty(engine: Engine) -> None:
    set_clock(lambda: NOW.astimezone(dt.UTC))
    import_plan_into_empty(engine, EXAMPLE_PLAN)
    _empty_tables(engine)
    with transaction(engine) as session:
        session.add(Department(key="ops", name_ja="運用", name_en="Operations", channel_id="C0OPS"))
    import_plan_into_empty(engine, EXAMPLE_PLAN)  # a plain import: updates what is there, adds the rest
    with transaction(engine) as session:
        keys = set(session.exec(select(Department.key)).all())
    assert "ops" in keys and len(keys) > 1


def test_settle_waits_for_work_after_ack(engine: Engine) -> None:
    harness = start_harness(engine)
    try:
        before = len(harness.fake.calls("response_url"))
        assert harness.send("report new_approaches 85", user_id="U0SALES1").status == 200
        harness.settle()
        assert len(harness.fake.calls("response_url")) == before + 1  # answered, without polling
        assert harness.live_values("new_approaches") == {"2026-11": Decimal(85)}
    finally:
        stop_harness(harness)
