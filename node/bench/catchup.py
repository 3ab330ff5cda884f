"""`crmledger bench-catchup`: a long chain on a local 3-node cluster, and what it costs.

One follower is stopped, then `--txs` transactions are committed in batches through the
other two. Printed: the commit figures on the empty chain and again at the end (the
same load shapes: are they flat with chain length?), each node's memory before and
after, the time the stopped node takes to rejoin and serve at the head (Raft snapshot,
then block transfer with every signature checked), and the time a node restarted with
the whole chain takes to serve again."""
from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from crmledger.node.bench.cluster import _drive, _pct, _pre_sign, PhaseMeter, Progress
from crmledger.node.bench.localcluster import LocalCluster, wait_for

CHUNK = 50_000   # transactions signed and sent at a time


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _batches(envs: list[bytes], size: int = 100) -> list[bytes]:
    return [b"[" + b",".join(envs[i:i + size]) + b"]" for i in range(0, len(envs), size)]


def _measure(c: LocalCluster, live: list[int], pem: bytes, tag: str, runs: int) -> dict:
    """Single submissions at c=16 and batches at c=16 through the live nodes: median of
    `runs` of tx/s, p50, p99 and CPU µs per transaction."""
    urls = [c.url(i) for i in live]
    out = {}
    for mode, n in (("single", 2000), ("batch", 12000)):
        rates, p50s, p99s, cpus = [], [], [], []
        for r in range(runs):
            envs = _pre_sign(pem, f"{tag}{mode}{r}t{time.time_ns()}", n)
            items, path, wait = ((envs, "/v1/tx?wait=commit", None) if mode == "single"
                                 else (_batches(envs), "/v1/tx/batch", "/v1/tx?wait=commit"))
            target = max(c.status(i)["height"] for i in live)
            meter = PhaseMeter(c)
            t0 = time.monotonic()
            _, lat = asyncio.run(_drive(urls, items, 16, path, wait))
            wait_for(lambda: len({c.status(i)["height"] for i in live}) == 1 and c.status(live[0])["height"] > target,
                     120, "the live nodes to commit", 0.01)
            rates.append(n / (time.monotonic() - t0))
            p50s.append(_pct(lat, 0.5))
            p99s.append(_pct(lat, 0.99))
            cpus.append(meter.done(n)[0])
        out[mode] = tuple(statistics.median(x) for x in (rates, p50s, p99s, cpus))
    return out


def run(txs: int = 1_000_000, runs: int = 3, out=sys.stdout) -> dict:
    if txs < 1000:
        raise ValueError("--txs must be at least 1,000")
    with tempfile.TemporaryDirectory(prefix="crmledger-catchup-") as tmp:
        c = LocalCluster(Path(tmp) / "cluster", 3)
        try:
            leader = c.start_all()
            away = next(i for i in (3, 2, 1) if i != leader)
            live = [i for i in (1, 2, 3) if i != away]
            pem = (c.dir / "keys" / "org1.pem").read_bytes()
            print(f"3 local nodes; node{away} stopped while {txs:,} transactions commit", file=sys.stderr)
            c.stop(away)
            rss0 = {i: _rss_mb(c.procs[i].pid) for i in live}
            empty = _measure(c, live, pem, "empty", runs)
            prog = Progress(-(-txs // CHUNK))
            t0, sent = time.monotonic(), 0
            while sent < txs:
                n = min(CHUNK, txs - sent)
                envs = _pre_sign(pem, f"load{sent}t{time.time_ns()}", n)
                asyncio.run(_drive([c.url(i) for i in live], _batches(envs), 16, "/v1/tx/batch", "/v1/tx?wait=commit"))
                sent += n
                prog.step(f"{sent:,} sent, {sent / (time.monotonic() - t0):,.0f} tx/s")
            wait_for(lambda: len({c.status(i)["height"] for i in live}) == 1, 300, "the live nodes to agree", 0.1)
            load_s = time.monotonic() - t0
            prog.close()
            full = _measure(c, live, pem, "full", runs)
            rss1 = {i: _rss_mb(c.procs[i].pid) for i in live}
            # the node that was away rejoins
            chain = c.status(live[0])
            head = chain["height"]
            print(f"node{away} rejoins at height 0; the head is at {head:,}", file=sys.stderr)
            t1 = time.monotonic()
            c.start(away)
            wait_for(lambda: c.status(away)["height"] >= head, 3600, f"node{away} to reach the head", 0.1)
            rejoin_s = time.monotonic() - t1
            # a node restarted with the whole chain
            again = live[0]
            c.stop(again)
            t2 = time.monotonic()
            c.start(again)
            wait_for(lambda: c.status(again)["height"] >= head, 600, f"node{again} to serve again", 0.02)
            restart_s = time.monotonic() - t2
        finally:
            c.stop_all()
    n_total = txs + 2 * runs * 14000
    print(f"chain: {chain['height']:,} blocks, about {n_total:,} transactions "
          f"(loaded at {txs / load_s:,.0f} tx/s in batches of 100, c=16)", file=out)
    print(f"{'load (c=16, two nodes)':<26} {'empty chain':>30} {'at the end':>30}", file=out)
    for mode in ("single", "batch"):
        cells = [f"{r:,.0f} tx/s p99 {p99 * 1000:,.0f} ms {cpu:,.0f} µs" for r, _, p99, cpu in (empty[mode], full[mode])]
        print(f"{mode:<26} {cells[0]:>30} {cells[1]:>30}", file=out)
    for i in live:
        print(f"node{i} memory: {rss0[i]:,.0f} MB on the empty chain, {rss1[i]:,.0f} MB at the end", file=out)
    print(f"node{away}, away during the load, rejoined and served at the head in {rejoin_s:,.1f} s "
          f"({n_total / rejoin_s:,.0f} tx/s; target < 60 s for 1,000,000)", file=out)
    print(f"node{again}, restarted with the whole chain, served at the head in {restart_s:,.2f} s (target < 5 s)",
          file=out)
    return {"load_tx_s": txs / load_s, "empty": empty, "full": full, "rss0": rss0, "rss1": rss1,
            "rejoin_s": rejoin_s, "restart_s": restart_s}
