"""The web process imports only what it serves: no matplotlib (a third of a worker's memory)
until a chart is drawn. Checked in a fresh interpreter, where nothing else has imported it."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import handlers.web, handlers.app, handlers.cli  # what `kpibot serve` and its workers load
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "matplotlib")))
"""


def test_serving_slack_does_not_import_matplotlib() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []

