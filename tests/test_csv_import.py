"""A CSV of actuals sent to kpibot in a DM, over signed HTTP against the running app, on SQLite
and PostgreSQL: downloaded with the bot token, previewed (new values, corrections before → after,
every problem with its row, the sender's permission), saved once with Save, nothing with Cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, select

from bot.models import Actual, Source
from tests.fakefiles import BOT_TOKEN, FakeFiles
from tests.fakeslack.harness import SlackHarness

OWNER = "U0MKTHEAD"  # heads Marketing: may report its KPIs


@pytest.fixture
def files(slack: SlackHarness) -> Iterator[FakeFiles]:
    found = FakeFiles(slack.fake)
    yield found
    found.stop()


def send_file(
    slack: SlackHarness, files: FakeFiles, name: str, body: bytes, user: str = OWNER
) -> dict[str, Any]:
    """The user shares a file in their DM with kpibot; returns kpibot's answer there."""
    file_id = files.add(name, body)
    before = len(slack.fake.calls("chat.postMessage"))
    event = {"type": "message", "subtype": "file_share", "channel": f"D{user[1:]}", "channel_type": "im",
             "user": user, "ts": f"{time.time():.6f}", "files": [files.shared(file_id)]}  # fmt: skip
    assert slack.client.event(event).status == 200
    slack.settle()
    return {"file": file_id, **slack.fake.calls("chat.postMessage")[before].args}


def text_of(answer: dict[str, Any]) -> str:
    return "\n".join(b["text"]["text"] for b in answer.get("blocks") or [] if b["type"] == "section")


def buttons(answer: dict[str, Any]) -> list[str]:
    return [
        e["action_id"] for b in answer.get("blocks") or [] if b["type"] == "actions" for e in b["elements"]
    ]


def click(slack: SlackHarness, action: str, answer: dict[str, Any], user: str = OWNER) -> str:
    before = len(slack.fake.calls("chat.update"))
    response = slack.client.block_action(
        action, value=answer["file"], user_id=user, channel_id=answer["channel"], message_ts="1700000000.0001"
    )
    assert response.status == 200
    slack.settle()
    return slack.fake.calls("chat.update")[before].args["text"]


def csv_rows(slack: SlackHarness) -> list[Actual]:
    with slack.session() as session:
        query = select(Actual).where(Actual.source == Source.CSV).order_by(col(Actual.id))
        return list(session.exec(query).all())


def test_preview_then_save_once_however_often_clicked(slack: SlackHarness, files: FakeFiles) -> None:
    slack.command("report mqls 180 2026-10", user_id=OWNER)
    body = b'kpi,period,value,note\r\nmqls,2026-10,190,recount\r\ncost_per_lead,2026-10,"9,500",\r\n'
    answer = send_file(slack, files, "october.csv", body)
    assert files.downloads == [(answer["file"], f"Bearer {BOT_TOKEN}")]  # with the bot's token
    preview = text_of(answer)
    assert "保存する値 1件、修正 1件、変更なし 0件、問題 0件" in preview
    assert "• MQL 数 2026年10月: 180件 → *190件*(修正)" in preview
    assert "• リード獲得単価 2026年10月: *9,500円*" in preview
    assert buttons(answer) == ["import_save", "import_cancel"]
    assert csv_rows(slack) == []  # a preview stores nothing

    assert "保存しました: 新しい値 1件、修正 1件" in click(slack, "import_save", answer)
    assert "すでに保存済み" in click(slack, "import_save", answer)  # a second click
    rows = csv_rows(slack)
    assert [(row.period, Decimal(row.value), row.reported_by) for row in rows] == [
        ("2026-10", Decimal(190), OWNER),  # the correction of the value typed with /kpi report
        ("2026-10", Decimal(9500), OWNER),
    ]
    assert slack.live_values("mqls") == {"2026-10": Decimal(190)}


def test_every_problem_is_listed_with_its_row_and_nothing_can_be_saved(
    slack: SlackHarness, files: FakeFiles
) -> None:
    body = (
        b"kpi,period,value\n"
        b"mqls,2026-10,12.5\n"  # not a whole number
        b"revenue,2026-10,1000000\n"  # Sales' KPI: not this user's to report
        b"nope,2026-10,1\n"
        b"mqls,2027-05,3\n"  # not started
        b"website_visits,2026-W48,NaN\n"
    )
    answer = send_file(slack, files, "bad.csv", body)
    preview = text_of(answer)
    for row, field in ((1, "value"), (2, "kpi"), (3, "kpi"), (4, "period"), (5, "value")):
        assert f"⚠️ {row} 行目、{field}:" in preview
    assert "revenue" in preview.split("2 行目")[1].splitlines()[0]
    assert "問題 5件" in preview and buttons(answer) == []
    assert csv_rows(slack) == []


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("bom.csv", "\ufeffkpi,period,value,note\r\nmqls,2026-10,120,展示会\r\n".encode()),
        ("sjis.csv", "kpi,period,value,note\r\nmqls,2026-10,120,展示会\r\n".encode("cp932")),
    ],
)
def test_excel_csv_files_read_correctly(
    slack: SlackHarness, files: FakeFiles, name: str, body: bytes
) -> None:
    answer = send_file(slack, files, name, body)
    assert "保存する値 1件" in text_of(answer)
    click(slack, "import_save", answer)
    [row] = csv_rows(slack)
    assert (Decimal(row.value), row.note) == (Decimal(120), "展示会")


def test_cancel_unreadable_and_not_csv_files_store_nothing(slack: SlackHarness, files: FakeFiles) -> None:
    slack.fake.set_user(OWNER, locale="en-US")
    answer = send_file(slack, files, "nov.csv", b"kpi,period,value\nmqls,2026-11,50\n")
    assert click(slack, "import_cancel", answer) == "Import cancelled; nothing was saved."
    wrong_header = send_file(slack, files, "x.csv", b"metric,when,amount\nmqls,2026-11,1\n")
    assert "I can't read *x.csv*" in wrong_header["text"] and "kpi and value required" in wrong_header["text"]
    mixed = send_file(
        slack, files, "m.csv", "kpi,value,note\nmqls,1,展示会\n".encode() + "mqls,2,展示会\n".encode("cp932")
    )
    assert "mixes encodings" in mixed["text"]
    sheet = send_file(slack, files, "book.xlsx", b"PK\x03\x04")
    assert sheet["text"].startswith("I read CSV files only")
    assert csv_rows(slack) == []
    assert "Send me a CSV file" in slack.command("import", user_id=OWNER).args["text"]
