"""Deliberate mutations of the Raft core, each applied to a scratch copy of
`consensus/`: which ones do the random schedules of the simulator alone catch?

    python -m tests.sim.mutate                       # every mutation, up to 2,000 schedules each
    python -m tests.sim.mutate --schedules 500 -j 2 commit-rule vote-restriction

A mutation is caught when a schedule fails (an invariant broken, or no progress once the
network heals); the first failing seed is printed and replays with the mutation applied.
Safety mutations break a guarantee (one leader per term, log matching, leader
completeness, state machine safety) and must all be caught; the others cost
availability only, and are listed for what the schedules show of them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutation:
    name: str
    kind: str       # safety | liveness
    file: str       # under consensus/
    old: str
    new: str
    what: str


MUTATIONS = [
    Mutation("commit-rule", "safety", "log.py",
             "if max_index > self.committed and self.term(max_index) == term:",
             "if max_index > self.committed:",
             "a leader commits an entry of an earlier term by counting replicas (Figure 8)"),
    Mutation("vote-restriction", "safety", "raft.py",
             "if can_vote and self.log.is_up_to_date(m.index, m.log_term):",
             "if can_vote:",
             "votes go to candidates whose log is behind"),
    Mutation("truncate-on-conflict", "safety", "log.py",
             "            if not self.match_term(e.index, e.term):\n                return e.index",
             "            if self.term(e.index) is None:\n                return e.index",
             "a follower keeps its entries that conflict with the leader's"),
    Mutation("snapshot-install", "safety", "raft.py",
             "        if snap.index <= self.log.committed:\n            return False\n",
             "",
             "a follower installs a snapshot older than what it committed"),
    Mutation("pre-vote", "safety", "raft.py",
             "                if self.state == StateType.PRE_CANDIDATE:\n"
             "                    self._campaign(Campaign.ELECTION)\n",
             "                if self.state == StateType.PRE_CANDIDATE:\n"
             "                    self.become_leader()\n",
             "a node that wins a pre-vote leads without a real election"),
    Mutation("learner-in-quorum", "safety", "raft.py",
             "committed_index(self.conf.voters, match)",
             "committed_index(self.conf.voters | self.conf.learners, match)",
             "a learner's acknowledgement counts toward the commit quorum"),
    Mutation("persist-before-send", "safety", "rawnode.py",
             "now = tuple(m for m in r.msgs if not m.needs_durability)",
             "now = tuple(r.msgs)",
             "votes and acknowledgements are sent before the write that backs them"),
    Mutation("read-index-quorum", "safety", "raft.py",
             "if vote_result(self.conf.voters, dict.fromkeys(read[1], True)) != VoteResult.WON:",
             "if False:",
             "a leader answers a read index without a quorum confirming that it still leads"),
    Mutation("read-index-term", "safety", "raft.py",
             "        if self.log.term(self.log.committed) != self.term:\n"
             "            raise ProposalDropped(\"this leader has not committed an entry of its term yet\")\n",
             "",
             "a new leader answers a read index before it knows the commit index"),
    Mutation("check-quorum", "liveness", "raft.py",
             "            if self.cfg.check_quorum and not self._quorum_active():\n"
             "                self.become_follower(self.term, NONE)\n"
             "                return\n",
             "",
             "a leader cut off from its quorum never steps down"),
    Mutation("learner-promotion", "liveness", "raft.py",
             "pr.match > 0 and pr.match + self.cfg.promote_max_lag >= self.log.committed",
             "True",
             "a learner is promoted before it has caught up"),
]

_RUN = """
import sys
import crmledger.consensus
assert crmledger.consensus.__file__.startswith({root!r}), crmledger.consensus.__file__
from tests.sim.chaos import ScheduleFailed, run_schedule
for seed in range({first}, {first} + {count}):
    try:
        run_schedule(seed)
    except ScheduleFailed as e:
        print("CAUGHT", seed, str(e).splitlines()[0].split(": ", 1)[1][:160])
        sys.exit(0)
print("MISSED")
"""


def scratch_copy(m: Mutation, where: Path) -> Path:
    """A tree where `crmledger.consensus` is the mutated copy and `tests.sim` the
    simulator; everything else comes from the installed project."""
    root = where / m.name
    shutil.copytree(ROOT / "consensus", root / "crmledger" / "consensus")
    shutil.copytree(ROOT / "tests" / "sim", root / "tests" / "sim")
    (root / "tests" / "__init__.py").write_text("")
    f = root / "crmledger" / "consensus" / m.file
    src = f.read_text()
    if src.count(m.old) != 1:
        raise SystemExit(f"mutation {m.name}: its code is not found exactly once in consensus/{m.file}")
    f.write_text(src.replace(m.old, m.new))
    return root


def _run(args: tuple[Mutation, str, int, int]) -> tuple[Mutation, str]:
    m, where, first, count = args
    root = scratch_copy(m, Path(where))
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", _RUN.format(root=str(root), first=first, count=count)],
                         cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return m, "ERROR " + (out.stderr.strip().splitlines() or ["?"])[-1]
    return m, out.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim.mutate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="mutations to try (default: all)")
    ap.add_argument("--schedules", type=int, default=2000, help="schedules tried per mutation at most")
    ap.add_argument("--first", type=int, default=0, help="first seed")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in a.names if n not in known]
    if unknown:
        ap.error(f"unknown mutations {unknown}; known: {', '.join(known)}")
    chosen = [known[n] for n in a.names] or MUTATIONS
    from concurrent.futures import ThreadPoolExecutor
    rows = []
    with tempfile.TemporaryDirectory(prefix="crmledger-mutants-") as where, \
            ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for k, (m, res) in enumerate(pool.map(_run, [(m, where, a.first, a.schedules) for m in chosen]), 1):
            print(f"\r{k}/{len(chosen)} mutations tried", end="", file=sys.stderr, flush=True)
            rows.append((m, res))
    print(file=sys.stderr)
    missed_safety = 0
    print(f"{'mutation':<22} {'kind':<9} {'result':<40} what it breaks")
    for m, res in rows:
        if res.startswith("CAUGHT"):
            _, seed, why = res.split(" ", 2)
            shown = f"caught at seed {seed}"
        else:
            shown, why = (res if res.startswith("ERROR") else f"missed in {a.schedules} schedules"), ""
            missed_safety += m.kind == "safety"
        print(f"{m.name:<22} {m.kind:<9} {shown:<40} {m.what}" + (f"\n{'':<33}-> {why}" if why else ""))
    caught = sum(r.startswith("CAUGHT") for _, r in rows)
    print(f"{caught} of {len(rows)} caught; safety mutations missed: {missed_safety}")
    return 1 if missed_safety else 0


if __name__ == "__main__":
    sys.exit(main())
