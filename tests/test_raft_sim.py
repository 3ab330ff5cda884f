"""Random schedules over 3- and 5-node clusters (membership changes and snapshots
included), every event checked for election safety, log matching, leader completeness
and state machine safety, and liveness once the network heals.

CI runs RAFT_SCHEDULES (default 2,000) schedules in chunks so that pytest-xdist can
spread them; `python -m tests.sim --schedules 100000 -j 2` runs a long campaign and
`python -m tests.sim --seed S` replays one schedule.
"""
import os

import pytest

from tests.sim.chaos import run_schedule

SCHEDULES = int(os.environ.get("RAFT_SCHEDULES", "2000"))
FIRST = int(os.environ.get("RAFT_FIRST_SEED", "0"))
CHUNK = 100


@pytest.mark.parametrize("start", range(FIRST, FIRST + SCHEDULES, CHUNK))
def test_random_schedules(start):
    stats = [run_schedule(seed) for seed in range(start, min(start + CHUNK, FIRST + SCHEDULES))]
    assert {s.nodes for s in stats} == {3, 5}
    # the schedules really did something: entries committed and leaders changed
    assert sum(s.committed for s in stats) > 10 * len(stats)
    assert sum(s.terms > 1 for s in stats) > len(stats) // 4
    for what in ("crashes", "snapshots_installed", "conf_changes_applied"):
        assert sum(s.stats.get(what, 0) for s in stats) > 0, f"no {what} in these schedules"


def test_replay_is_deterministic():
    a, b = run_schedule(12345), run_schedule(12345)
    assert (a.events, a.committed, a.terms) == (b.events, b.committed, b.terms)


@pytest.mark.parametrize("seed", range(7000, 7100))
def test_random_schedules_on_the_sqlite_raft_log(seed, tmp_path):
    """The same schedules with every node's Raft log, hard state and snapshots in SQLite,
    reopened from the file at every restart."""
    out = run_schedule(seed, durable_dir=tmp_path)
    assert out.committed > 0
