"""How a long-running kpibot process (the web arbiter, Socket Mode, the scheduler) settles once it
has started and before its first piece of work."""

from __future__ import annotations

import gc
import sys

# A thread waiting for the interpreter while another computes gets it within this long, not
# CPython's default 5 ms: an ack takes the interpreter a few dozen times between its reads and
# writes, and a posting thread back from a Web API call should not wait a digest's build for it.
SWITCH_INTERVAL_S = 0.0005


def freeze_heap() -> None:
    """Move every object alive now (modules, compiled messages, the engine, settings) out of the
    garbage collector's reach. A full collection walks every tracked object; a digest run or an
    alert scan allocates enough to trigger one every few chunks, and walking the startup heap
    each time was the growth per department from 20 to 200 departments (bench/README.md). Before
    a fork, the children also keep sharing those pages instead of copying them when a collection
    touches them. The garbage of the start is collected first, so none of it is kept for good."""
    gc.collect()
    gc.freeze()


def settle() -> None:
    """The startup heap frozen and the short switch interval, for a process about to serve."""
    freeze_heap()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
