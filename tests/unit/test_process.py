"""`handlers.process.settle()`: what a long-running process does before its first piece of work.

Each check runs in a fresh interpreter: a frozen heap is for good, and a test worker's must stay
collectable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc, json, sys, weakref
    from handlers.process import SWITCH_INTERVAL_S, settle

    class Node:
        pass

    # Garbage of the start: a cycle nothing refers to, which only the collector frees.
    garbage = Node()
    garbage.self = garbage
    dead = weakref.ref(garbage)
    del garbage
    kept = Node()  # alive at the start: frozen
    frozen_before = gc.get_freeze_count()
    settle()
    after = Node()  # made after it: still the collector's
    print(json.dumps({
        "frozen_before": frozen_before,
        "frozen_after": gc.get_freeze_count(),
        "start_garbage_freed": dead() is None,
        "kept_tracked": gc.is_tracked(kept),
        "kept_in_young_generations": any(kept is o for g in (0, 1, 2) for o in gc.get_objects(g)),
        "after_in_young_generations": any(after is o for g in (0, 1, 2) for o in gc.get_objects(g)),
        "switch_interval": sys.getswitchinterval(),
        "expected_interval": SWITCH_INTERVAL_S,
    }))
    """
)


def _run() -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_settle_freezes_what_is_alive_frees_the_starts_garbage_and_shortens_the_switch_interval() -> None:
    result = _run()

    assert result["frozen_before"] == 0
    # The modules, classes and functions imported so far: thousands of objects.
    assert isinstance(result["frozen_after"], int) and result["frozen_after"] > 1_000
    assert result["start_garbage_freed"] is True
    # Alive at the start: out of every generation a collection walks (but still tracked).
    assert result["kept_tracked"] is True
    assert result["kept_in_young_generations"] is False
    # Made afterwards: collected as usual.
    assert result["after_in_young_generations"] is True
    assert result["switch_interval"] == result["expected_interval"] == 0.0005
