"""What every benchmark shares: result rows, databases, the fake Slack, the clock, /proc readings."""

from __future__ import annotations

import datetime as dt
import math
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from tests.fakeslack.server import FakeSlack, _parse_args, _Reply

ROOT = Path(__file__).resolve().parent.parent
TOKYO = ZoneInfo("Asia/Tokyo")
SIGNING_SECRET = "bench-signing-secret"
BOT_TOKEN = "xoxb-bench"


# -- result rows -----------------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


@dataclass
class Row:
    """One line of the table. Figures are medians over repetitions; min and max go to the JSON.

    `ratio` is always "times the baseline's cost": kpibot ÷ baseline for costs (ms, s, MB,
    statements), baseline ÷ kpibot for rates (charts/s), so above 1 is always worse."""

    benchmark: str
    size: str
    unit: str
    kpibot: list[float]
    baseline: list[float] = field(default_factory=list)
    rate: bool = False  # higher is better (a throughput)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kpibot_median(self) -> float | None:
        return statistics.median(self.kpibot) if self.kpibot else None

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        ours, floor = self.kpibot_median, self.baseline_median
        if ours is None or floor is None or ours == 0 or floor == 0:
            return None
        return floor / ours if self.rate else ours / floor

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "size": self.size,
            "unit": self.unit,
            "kpibot": summary(self.kpibot),
            "baseline": summary(self.baseline),
            "ratio": self.ratio,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    digits = max(0, 2 - math.floor(math.log10(magnitude)))
    return f"{value:.{min(digits, 4)}f}"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | size | kpibot | baseline | ratio | unit |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio = row.ratio
        lines.append(
            f"| {row.benchmark} | {row.size} | {fmt(row.kpibot_median)} | {fmt(row.baseline_median)} | "
            f"{'—' if ratio is None else fmt(ratio) + '×'} | {row.unit} |"
        )
    return "\n".join(lines)


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def repeat(times: int, run: Callable[[], float]) -> list[float]:
    return [run() for _ in range(times)]


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# -- the clock -------------------------------------------------------------------------------------


def review_day(now: dt.datetime | None = None) -> dt.date:
    """The Monday of this week in Tokyo: the generated plans' "today" and the digests' day."""
    day = (now or dt.datetime.now(dt.UTC)).astimezone(TOKYO).date()
    return day - dt.timedelta(days=day.weekday())


def slot_time(day: dt.date) -> dt.datetime:
    """Half a minute after the generated departments' digest slot (Monday 09:00 in Tokyo)."""
    return dt.datetime.combine(day, dt.time(9, 0, 30), TOKYO).astimezone(dt.UTC)


def running_clock(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that starts at `start` and then runs in real time (for bot.clock.set_clock)."""
    origin = time.monotonic()
    return lambda: start + dt.timedelta(seconds=time.monotonic() - origin)


# -- databases -------------------------------------------------------------------------------------


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def schema_url(base: URL, schema: str) -> URL:
    return base.update_query_dict({"options": f"-csearch_path={schema}"})


@contextmanager
def counting_statements(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


# -- /proc -----------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM … of a process in kB (empty if it is gone)."""
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[name] = int(rest.split()[0])
    return values


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers of its arbiter)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid …; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


# -- the fake Slack --------------------------------------------------------------------------------


class BenchSlack(FakeSlack):
    """tests.fakeslack's FakeSlack (same wire, same answers), also timing each call it serves and
    counting the answers a load client waits for: response_url posts by URL, ephemerals by user."""

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(latency)
        self._served = threading.Condition()
        self._answers: Counter[str] = Counter()
        self._durations: list[tuple[str, float]] = []
        self._last_call = time.monotonic()

    def _dispatch(self, raw_path: str, raw: bytes, headers: Message) -> _Reply:
        start = time.perf_counter()
        reply = super()._dispatch(raw_path, raw, headers)
        elapsed = time.perf_counter() - start
        path = raw_path.split("?", 1)[0]
        key = None
        if path.startswith("/response_url/"):
            key = path
        elif path == "/api/chat.postEphemeral":
            query = raw_path.split("?", 1)[1] if "?" in raw_path else ""
            args = _parse_args(query, raw, headers.get("Content-Type", ""))
            key = f"ephemeral:{args.get('user')}"
        with self._served:
            self._last_call = time.monotonic()
            self._durations.append((path.rsplit("/", 1)[-1] if path.startswith("/api/") else path, elapsed))
            if key is not None:
                self._answers[key] += 1
                self._served.notify_all()
        return reply

    def answers(self, key: str) -> int:
        with self._served:
            return self._answers[key]

    def wait_answer(self, key: str, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._served:
            while self._answers[key] < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._served.wait(left)
            return True

    def wait_quiet(self, quiet: float, timeout: float) -> bool:
        """Wait until no call has come for `quiet` seconds (at most `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._served:
                idle = time.monotonic() - self._last_call
            if idle >= quiet:
                return True
            time.sleep(quiet - idle)
        return False

    def durations(self) -> list[tuple[str, float]]:
        with self._served:
            return list(self._durations)

    def clear(self) -> None:
        """Forget calls, uploads and timings (between benchmarks: 200 PNGs add up)."""
        self.reset()
        with self._served:
            self._durations.clear()
            self._answers.clear()


def environment(**values: str) -> dict[str, str]:
    """This process's environment minus anything kpibot or gunicorn reads, plus `values`."""
    ours = ("DATABASE_URL", "PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KPIBOT_")) and k not in ours}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(values)
    return env
