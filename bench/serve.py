"""`python -m bench.serve kpibot|bare`: a server for the ack-latency benchmark.

Both run `handlers.web.serve` — the function behind `kpibot serve`: the same gunicorn
options (gthread, WEB_CONCURRENCY workers, KPIBOT_THREADS threads), settings from the
environment — bound to 127.0.0.1 instead of 0.0.0.0. `kpibot` serves kpibot's app
untouched; `bare` has gunicorn load bench/bare_app.py's app instead (serve() builds each
worker's app with handlers.web.build, which is swapped for the bare one here).
"""

from __future__ import annotations

import logging
import sys

from bot.config import load_settings
from handlers import web


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("kpibot", "bare"):
        print("usage: python -m bench.serve kpibot|bare", file=sys.stderr)
        return 2
    # As handlers.cli.main does before `kpibot serve`.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(env_file=None)
    if argv[0] == "bare":
        from bench import bare_app

        web.build = bare_app.build  # type: ignore[assignment]
    web.serve(settings, host="127.0.0.1")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
