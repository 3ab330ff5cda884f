"""The history of a run under faults, and its checker.

Every client operation is recorded: when it was invoked, on which node, its tx_id (known
before sending: it is the hash of the signed envelope) and how it ended:

- `ok`: the node answered that it committed (`?wait=commit`, 200, or 409
  already_committed);
- `fail`: the node refused it for good (a 400: the envelope itself is wrong);
- `unknown`: anything else (a timeout, a dropped connection, a 503, a 504): it may or may
  not commit.

After the faults stop and the cluster heals, `check` holds the run to the promise: every
acknowledged transaction is committed on every node; no transaction is committed twice; a
refused one is not committed; every node holds the same chain. Reads of `/v1/tx/{id}`
made during the run, after the commit of `id` was acknowledged, must never have said it
was not committed (`pending` or `unknown`); they are recorded as they happen.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Op:
    tx_id: str
    node: int
    invoked: float
    done: float | None = None
    outcome: str | None = None   # ok, fail, unknown
    code: str | None = None


@dataclass
class History:
    t0: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    stale_reads: list[str] = field(default_factory=list)
    reads: int = 0

    def invoke(self, tx_id: str, node: int) -> Op:
        op = Op(tx_id, node, time.monotonic())
        self.ops.append(op)
        return op

    @staticmethod
    def end(op: Op, outcome: str, code: str | None = None) -> None:
        op.done, op.outcome, op.code = time.monotonic(), outcome, code

    def acked(self) -> list[Op]:
        return [o for o in self.ops if o.outcome == "ok"]

    def read_seen(self, tx_id: str, node: int, status: str) -> None:
        """A status read of an acknowledged transaction."""
        self.reads += 1
        if status in ("pending", "unknown"):
            self.stale_reads.append(f"node{node} said {status} for {tx_id[:12]} after its commit was acknowledged")

    def unavailable(self, gap: float = 1.0) -> list[tuple[float, float]]:
        """Windows (from, to; seconds into the run) longer than `gap` in which no
        operation was acknowledged."""
        times = sorted(o.done - self.t0 for o in self.acked())
        end = max((o.done for o in self.ops if o.done), default=self.t0) - self.t0
        out, last = [], 0.0
        for t in times + [end]:
            if t - last > gap:
                out.append((last, t))
            last = max(last, t)
        return out


@dataclass
class Verdict:
    ops: int
    acked: int
    failed: int
    unknown: int
    unknown_committed: int
    lost: list[str]
    duplicated: list[str]
    refused_committed: list[str]
    forks: list[str]
    stale_reads: list[str]
    reads: int

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.refused_committed or self.forks or self.stale_reads)

    def problems(self) -> list[str]:
        out = [f"lost (acknowledged, not committed on node{n}): {t[:12]}" for t, n in
               (x.split("@") for x in self.lost)]
        out += [f"committed twice: {t}" for t in self.duplicated]
        out += [f"refused, yet committed: {t[:12]}" for t in self.refused_committed]
        return out + self.forks + self.stale_reads


def chain_of(get, node: int) -> tuple[list[str], list[str]]:
    """(block hashes, tx_ids in chain order) of one node, through its API; `get(node,
    path)` returns decoded JSON."""
    height = get(node, "/v1/blocks/latest")["height"]
    hashes, txs = [], []
    for h in range(1, height + 1):
        b = get(node, f"/v1/blocks/{h}")
        hashes.append(b["hash"])
        txs += b["txs"]
    return hashes, txs


def check(history: History, chains: dict[int, tuple[list[str], list[str]]]) -> Verdict:
    """Hold the history to the promise, given every node's chain (`chain_of`)."""
    forks = []
    ref_node, (ref_hashes, _) = max(chains.items(), key=lambda kv: len(kv[1][0]))
    for n, (hashes, _) in chains.items():
        if hashes != ref_hashes[:len(hashes)]:
            at = next(h for h, (a, b) in enumerate(zip(hashes, ref_hashes), 1) if a != b)
            forks.append(f"node{n} and node{ref_node} differ at height {at}")
        elif len(hashes) != len(ref_hashes):
            forks.append(f"node{n} stopped at height {len(hashes)}, node{ref_node} is at {len(ref_hashes)}")
    counts = {n: Counter(txs) for n, (_, txs) in chains.items()}
    lost = [f"{o.tx_id}@{n}" for o in history.acked() for n, c in counts.items() if c[o.tx_id] == 0]
    duplicated = sorted({t for c in counts.values() for t, k in c.items() if k > 1})
    first = counts[ref_node]
    refused = [o.tx_id for o in history.ops if o.outcome == "fail" and first[o.tx_id]]
    unknown = [o for o in history.ops if o.outcome in ("unknown", None)]
    return Verdict(ops=len(history.ops), acked=len(history.acked()),
                   failed=sum(o.outcome == "fail" for o in history.ops), unknown=len(unknown),
                   unknown_committed=sum(1 for o in unknown if first[o.tx_id]), lost=lost, duplicated=duplicated,
                   refused_committed=refused, forks=forks, stale_reads=list(history.stale_reads),
                   reads=history.reads)
