"""`python bench/hotspots.py [--departments N] [--weeks N] [--top N]`: where the digest build and the
alert scan spend their time, as cProfile sees it, on the benchmark's generated plan (SQLite, in a
temporary directory). Each is run once to warm up, once timed, once profiled; the profiles are written
next to the printout (`digest.pstats`, `scan.pstats`) for `python -m pstats`.

The ack path is profiled from outside, with py-spy on the benchmark's own server:
`py-spy record --pid <the bench.serve kpibot arbiter> --subprocesses --rate 200 --format raw -o ack.raw`
while `python bench/run.py --quick --departments 200 --only ack` runs (bench/README.md).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository's root on the path, as bench/run.py does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.engine import make_url

from bench.common import review_day
from bench.generate import generate_division
from bench.run import KPIS, build_all, departments_of, scan_all
from bot.database import make_engine, migrate
from handlers.process import freeze_heap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--departments", type=int, default=200)
    parser.add_argument("--weeks", type=int, default=104)
    parser.add_argument("--top", type=int, default=40, help="functions shown, by cumulative time")
    parser.add_argument("--output", type=Path, default=Path(tempfile.mkdtemp(prefix="kpibot-hotspots-")))
    args = parser.parse_args(argv)
    day = review_day()
    folder = Path(tempfile.mkdtemp(prefix="kpibot-hotspots-plan-"))
    engine = make_engine(make_url(f"sqlite:///{folder / 'plan.db'}"))
    migrate(engine)
    generate_division(
        engine, departments=args.departments, kpis_per_department=KPIS, weeks=args.weeks, today=day
    )
    departments = departments_of(engine)
    runs: dict[str, Callable[[], object]] = {
        "digest": lambda: build_all(engine, departments, day),
        "scan": lambda: scan_all(engine, departments, day),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    for name, run in runs.items():
        run()  # warm: imports, template compilation, SQLite's page cache
        freeze_heap()  # as the scheduler's process runs them (handlers.process.settle)
        start = time.perf_counter()
        run()
        print(f"== {name}: {time.perf_counter() - start:.3f} s unprofiled, {args.departments} departments")
        profile = cProfile.Profile()
        profile.runcall(run)
        profile.dump_stats(args.output / f"{name}.pstats")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
    print(f"profiles in {args.output}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
