"""`crmledger campaign`: a seeded random fault schedule against real nodes on separate
hosts, under client load; then heal, check the history, verify every data folder.

The schedule (which faults, on which nodes, for how long) follows from the seed alone, so
a failing run is replayed with `--seed`; what the processes and the network then do in
between is not deterministic, so a replay repeats the faults, not every interleaving.
"""
from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from crmledger.ledger.keys import SigningKey
from crmledger.node.bench.localcluster import wait_for
from crmledger.node.faults.history import History, Verdict, chain_of, check
from crmledger.node.faults.nemesis import Nemesis, NetCluster
from crmledger.node.faults.netns import Hosts
from crmledger.node.faults.workload import run_clients

CONVERGE_S = 60.0   # the bound on the time to converge after the last heal


@dataclass
class Outcome:
    seed: int
    nodes: int
    seconds: float
    verdict: Verdict
    faults: int
    fault_log: list[tuple[float, str]]
    unavailable: list[tuple[float, float]]
    converge_s: float | None
    unverified: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.converge_s is not None and not self.unverified

    def report(self) -> str:
        v = self.verdict
        windows = ", ".join(f"{a:.1f}–{b:.1f} s" for a, b in self.unavailable[:8])
        more = f" (+{len(self.unavailable) - 8} more)" if len(self.unavailable) > 8 else ""
        rows = [("seed", self.seed), ("nodes", self.nodes), ("run", f"{self.seconds:.0f} s"),
                ("operations", v.ops), ("acknowledged", v.acked), ("refused", v.failed),
                ("unknown outcome", f"{v.unknown} ({v.unknown_committed} of them committed)"),
                ("lost", len(v.lost)), ("duplicated", len(v.duplicated)), ("forks", len(v.forks)),
                ("stale status reads", f"{len(v.stale_reads)} of {v.reads}"), ("faults injected", self.faults),
                ("unavailable > 1 s", f"{len(self.unavailable)} windows, "
                                      f"{sum(b - a for a, b in self.unavailable):.1f} s in all"
                                      + (f": {windows}{more}" if windows else "")),
                ("time to converge", "not within %d s" % CONVERGE_S if self.converge_s is None
                 else f"{self.converge_s:.2f} s"),
                ("verify", "every data folder passes" if not self.unverified else "; ".join(self.unverified)),
                ("verdict", "PASS" if self.ok else f"FAIL: replay with --seed {self.seed}")]
        w = max(len(k) for k, _ in rows)
        out = [f"{k:<{w}}  {val}" for k, val in rows]
        out += [f"  ! {p}" for p in v.problems()[:20]]
        return "\n".join(out)


def schedule(seed: int, nodes: int, seconds: float) -> list[tuple[float, str, tuple, float]]:
    """[(start, fault, args, hold)] for a run of `seconds`: one fault at a time, each held
    1–4 s, then healed and left quiet 1–2 s. `leader` in args means whichever node leads
    when the fault starts."""
    rng = random.Random(seed)
    everyone = list(range(1, nodes + 1))
    out, t = [], 2.0
    while True:
        hold = rng.uniform(1.0, 4.0)
        if t + hold > seconds - 2:
            return out
        kind = rng.choices(["partition", "isolate-leader", "one-way", "one-way-leader", "loss", "delay", "kill",
                            "kill-leader", "pause", "terminate"], [3, 2, 2, 2, 2, 2, 2, 2, 2, 1])[0]
        if kind == "partition":
            minority = rng.sample(everyone, rng.randint(1, (nodes - 1) // 2))
            args: tuple = (tuple(sorted(minority)),)
        elif kind in ("one-way",):
            args = tuple(rng.sample(everyone, 2))
        elif kind == "one-way-leader":
            args = (rng.choice(everyone),)   # the node cut off from what the leader sends
        elif kind == "loss":
            args = (rng.choice([10, 20, 30]),)
        elif kind == "delay":
            args = (*rng.sample(everyone, 2), rng.choice([50, 200, 800]))
        elif kind in ("kill", "pause", "terminate"):
            args = (rng.choice(everyone),)
        else:
            args = ()
        out.append((t, kind, args, hold))
        t += hold + rng.uniform(1.0, 2.0)


def _apply(nem: Nemesis, c: NetCluster, kind: str, args: tuple) -> None:
    everyone = set(range(1, c.n + 1))
    leader = c.leader() if kind in ("isolate-leader", "one-way-leader", "kill-leader") else None
    if kind == "partition":
        nem.partition(set(args[0]), everyone - set(args[0]))
    elif kind == "isolate-leader" and leader:
        nem.partition({leader}, everyone - {leader})
    elif kind == "one-way":
        nem.one_way(*args)
    elif kind == "one-way-leader" and leader and args[0] != leader:
        nem.one_way(leader, args[0])
    elif kind == "loss":
        nem.loss(args[0])
    elif kind == "delay":
        nem.delay(*args)
    elif kind == "kill" or (kind == "kill-leader" and leader):
        nem.kill(args[0] if kind == "kill" else leader)
    elif kind == "pause":
        nem.pause(args[0])
    elif kind == "terminate":
        nem.terminate(args[0])


async def _nemesis(nem: Nemesis, c: NetCluster, plan, t0: float, progress) -> None:
    for k, (start, kind, args, hold) in enumerate(plan):
        await asyncio.sleep(max(0.0, t0 + start - time.monotonic()))
        done = len(nem.log)
        await asyncio.to_thread(_apply, nem, c, kind, args)
        if progress:
            progress(k + 1, len(plan), nem.log[-1][1] if len(nem.log) > done else f"{kind}: no leader to aim at")
        await asyncio.sleep(hold)
        await asyncio.to_thread(nem.heal)


def run_campaign(seed: int, nodes: int, seconds: float, folder: Path | None = None, writers: int = 8,
                 progress=None) -> Outcome:
    plan = schedule(seed, nodes, seconds)
    with tempfile.TemporaryDirectory(prefix="crmledger-campaign-") as tmp, Hosts(nodes) as net:
        c = NetCluster(Path(folder or tmp) / f"seed{seed}", net)
        nem = Nemesis(c)
        try:
            c.start_all(60)
            key = SigningKey.from_pem((c.dir / "keys" / "org1.pem").read_bytes())
            history = History()
            nem.t0 = history.t0

            async def both() -> None:
                t0 = time.monotonic()
                # bounded in count as in time: 100 operations a second at most, so that a
                # long run keeps writing to its end
                await asyncio.gather(run_clients([c.url(i) for i in range(1, nodes + 1)], key, history, seconds,
                                                 writers=writers, seed=seed, max_ops=max(100_000, int(100 * seconds))),
                                     _nemesis(nem, c, plan, t0, progress))
            asyncio.run(both())
            nem.heal()
            t_heal = time.monotonic()
            try:
                c.wait_leader(CONVERGE_S)
                acked = [o.tx_id for o in history.acked()]
                wait_for(lambda: c.converged() and all(c.get(i, f"/v1/tx/{acked[-1]}")["status"] == "committed"
                                                       for i in c.procs) if acked else c.converged(),
                         CONVERGE_S, "every node at the same head")
                converge_s: float | None = time.monotonic() - t_heal
            except TimeoutError:
                converge_s = None
            verdict = check(history, {i: chain_of(c.get, i) for i in range(1, nodes + 1)})
        finally:
            nem.close()
            c.stop_all()
        from crmledger.node.ops.verify import verify
        unverified = [f"node{i}: {rep.reason}" for i in range(1, nodes + 1)
                      for rep in [verify(c.dir / f"node{i}", workers=1)] if not rep.ok]
        return Outcome(seed, nodes, seconds, verdict, nem.faults, nem.log, history.unavailable(), converge_s,
                       unverified)


def main(seed: int | None, nodes: int, minutes: float, keep: str | None) -> int:
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"campaign: seed {seed}, {nodes} nodes, {minutes:g} min (replay: crmledger campaign --seed {seed} "
          f"--nodes {nodes} --minutes {minutes:g})", file=sys.stderr)

    def progress(k: int, total: int, last: str) -> None:
        print(f"\r[{k}/{total} faults] {last:<50}", end="", file=sys.stderr, flush=True)
    out = run_campaign(seed, nodes, minutes * 60, Path(keep) if keep else None, progress=progress)
    print(file=sys.stderr)
    print(out.report())
    return 0 if out.ok else 1
