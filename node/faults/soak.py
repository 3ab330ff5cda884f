"""`crmledger soak`: a local 3-node cluster under a steady load of ~70% of what it was
measured to commit at most, for a set time, while the leader is killed (SIGKILL) every
`kill_every` seconds and started again. Per minute: committed tx/s, p99 commit latency,
each node's memory (its process and its reader processes); at the end, every
acknowledged transaction is looked for on every node (0 lost is the promise). Printed as
a table, and drawn as a PNG chart."""
from __future__ import annotations

import asyncio
import math
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import sign_tx
from crmledger.node.bench.localcluster import LocalCluster
from crmledger.node.faults.history import History, chain_of, check
from crmledger.node.faults.workload import write

MAX_IN_FLIGHT = 512   # the open-loop client's bound; a send beyond it is counted as skipped


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the node's reader processes), MB."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


@dataclass
class Minute:
    committed: int = 0
    latencies: list[float] = field(default_factory=list)
    memory: dict[int, float] = field(default_factory=dict)
    kills: int = 0
    skipped: int = 0


def _envelopes(key: SigningKey, tag: str):
    n = 0
    while True:
        cid = f"{tag}-{n}"
        n += 1
        yield sign_tx(key, "customer.register", "org1", cid, int(time.time() * 1000),
                      {"customer_id": cid, "customer_key": None, "profile_hash": "ab" * 32})


async def _measure_max(urls: list[str], key: SigningKey, seconds: float) -> float:
    """Committed tx/s with 64 clients sending one at a time and waiting for the commit."""
    history = History()
    envs = _envelopes(key, "max")
    until = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        async def client(k: int) -> None:
            while time.monotonic() < until:
                await write(session, urls[k % len(urls)], next(envs), history, k % len(urls) + 1)
        t0 = time.monotonic()
        await asyncio.gather(*(client(k) for k in range(64)))
        return len(history.acked()) / (time.monotonic() - t0)


async def _steady(c: LocalCluster, key: SigningKey, rate: float, seconds: float, kill_every: float,
                  history: History, minutes: list[Minute], progress) -> None:
    urls = [c.url(i) for i in range(1, c.n + 1)]
    envs = _envelopes(key, "soak")
    t0 = time.monotonic()
    in_flight: set[asyncio.Task] = set()
    loop = asyncio.get_running_loop()

    last = max(0, math.ceil(seconds / 60) - 1)   # what ends after the run counts in its last minute

    def minute() -> Minute:
        k = min(last, int((time.monotonic() - t0) // 60))
        while len(minutes) <= k:
            minutes.append(Minute())
        return minutes[k]

    async def one(session: aiohttp.ClientSession) -> None:
        node = random.randrange(len(urls))
        op = await write(session, urls[node], next(envs), history, node + 1)
        if op.outcome == "ok":
            m = minute()
            m.committed += 1
            m.latencies.append(op.done - op.invoked)

    async def killer() -> None:
        while True:
            await asyncio.sleep(kill_every)
            if time.monotonic() - t0 > seconds - 5:
                return
            lead = await loop.run_in_executor(None, c.leader)
            if lead is None:
                continue
            await loop.run_in_executor(None, c.stop, lead, signal.SIGKILL)
            minute().kills += 1
            await asyncio.sleep(5)
            c.start(lead)

    async def sampler() -> None:
        while time.monotonic() - t0 < seconds:
            m = minute()
            for i, p in list(c.procs.items()):
                m.memory[i] = max(m.memory.get(i, 0.0), _rss_mb(p.pid))
            if progress:
                progress(time.monotonic() - t0, seconds, len(history.acked()))
            await asyncio.sleep(5)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)) as session:
        helpers = [asyncio.create_task(killer()), asyncio.create_task(sampler())]
        k = 0
        while (now := time.monotonic()) - t0 < seconds:
            due = t0 + k / rate
            if due > now:
                await asyncio.sleep(due - now)
            k += 1
            if len(in_flight) >= MAX_IN_FLIGHT:
                minute().skipped += 1
                continue
            task = asyncio.create_task(one(session))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight, return_exceptions=True)
        for h in helpers:
            h.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)


def _p99(xs: list[float]) -> float | None:
    return statistics.quantiles(xs, n=100)[98] if len(xs) >= 2 else (xs[0] if xs else None)


def _chart(minutes: list[Minute], n: int, out: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (pip install 'crmledger[plot]')"
    xs = list(range(1, len(minutes) + 1))
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(xs, [m.committed / 60 for m in minutes], marker="o")
    axes[0].set_ylabel("committed tx/s")
    axes[1].plot(xs, [(_p99(m.latencies) or 0) * 1000 for m in minutes], marker="o", color="tab:red")
    axes[1].set_ylabel("p99 commit latency (ms)")
    for i in range(1, n + 1):
        axes[2].plot(xs, [m.memory.get(i, float("nan")) for m in minutes], marker="o", label=f"node{i}")
    axes[2].set_ylabel("memory (MB)")
    axes[2].set_ylim(bottom=0)
    axes[2].set_xticks(xs)
    axes[2].set_xlabel("minute")
    axes[2].legend()
    for x, m in zip(xs, minutes):
        if m.kills:
            for ax in axes:
                ax.axvline(x, color="grey", alpha=0.3)
    fig.suptitle("crmledger soak: 3 nodes, leader killed (grey: minutes with a kill)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return None


def run(minutes_total: float, kill_every: float, load: float, chart: str, measure_s: float = 20.0) -> int:
    seconds = minutes_total * 60
    with tempfile.TemporaryDirectory(prefix="crmledger-soak-") as tmp:
        c = LocalCluster(Path(tmp), 3)
        try:
            c.start_all()
            key = SigningKey.from_pem((c.dir / "keys" / "org1.pem").read_bytes())
            urls = [c.url(i) for i in range(1, 4)]
            print(f"soak: measuring the cluster's maximum for {measure_s:.0f} s ...", file=sys.stderr)
            top = asyncio.run(_measure_max(urls, key, measure_s))
            rate = max(1.0, top * load)
            print(f"soak: maximum {top:.0f} tx/s; {rate:.0f} tx/s ({load:.0%}) for {minutes_total:g} min, "
                  f"the leader killed every {kill_every:g} s", file=sys.stderr)
            history, minutes = History(), []

            def progress(t: float, total: float, acked: int) -> None:
                print(f"\r[{t:5.0f}/{total:.0f} s] {acked} acknowledged", end="", file=sys.stderr, flush=True)
            asyncio.run(_steady(c, key, rate, seconds, kill_every, history, minutes, progress))
            print(file=sys.stderr)
            for i in range(1, 4):
                if i not in c.procs:
                    c.start(i)
            c.wait_leader(60)
            c.wait_for_converged(120)
            verdict = check(history, {i: chain_of(c.get, i) for i in range(1, 4)})
        finally:
            c.stop_all()
    print(f"{'minute':>6} {'tx/s':>8} {'p99 ms':>8} {'kills':>5} {'skipped':>7}  memory MB (node1 node2 node3)")
    for k, m in enumerate(minutes, 1):
        p99 = _p99(m.latencies)
        mem = " ".join(f"{m.memory.get(i, float('nan')):6.0f}" for i in range(1, 4))
        print(f"{k:>6} {m.committed / 60:>8.0f} {p99 * 1000 if p99 else float('nan'):>8.0f} {m.kills:>5} "
              f"{m.skipped:>7}  {mem}")
    print(f"target {rate:.0f} tx/s ({load:.0%} of {top:.0f}); operations {verdict.ops}, acknowledged "
          f"{verdict.acked}, unknown {verdict.unknown}, lost {len(verdict.lost)}, duplicated "
          f"{len(verdict.duplicated)}, forks {len(verdict.forks)}")
    why = _chart(minutes, 3, Path(chart))
    print(why or f"chart: {chart}")
    return 0 if verdict.ok else 1

