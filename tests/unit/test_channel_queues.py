"""`bot.schedule.jobs.ChannelQueues`: the catch-up's posting threads, one channel at a time each,
channels in parallel, work run as it is put (while the next chunk of digests is built)."""

from __future__ import annotations

import threading
import time

from bot.schedule.jobs import ChannelQueues


def test_each_channel_runs_in_the_order_put_and_everything_runs_once() -> None:
    ran: list[tuple[str, int]] = []
    running: set[str] = set()
    overlaps: list[str] = []
    mutex = threading.Lock()

    def run(work: tuple[str, int]) -> None:
        channel, _ = work
        with mutex:
            if channel in running:
                overlaps.append(channel)
            running.add(channel)
        time.sleep(0.001)  # gives another thread the time to take the same channel, were it free
        with mutex:
            ran.append(work)
            running.discard(channel)

    with ChannelQueues(run, threads=3) as queues:
        for number in range(40):
            channel = "ABCDE"[number % 5]
            queues.put(channel, (channel, number))

    assert sorted(ran) == sorted(("ABCDE"[n % 5], n) for n in range(40))
    for channel in "ABCDE":
        assert [n for c, n in ran if c == channel] == [n for n in range(40) if "ABCDE"[n % 5] == channel]
    assert overlaps == [] and queues.failed == []


def test_channels_run_in_parallel_and_work_starts_before_the_last_is_put() -> None:
    both = threading.Barrier(2, timeout=10)  # broken (and raising) unless two channels run at once
    started = threading.Event()

    def run(channel: str) -> None:
        started.set()
        both.wait()

    with ChannelQueues(run, threads=2) as queues:
        queues.put("C1", "C1")
        # The first channel's work is under way before the second is even put.
        assert started.wait(10)
        queues.put("C2", "C2")

    assert queues.failed == []


def test_work_that_raises_is_returned_and_its_channel_goes_on() -> None:
    ran: list[int] = []

    def run(number: int) -> None:
        if number == 2:
            raise RuntimeError("Slack is down")
        ran.append(number)

    with ChannelQueues(run, threads=2) as queues:
        for number in range(5):
            queues.put("C1", number)

    assert ran == [0, 1, 3, 4]
    assert queues.failed == [2]
