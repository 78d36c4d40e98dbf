"""Requests that are not what Slack sends, over real HTTP to the served app: refused before Bolt parses
them (handlers/gate.py), never a 500, nothing done."""

from __future__ import annotations

import json
import time
from http.client import HTTPConnection
from urllib.error import HTTPError
from urllib.parse import urlencode, urlsplit
from urllib.request import Request, urlopen

import pytest
from sqlmodel import select

from bot.models import Actual
from tests.fakeslack.client import FORM, JSON
from tests.fakeslack.harness import SlackHarness

OWNER = "U0SALES1"


def _nothing_stored_or_said(slack: SlackHarness) -> None:
    with slack.session() as session:
        assert session.exec(select(Actual)).all() == []
    assert slack.fake.calls("response_url") == []
    assert slack.fake.calls("chat.postMessage") == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"payload=not-json", FORM),
        (b"payload=%5B1%2C2%5D", FORM),  # a JSON array, not an object
        (b"{not json", JSON),
        (b"[1, 2]", JSON),
        (b"\xff\xfe", FORM),
    ],
    ids=["payload-not-json", "payload-array", "json-broken", "json-array", "not-utf8"],
)
def test_a_signed_but_malformed_body_is_400(slack: SlackHarness, body: bytes, content_type: str) -> None:
    response = slack.client.raw(body, content_type)
    assert response.status == 400
    assert response.json() == {"ok": False, "error": "malformed_request"}
    _nothing_stored_or_said(slack)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"payload=not-json", FORM), (b"{not json", JSON), (b"command=%2Fkpi&text=report+mqls+120", FORM)],
    ids=["payload-not-json", "json-broken", "command"],
)
def test_an_unsigned_or_forged_request_is_401_whatever_its_body(
    slack: SlackHarness, body: bytes, content_type: str
) -> None:
    forged = slack.client.raw(body, content_type, signature="v0=" + "0" * 64)
    request = Request(slack.client.url, data=body, method="POST", headers={"Content-Type": content_type})
    with pytest.raises(HTTPError) as unsigned:  # no signature, no timestamp
        urlopen(request, timeout=5)
    assert (forged.status, unsigned.value.code) == (401, 401)
    _nothing_stored_or_said(slack)


@pytest.mark.parametrize("timestamp", ["abc", "", "12.5", "-5", "1e9", "stale", "future"])
def test_a_bad_or_stale_timestamp_is_401(slack: SlackHarness, timestamp: str) -> None:
    # Slack's rule is five minutes either way, against real time (the signer's clock).
    shifted = {"stale": -400, "future": 400}
    if timestamp in shifted:
        timestamp = str(int(time.time()) + shifted[timestamp])
    body = urlencode({"command": "/kpi", "text": "report new_approaches 85", "user_id": OWNER}).encode()
    signed = slack.client.sign(timestamp, body)
    response = slack.client.raw(body, FORM, timestamp=timestamp, signature=signed)
    assert response.status == 401
    _nothing_stored_or_said(slack)


def test_a_body_over_the_limit_is_413_before_it_is_read(slack: SlackHarness) -> None:
    # Only the headers are sent: the answer must come from Content-Length alone, so a
    # 50 MB body is never read (and a client still sending cannot race the answer).
    url = urlsplit(slack.client.url)
    connection = HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=5)
    try:
        connection.putrequest("POST", url.path)
        connection.putheader("Content-Type", FORM)
        connection.putheader("Content-Length", str(50_000_000))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read()) == {"ok": False, "error": "body_too_large"}
    finally:
        connection.close()
    _nothing_stored_or_said(slack)


def test_other_methods_are_405(slack: SlackHarness) -> None:
    with pytest.raises(HTTPError) as raised:
        urlopen(Request(slack.client.url, method="GET"), timeout=5)
    assert raised.value.code == 405


def test_the_certificate_check_is_answered_without_a_signature(slack: SlackHarness) -> None:
    response = slack.client.raw(b"ssl_check=1&token=x", FORM, signature="")
    assert (response.status, response.json()) == (200, {"ok": True})


def test_a_good_request_still_goes_through(slack: SlackHarness) -> None:
    answer = slack.command("report new_approaches 85", user_id=OWNER)
    assert "85" in answer.args["text"]
    assert slack.live_values("new_approaches") == {"2026-11": 85}
    assert json.loads(json.dumps(answer.args))["response_type"] == "ephemeral"
