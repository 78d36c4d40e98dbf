"""The ack-latency load: a server subprocess and a client of signed Slack requests.

The client is tests/fakeslack's SignedSlackClient (signed like Slack, one connection per
request), one per virtual user, identical for both servers. A virtual user sends a
request, records the time to the HTTP answer (the ack), then — like a person waiting for
the bot's answer — waits for the reply the app sends back through the fake Slack
(response_url for commands, chat.postEphemeral for the modal) before its next request.
The bare app sends no reply, so its users go on straight after the ack. Everything is
bounded: a request count per user, a deadline per phase and a timeout per reply.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from bench.common import SIGNING_SECRET, BenchSlack, child_pids, proc_status
from tests.fakeslack.client import Response, SignedSlackClient

STARTUP_SECONDS = 40
REPLY_TIMEOUT = 30.0
SLACK_ACK_S = 3.0  # Slack shows the user an error for an answer later than this
QUIET_SECONDS = 0.5  # no Web API call for this long: the server's follow-ups are done


# -- the server --------------------------------------------------------------------------------------


@dataclass
class Server:
    kind: str  # "kpibot" or "bare"
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    booted: dict[str, Any] = field(default_factory=dict)  # memory() right after boot

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory(self) -> dict[str, Any]:
        """Peak RSS (VmHWM, kB) of the arbiter and each worker, read while they still run."""
        workers = child_pids(self.process.pid)
        peaks = {pid: proc_status(pid).get("VmHWM", 0) for pid in workers}
        arbiter = proc_status(self.process.pid).get("VmHWM", 0)
        return {
            "arbiter_kb": arbiter,
            "workers_kb": sorted(peaks.values(), reverse=True),
            "largest_worker_kb": max(peaks.values(), default=0),
            "total_kb": arbiter + sum(peaks.values()),
        }

    def stop(self) -> int | None:
        """SIGTERM (gunicorn's graceful stop); SIGKILL to the process group we started if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        return self.process.returncode


def start_server(kind: str, env: dict[str, str], port: int, workdir: Path) -> Server:
    log = workdir / f"serve-{kind}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.serve", kind],
            env={**env, "PORT": str(port)},
            cwd=workdir,  # no developer's .env is read
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers go with it
        )
    server = Server(kind, process, port, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urlopen(f"{server.url}/healthz", timeout=2) as response:
                if response.status == 200:
                    break
        except (URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{kind} server: /healthz silent for {STARTUP_SECONDS} s:\n{log.read_text()}")
        time.sleep(0.2)
    # Every worker answers /healthz once it has booted; give the slower one a moment more.
    time.sleep(0.5)
    server.booted = server.memory()
    return server


# -- requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    text: str
    user_id: str
    channel_id: str


@dataclass(frozen=True)
class Submission:
    user_id: str
    values: dict[str, dict[str, Any]]
    private_metadata: str
    view_id: str


Request = Command | Submission


@dataclass
class PhaseResult:
    acks: list[float] = field(default_factory=list)  # seconds
    replies: list[float] = field(default_factory=list)  # seconds, request sent → reply received
    errors: list[str] = field(default_factory=list)
    missing_replies: int = 0
    ack_timeouts: int = 0  # answered after Slack's 3 s, or 404 "unhandled request" (no ack() within them)
    wall: float = 0.0


def send(client: SignedSlackClient, request: Request) -> Response:
    if isinstance(request, Command):
        return client.command(request.text, user_id=request.user_id, channel_id=request.channel_id)
    return client.view_submission(
        "report_modal",
        request.values,
        user_id=request.user_id,
        private_metadata=request.private_metadata,
        view_id=request.view_id,
    )


def run_phase(
    server_url: str,
    fake: BenchSlack,
    users: list[list[Request]],
    *,
    wait_for_replies: bool,
    deadline_seconds: float,
) -> PhaseResult:
    """One thread per virtual user, each sending its requests in turn; stops at the deadline."""
    result = PhaseResult()
    lock = threading.Lock()
    deadline = time.monotonic() + deadline_seconds

    def user(requests: list[Request]) -> None:
        client = SignedSlackClient(server_url, SIGNING_SECRET, fake=fake)
        for request in requests:
            if time.monotonic() > deadline:
                return
            key, before = _answer_key(client, request, fake)
            start = time.perf_counter()
            try:
                response = send(client, request)
            except TimeoutError:
                # No HTTP answer within the client's 10 s: far past Slack's 3 s, a sample and a timeout.
                with lock:
                    result.acks.append(time.perf_counter() - start)
                    result.ack_timeouts += 1
                    result.errors.append("client timeout")
                continue
            except OSError as error:
                with lock:
                    result.errors.append(repr(error))
                continue
            ack = time.perf_counter() - start
            # Bolt gave up waiting for ack() (3 s), or the answer came after Slack's 3 s however it was
            # answered (waiting for a thread before Bolt saw it): Slack shows the user an error. Still a
            # sample (its latency), counted; the listener runs on regardless, so its reply is waited for.
            unhandled = response.status == 404 and "unhandled request" in response.body
            timed_out = unhandled or ack > SLACK_ACK_S
            if not unhandled and (response.status != 200 or "response_action" in response.body):
                # A form refused with errors is answered 200 too: it saved nothing, so it is no sample.
                with lock:
                    result.errors.append(f"HTTP {response.status}: {response.body[:200]}")
                continue
            if key is None and isinstance(request, Command):
                key = client.last_response_url and _path(client.last_response_url)
            reply: float | None = None
            if wait_for_replies and key is not None:
                left = min(REPLY_TIMEOUT, max(0.1, deadline - time.monotonic()))
                if fake.wait_answer(key, before + 1, left):
                    reply = time.perf_counter() - start
            with lock:
                result.acks.append(ack)
                result.ack_timeouts += timed_out
                if reply is not None:
                    result.replies.append(reply)
                elif wait_for_replies:
                    result.missing_replies += 1

    threads = [threading.Thread(target=user, args=(requests,), daemon=True) for requests in users]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic() + REPLY_TIMEOUT + 5))
    result.wall = time.perf_counter() - started
    # Let follow-ups (alerts posted after a report) finish, so they do not weigh on the next phase.
    fake.wait_quiet(QUIET_SECONDS, timeout=30)
    return result


def _answer_key(client: SignedSlackClient, request: Request, fake: BenchSlack) -> tuple[str | None, int]:
    """What reply to wait for, and how many of those the fake has already seen."""
    if isinstance(request, Submission):
        key = f"ephemeral:{request.user_id}"
        return key, fake.answers(key)
    return None, 0  # a command's response_url is new for each request: known after sending


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


# -- the plan's users and what they send --------------------------------------------------------------


def department_of(index: int) -> tuple[str, str, str]:
    """(department key, channel, head) of a generated department (bench/generate.py's naming)."""
    return f"gen_{index:04d}", f"C{index:08d}", f"UHEAD{index:05d}"


def report_commands(departments: int, kpis: int, users: int, per_user: int, seed: int) -> list[list[Request]]:
    """`/kpi report <kpi> <value>` by each KPI's owner in its department's channel: a real write each."""
    rng = random.Random(seed)
    plan: list[list[Request]] = []
    for _user in range(users):
        requests: list[Request] = []
        for _ in range(per_user):
            department = rng.randrange(departments)
            number = rng.randrange(kpis)
            _, channel, _ = department_of(department)
            owner = owners_of(department)[number % 3]
            text = f"report gen_{department:04d}_k{number:02d} {valid_value(number, rng)}"
            requests.append(Command(text, owner, channel))
        plan.append(requests)
    return plan


def valid_value(number: int, rng: random.Random) -> int:
    """A value kpibot accepts for generated KPI number `number` (every 5th is a percentage)."""
    return rng.randint(20, 95) if number % 5 == 4 else rng.randint(40, 130)


def status_commands(departments: int, users: int, per_user: int, seed: int) -> list[list[Request]]:
    """`/kpi status` by a department head in the department's channel."""
    rng = random.Random(seed)
    plan: list[list[Request]] = []
    for _ in range(users):
        requests: list[Request] = []
        for _ in range(per_user):
            _, channel, head = department_of(rng.randrange(departments))
            requests.append(Command("status", head, channel))
        plan.append(requests)
    return plan


def modal_submissions(
    views: dict[int, dict[str, Any]], users: int, per_user: int, kpis: int, seed: int, tag: str
) -> list[list[Request]]:
    """Each virtual user is a department head submitting the report form Slack was asked to open
    for them, with `kpis` values typed; a new view id each time, so each is saved (not a retry)."""
    rng = random.Random(seed)
    heads = sorted(views)
    plan: list[list[Request]] = []
    for user in range(users):
        department = heads[user % len(heads)]
        view = views[department]
        _, _, head = department_of(department)
        requests: list[Request] = []
        for number in range(per_user):
            requests.append(
                Submission(
                    head,
                    _typed(view, kpis, rng),
                    view["private_metadata"],
                    f"VB{tag}U{user:03d}N{number:05d}",
                )
            )
        plan.append(requests)
    return plan


def _typed(view: dict[str, Any], kpis: int, rng: random.Random) -> dict[str, dict[str, Any]]:
    """The form's state as Slack sends it: the first `kpis` fields typed in, the rest left empty."""
    values: dict[str, dict[str, Any]] = {}
    typed = 0
    for block in view["blocks"]:
        if block.get("type") != "input":
            continue
        element = block["element"]
        value: str | None = None
        if block["block_id"].startswith("kpi:") and typed < kpis:
            number = int(block["block_id"].rsplit("_k", 1)[1])
            value, typed = str(valid_value(number, rng)), typed + 1
        values[block["block_id"]] = {element["action_id"]: {"type": "plain_text_input", "value": value}}
    if typed < kpis:
        raise ValueError(f"the form has {typed} KPI fields, {kpis} wanted")
    return values


def open_views(
    server_url: str, fake: BenchSlack, departments: list[int], timeout: float = 20.0
) -> dict[int, dict[str, Any]]:
    """`/kpi report` alone by each head (at once): the view kpibot asked Slack to open, by department."""
    triggers: dict[str, int] = {}

    def open_one(department: int) -> None:
        client = SignedSlackClient(server_url, SIGNING_SECRET, fake=fake)
        _, channel, head = department_of(department)
        trigger = f"bench-open-{department}-{time.time_ns()}"
        triggers[trigger] = department
        response = client.command("report", user_id=head, channel_id=channel, trigger_id=trigger)
        if response.status != 200:
            raise RuntimeError(f"/kpi report (modal) answered HTTP {response.status}")

    threads = [threading.Thread(target=open_one, args=(department,)) for department in departments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    views: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(views) < len(departments):
        for call in fake.calls("views.open"):
            department = triggers.get(call.args.get("trigger_id", ""))
            if department is not None:
                views[department] = call.args["view"]
        if len(views) < len(departments):
            if time.monotonic() > deadline:
                raise RuntimeError(f"views.open for {len(views)} of {len(departments)} heads in {timeout} s")
            time.sleep(0.05)
    return views


def watchers(departments: int) -> list[str]:
    """Everyone whose App Home a report in the generated division refreshes: each department's head
    and its KPIs' owners (bench/generate.py's naming; its divisions have no division head)."""
    return [user for index in range(departments) for user in (department_of(index)[2], *owners_of(index))]


def owners_of(index: int) -> tuple[str, ...]:
    return tuple(f"UOWN{index:04d}{number}" for number in range(3))


def open_homes(server_url: str, fake: BenchSlack, users: list[str], timeout: float = 120.0) -> int:
    """`app_home_opened` for each of `users` (4 at a time), each tab published before it returns:
    kpibot refreshes only tabs opened within the hour, so every watcher counts as looking."""
    before = len(fake.calls("views.publish"))
    queue = list(users)
    lock = threading.Lock()

    def opener() -> None:
        client = SignedSlackClient(server_url, SIGNING_SECRET, fake=fake)
        while True:
            with lock:
                if not queue:
                    return
                user = queue.pop()
            event = {"type": "app_home_opened", "user": user, "channel": f"D{user}", "tab": "home"}
            response = client.event(event, event_id=f"EvHOME{user}")
            if response.status != 200:
                raise RuntimeError(f"app_home_opened answered HTTP {response.status}")

    threads = [threading.Thread(target=opener, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    fake.wait_for("views.publish", count=before + len(users), timeout=timeout)
    return len(users)
