"""Replay one seed, or run many random schedules:

    python -m tests.sim --seed 1234              # replay one schedule, verbosely
    python -m tests.sim --schedules 100000 -j 2  # a long run (prints progress)
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from .chaos import ScheduleFailed, run_schedule


def _batch(args: tuple[int, int]) -> tuple[int, list[str]]:
    start, count = args
    failures = []
    for seed in range(start, start + count):
        try:
            run_schedule(seed)
        except ScheduleFailed as e:
            failures.append(str(e))
    return count, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, help="replay this one seed")
    ap.add_argument("--schedules", type=int, default=1000, help="how many random schedules")
    ap.add_argument("--first", type=int, default=0, help="first seed of the run")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    a = ap.parse_args(argv)
    if a.seed is not None:
        out = run_schedule(a.seed)
        print(f"seed {a.seed}: ok — {out.nodes} nodes, {out.events} events, "
              f"{out.committed} entries committed, {out.terms} terms with a leader")
        return 0
    chunk = 200
    jobs = [(s, min(chunk, a.first + a.schedules - s)) for s in range(a.first, a.first + a.schedules, chunk)]
    done, failures, t0 = 0, [], time.monotonic()
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for count, fails in pool.map(_batch, jobs):
            done += count
            failures += fails
            rate = done / (time.monotonic() - t0)
            print(f"\r{done}/{a.schedules} schedules, {len(failures)} failed, {rate:.0f}/s",
                  end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for f in failures:
        print(f)
    print(f"{done - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
