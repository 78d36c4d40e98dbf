"""`python -m bench.scheduler_run MODE…`: scheduler runs over a plan, in a process of their own.

The `kpibot scheduler` objects as handlers.cli builds them — Scheduler(engine, make_jobs(
make_web_client(settings), engine, settings)) — with the clock half a minute after every
generated department's Monday 09:00 digest slot and Slack at SLACK_API_URL (the parent's fake).
Each MODE is one run, on a fresh Scheduler, after the `post` ledger is emptied (the hourly alert
scan, due a minute after start, is moved out of the way: it posts alerts, and would land in some
runs and not others):

- `catch-up`: Scheduler.start(), what `kpibot scheduler` does when it (re)starts after the
  slot: every department's digest is posted by the catch-up (built a chunk of departments at a
  time, each chunk posted from the catch-up's threads while the next is built), then shutdown.
- `cron`: the live path at 09:00: the department jobs are scheduled as start() does, then
  every digest job is made due at once and APScheduler's executor fires them (Scheduler.fire).

Before each run the process prints `READY <n>` and waits for a line on stdin (the parent sets
up its fake Slack meanwhile); after it, one JSON line: wall time, the process's CPU time, outcomes and memory
(VmHWM, and VmRSS before the first run). The first run's VmHWM is the peak of a process that
has done exactly one scheduler run; later runs' VmHWM is the peak so far. ru_maxrss is reported
too but is not this process's own: Linux carries the parent's peak into a child started by
vfork+exec (as subprocess does), so it shows the bench's RSS.

Environment: DATABASE_URL, SLACK_*, BENCH_CLOCK (ISO), BENCH_LOCK_KEY, BENCH_TIMEOUT (seconds,
per run), BENCH_STUB_CHARTS=1 (diagnostic: charts replaced by a 1×1 PNG).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import resource
import sys
import threading
import time
from typing import Any

import sqlalchemy as sa
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from sqlalchemy.engine import Engine
from sqlmodel import select

from bench.common import proc_status, running_clock
from bot.clock import set_clock
from bot.config import Settings, load_settings
from bot.database import make_engine, require_current_schema, transaction
from bot.models import Post, PostKind, PostStatus
from bot.schedule import scheduler as scheduler_module
from bot.schedule.scheduler import Scheduler
from handlers.client import make_web_client
from handlers.digests.interactive import make_jobs
from handlers.process import settle

MODES = ("catch-up", "cron")
# A 1×1 transparent PNG.
_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000005000100"
    "0d0a2db40000000049454e44ae426082"
)


def main(argv: list[str]) -> int:
    if not argv or any(mode not in MODES for mode in argv):
        print("usage: python -m bench.scheduler_run catch-up|cron …", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    set_clock(running_clock(dt.datetime.fromisoformat(os.environ["BENCH_CLOCK"])))
    timeout = float(os.environ.get("BENCH_TIMEOUT", "600"))
    if os.environ.get("BENCH_STUB_CHARTS") == "1":
        # Diagnostic only (never a benchmark row): how much of the peak is the charts'.
        import bot.digests.flows

        bot.digests.flows.render_trend_chart = lambda title, series, locale: _TINY_PNG  # type: ignore[assignment]
    # The hourly alert scan (first run a minute after start) posts alerts, not digests: it is kept
    # out of these runs so that every run measures the same thing (bench/README.md).
    if hasattr(scheduler_module, "SCAN_FIRST_DELAY"):
        scheduler_module.SCAN_FIRST_DELAY = dt.timedelta(days=7)
    settings = load_settings(env_file=None)
    engine = make_engine(settings.database_url)
    require_current_schema(engine)
    settle()  # as `kpibot scheduler` does before its first run
    rss_before_kb = proc_status(os.getpid()).get("VmRSS", 0)
    for number, mode in enumerate(argv):
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM post"))  # every digest due again
        print(f"READY {number}", flush=True)
        if not sys.stdin.readline():
            return 1
        result = run(mode, engine, settings, timeout)
        result["rss_before_kb"] = rss_before_kb
        print(json.dumps(result), flush=True)
    engine.dispose()
    return 0


def run(mode: str, engine: Engine, settings: Settings, timeout: float) -> dict[str, Any]:
    scheduler = Scheduler(
        engine,
        make_jobs(make_web_client(settings), engine, settings),
        # Its own advisory lock: a test run's scheduler on this PostgreSQL must not make it stand by.
        lock_key=int(os.environ["BENCH_LOCK_KEY"]),
    )
    start = time.perf_counter()
    # The whole process's CPU (every thread: APScheduler's pool, slack_sdk, matplotlib), not the wall.
    cpu_start = time.process_time()
    fired = None
    if mode == "catch-up":
        scheduler.start()
    else:
        fired = _fire_all(scheduler, timeout)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    scheduler.shutdown(wait=True)
    with transaction(engine) as session:
        statuses = [
            post.status for post in session.exec(select(Post).where(Post.kind == PostKind.DIGEST)).all()
        ]
    return {
        "mode": mode,
        "wall_s": wall,
        "cpu_s": cpu,
        "fired": fired,
        "posted": sum(1 for status in statuses if status is PostStatus.SENT),
        "failed": sum(1 for status in statuses if status is PostStatus.FAILED),
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # see the docstring
        "vmhwm_kb": proc_status(os.getpid()).get("VmHWM", 0),
    }


def _fire_all(scheduler: Scheduler, timeout: float) -> int:
    """Schedule as start() does, make every digest job due now, let APScheduler run them."""
    scheduler.try_lead()
    scheduler.sync()
    aps = scheduler.apscheduler
    done = threading.Semaphore(0)

    def finished(event: JobExecutionEvent) -> None:
        if event.job_id.startswith("digest:"):
            done.release()

    aps.add_listener(finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    aps.start(paused=True)
    now = dt.datetime.now(dt.UTC)
    digests = [job for job in aps.get_jobs() if job.id.startswith("digest:")]
    for job in digests:
        job.modify(next_run_time=now)
    aps.resume()
    deadline = time.monotonic() + timeout
    fired = 0
    while fired < len(digests) and done.acquire(timeout=max(0.0, deadline - time.monotonic())):
        fired += 1
    return fired


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
