"""POST /api/v1/actuals over real HTTP against the running app, on SQLite and PostgreSQL:
each way a sender can get it wrong, with the answer and what the database holds."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlmodel import col, select

from bot.models import Actual, Alert, DataSource, Kpi, ProcessedRequest, Severity, Source
from bot.sources import service as sources
from bot.sources.tokens import key_of_secret, sign
from tests.fakeslack.harness import NOW, SlackHarness

PATH = "/api/v1/actuals"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def code(self) -> str:
        return self.body["error"]["code"]

    def problems(self) -> list[tuple[int, str, str]]:
        return [(p["row"], p["field"], p["code"]) for p in self.body["error"]["problems"]]


@dataclass
class Pusher:
    slack: SlackHarness
    token: str
    secret: str

    def post(
        self,
        body: bytes | dict[str, Any] | list[Any],
        *,
        content_type: str = "application/json",
        token: str | None = None,
        headers: dict[str, str] | None = None,
        method: str = "POST",
        path: str = PATH,
    ) -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = urlsplit(self.slack.server.url)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        sent = {
            "Content-Type": content_type,
            "Authorization": f"Bearer {token or self.token}",
            **(headers or {}),
        }
        connection.request(method, path, body=raw, headers=sent)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return Reply(response.status, dict(response.getheaders()), json.loads(data))

    def signed(self, body: bytes, *, webhook_id: str = "msg_1", at: int | None = None) -> dict[str, str]:
        timestamp = int(NOW.timestamp()) if at is None else at
        signature = sign(key_of_secret(self.secret), webhook_id, timestamp, body)
        return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


@pytest.fixture
def push(slack: SlackHarness) -> Iterator[Pusher]:
    with slack.session() as session:
        issued = sources.create(
            session, "crm", departments=["marketing", "inside_sales"], rate_per_minute=6000, burst=200
        )
        session.commit()
    yield Pusher(slack, issued.token, issued.signing_secret)


def stored(slack: SlackHarness) -> list[Actual]:
    with slack.session() as session:
        return list(
            session.exec(select(Actual).where(Actual.source == Source.API).order_by(col(Actual.id))).all()
        )


def test_a_batch_is_stored_with_its_provenance_and_a_correction_keeps_history(push: Pusher) -> None:
    reply = push.post(
        {
            "actuals": [
                {
                    "kpi": "mqls",
                    "period": "2026-11",
                    "value": 1200,
                    "note": "from CRM",
                    "external_id": "row-1",
                },
                {"kpi": "sqls", "period": "2026-10", "value": "1.2千"},
            ]
        }
    )
    assert reply.status == 200, reply
    assert (reply.body["created"], reply.body["corrected"], reply.body["unchanged"]) == (2, 0, 0)
    again = push.post({"kpi": "mqls", "period": "2026-11", "value": "1,250"})
    assert again.status == 200 and again.body["corrected"] == 1
    rows = stored(push.slack)
    mqls = [row for row in rows if row.period == "2026-11"]
    assert [Decimal(row.value) for row in mqls] == [Decimal(1200), Decimal(1250)]
    assert mqls[0].superseded_by_id == mqls[1].id
    assert (mqls[0].source_name, mqls[0].external_id, mqls[0].note) == ("crm", "row-1", "from CRM")
    assert mqls[0].reported_by == "source:crm"
    assert push.slack.live_values("sqls") == {"2026-10": Decimal(1200)}


def test_every_bad_row_is_listed_and_nothing_is_written(push: Pusher) -> None:
    reply = push.post(
        {
            "actuals": [
                {"kpi": "mqls", "period": "2026-11", "value": "100"},
                {"kpi": "nope", "period": "2026-11", "value": "1"},
                {"kpi": "mqls", "period": "2026-12", "value": "1"},
                {"kpi": "sqls", "period": "2026-13", "value": "1"},
                {"kpi": "sql_conversion", "period": "2026-11", "value": "1"},
                {"kpi": "sqls", "period": "2026-10", "value": "NaN"},
                {"kpi": "sqls", "period": "2026-09", "value": "Infinity"},
                {"kpi": "sqls", "period": "2026-08", "value": "1e400"},
                {"kpi": "sqls", "period": "2026-07", "value": "1" * 40},
                {"kpi": "sqls\u0000", "period": "2026-06", "value": "1"},
                {"kpi": "sqls", "period": "2026-05", "value": "1", "note": "a\u0000b"},
                {"kpi": "mqls", "period": "2026-11", "value": "2"},
            ]
        }
    )
    assert reply.status == 422 and reply.code == "invalid_rows"
    assert reply.problems() == [
        (2, "kpi", "unknown_kpi"),
        (3, "period", "period_future"),
        (4, "period", "period_bad_month"),
        (5, "kpi", "derived_kpi"),
        (6, "value", "not_a_number"),
        (7, "value", "not_a_number"),
        (8, "value", "not_a_number"),
        (9, "value", "too_large"),
        (10, "kpi", "control_characters"),
        (11, "note", "note_control_characters"),
        (12, "period", "duplicate_row"),
    ]
    assert all(problem["message"] for problem in reply.body["error"]["problems"])
    assert stored(push.slack) == []


def test_json_constants_and_huge_numbers_as_json_numbers_are_refused_per_row(push: Pusher) -> None:
    body = (
        b'{"actuals": [{"kpi": "mqls", "period": "2026-11", "value": NaN},'
        b' {"kpi": "mqls", "period": "2026-10", "value": 1e400},'
        b' {"kpi": "mqls", "period": "2026-09", "value": 1234567890123456789012345678901234567890}]}'
    )
    reply = push.post(body, headers={"Accept-Language": "en"})
    assert reply.status == 422
    assert reply.problems() == [
        (1, "value", "not_a_number"),
        (2, "value", "not_a_number"),
        (3, "value", "too_large"),
    ]
    assert "too large" in reply.body["error"]["problems"][2]["message"]
    assert stored(push.slack) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"kpi": "mqls", "value": ', "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"actuals": 3}', "actuals_not_a_list"),
        (b"\x00\x01", "malformed_json"),
        (b'{"kpi": "\xff"}', "json_not_utf8"),
    ],
)
def test_malformed_json_is_a_400(push: Pusher, body: bytes, code: str) -> None:
    reply = push.post(body)
    assert (reply.status, reply.code) == (400, code)
    assert reply.body["error"]["message"]


def test_tokens_wrong_missing_revoked_and_scope(push: Pusher) -> None:
    row = {"kpi": "mqls", "period": "2026-11", "value": "1"}
    assert push.post(row, token="kpi_000000000000_" + "A" * 43).status == 401
    assert push.post(row, token=push.token[:-1] + ("A" if push.token[-1] != "A" else "B")).status == 401
    no_auth = push.post(row, headers={"Authorization": ""})
    assert (no_auth.status, no_auth.code, no_auth.headers["WWW-Authenticate"]) == (
        401,
        "unauthorized",
        "Bearer",
    )
    forbidden = push.post({"kpi": "revenue", "period": "2026-11", "value": "1"})
    assert (forbidden.status, forbidden.code) == (403, "out_of_scope")
    assert forbidden.problems() == [(1, "kpi", "out_of_scope")]
    with push.slack.session() as session:
        sources.revoke(session, "crm")
        session.commit()
    revoked = push.post(row)
    assert (revoked.status, revoked.code) == (401, "unauthorized")
    assert stored(push.slack) == []


def test_signatures_body_window_and_replayed_webhook_id(push: Pusher) -> None:
    body = json.dumps({"kpi": "mqls", "period": "2026-11", "value": "7"}).encode()
    other = json.dumps({"kpi": "mqls", "period": "2026-11", "value": "8"}).encode()
    assert push.post(body, headers=push.signed(other)).code == "bad_signature"
    late = push.post(body, headers=push.signed(body, at=int(NOW.timestamp()) - 301))
    assert (late.status, late.code) == (401, "timestamp_out_of_window")
    early = push.post(body, headers=push.signed(body, at=int(NOW.timestamp()) + 301))
    assert early.code == "timestamp_out_of_window"
    partial = push.post(body, headers={"webhook-id": "msg_1"})
    assert (partial.status, partial.code) == (401, "missing_header")
    assert stored(push.slack) == []
    first = push.post(body, headers=push.signed(body))
    replay = push.post(body, headers=push.signed(body))
    assert first.status == replay.status == 200
    assert replay.body == first.body and replay.headers["Idempotent-Replayed"] == "true"
    assert [Decimal(row.value) for row in stored(push.slack)] == [Decimal(7)]


def test_the_same_idempotency_key_stores_once_and_a_different_body_is_refused(push: Pusher) -> None:
    key = {"Idempotency-Key": "batch-42"}
    first = push.post({"kpi": "mqls", "period": "2026-11", "value": "5"}, headers=key)
    second = push.post({"kpi": "mqls", "period": "2026-11", "value": "5"}, headers=key)
    assert second.body == first.body
    changed = push.post({"kpi": "mqls", "period": "2026-11", "value": "6"}, headers=key)
    assert (changed.status, changed.code) == (422, "idempotency_key_reused")
    assert len(stored(push.slack)) == 1
    with push.slack.session() as session:
        ledger = session.exec(select(ProcessedRequest)).all()
    assert len(ledger) == 1 and ledger[0].response_status == 200


def _at_once(push: Pusher, body: dict[str, Any], headers: list[dict[str, str]]) -> list[Reply]:
    start = threading.Barrier(len(headers))
    replies: list[Reply] = []

    def send(sent: dict[str, str]) -> None:
        start.wait()
        replies.append(push.post(body, headers=sent))

    threads = [threading.Thread(target=send, args=(sent,)) for sent in headers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def test_the_same_batch_twice_at_once_is_stored_once(push: Pusher) -> None:
    rows = {"actuals": [{"kpi": "mqls", "period": "2026-11", "value": "1"}, {"kpi": "sqls", "value": "2"}]}
    keyed = _at_once(push, rows, [{"Idempotency-Key": "same"}] * 2)
    assert [reply.status for reply in keyed] == [200, 200]
    assert keyed[0].body == keyed[1].body
    assert len(stored(push.slack)) == 2
    # Without a key: the second finds the same values live, under the writers' lock.
    rows["actuals"][0]["value"] = "5"
    plain = _at_once(push, rows, [{}, {}])
    assert sorted(reply.body["unchanged"] for reply in plain) == [1, 2]
    assert [Decimal(row.value) for row in stored(push.slack)] == [Decimal(1), Decimal(2), Decimal(5)]


def test_csv_bom_crlf_shift_jis_and_wrong_header(push: Pusher) -> None:
    text = "kpi,period,value,note,external_id\r\nmqls,2026-11,１,２００,展示会,a-1\r\n"
    bom = push.post(
        '\ufeffkpi,period,value,note\r\nmqls,2026-11,"1,200",展示会\r\n'.encode(), content_type="text/csv"
    )
    assert bom.status == 200, bom
    sjis = push.post(
        "kpi,period,value,note\r\nsqls,2026-11,30,展示会経由\r\n".encode("cp932"), content_type="text/csv"
    )
    assert sjis.status == 200, sjis
    mixed = (
        "kpi,period,value,note\r\nsqls,2026-10,1,展示会\r\n".encode()
        + "sqls,2026-09,2,展示会\r\n".encode("cp932")
    )
    reply = push.post(mixed, content_type="text/csv")
    assert (reply.status, reply.code) == (400, "mixed_encodings")
    header = push.post(b"kpi,month,value\r\nmqls,2026-11,1\r\n", content_type="text/csv")
    assert (header.status, header.code) == (400, "bad_csv_header")
    columns = push.post(text.encode(), content_type="text/csv")
    assert columns.status == 422 and columns.problems() == [(1, "row", "wrong_column_count")]
    rows = {row.period + row.note: Decimal(row.value) for row in stored(push.slack)}
    assert rows == {"2026-11展示会": Decimal(1200), "2026-11展示会経由": Decimal(30)}


def test_more_than_1000_rows_are_refused(push: Pusher) -> None:
    lines = ["kpi,period,value"] + [f"mqls,2026-11,{n}" for n in range(100_000)]
    reply = push.post("\n".join(lines).encode(), content_type="text/csv")
    assert reply.status == 422 and reply.problems() == [(0, "actuals", "too_many_rows")]
    batch = {"actuals": [{"kpi": "mqls", "period": "2026-11", "value": "1"}] * 1001}
    assert push.post(batch).problems() == [(0, "actuals", "too_many_rows")]
    assert stored(push.slack) == []


def test_other_methods_types_and_a_50_mb_body(push: Pusher) -> None:
    assert push.post(b"", method="GET").status == 405
    wrong = push.post(b"kpi=mqls", content_type="application/x-www-form-urlencoded")
    assert (wrong.status, wrong.code) == (415, "unsupported_media_type")
    url = urlsplit(push.slack.server.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as raw:
        raw.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {push.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
        )
        raw.sendall(b"{" + b" " * 65536)  # the start of the body; the answer comes from its length
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 413") or answer.startswith(b"HTTP/1.1 413")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_large"
    assert push.post({"kpi": "mqls", "period": "2026-11", "value": "3"}).status == 200  # still serving


def test_the_rate_limit_answers_429_with_retry_after(push: Pusher) -> None:
    with push.slack.session() as session:
        slow = sources.create(session, "slow", kpis=["mqls"], rate_per_minute=1, burst=1)
        session.commit()
    row = {"kpi": "mqls", "period": "2026-11", "value": "1"}
    assert push.post(row, token=slow.token).status == 200
    limited = push.post(row, token=slow.token)
    assert (limited.status, limited.code, limited.headers["Retry-After"]) == (429, "rate_limited", "60")
    with push.slack.session() as session:
        assert session.exec(select(DataSource).where(DataSource.name == "slow")).one().bucket_tokens < 1


def test_a_pushed_value_raises_its_alert_in_slack(push: Pusher) -> None:
    reply = push.post({"kpi": "mqls", "period": "2026-10", "value": "1"})
    assert reply.status == 200
    push.slack.settle()
    with push.slack.session() as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "mqls")).one()
        alert = session.exec(select(Alert).where(Alert.kpi_id == kpi.id, Alert.period == "2026-10")).one()
    assert (
        alert.severity is Severity.RED and alert.thread_ts is not None
    )  # posted, in the same way as a report
    posts = push.slack.fake.calls("chat.postMessage")
    assert [call.args["channel"] for call in posts if call.args.get("ts") is None][:1] == [alert.channel_id]


def test_the_openapi_document_is_served(push: Pusher) -> None:
    reply = push.post(b"", method="GET", path="/api/v1/openapi.json")
    assert reply.status == 200 and reply.body["openapi"] == "3.1.0"
    assert PATH in reply.body["paths"]
    assert push.post(b"", path="/api/v1/nothing").status == 404
    time.sleep(0)  # nothing timed
