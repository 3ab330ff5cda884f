"""`crmledger bench-failover`: how long a local 3-node cluster commits nothing when its
leader dies. The leader is killed (SIGKILL) `--kills` times; each time a client submits
fresh transactions to the other nodes, one at a time (`?wait=commit`), and the time from
the kill to the first commit acknowledged to it is measured. The killed node is then
started again and the cluster left to converge before the next kill. For contrast, the
leader is also stopped (SIGSTOP: no connection ends, so the followers wait out the
election timeout) `--stops` times."""
from __future__ import annotations

import json
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from crmledger.node.bench.cluster import Progress, _pct, _pre_sign
from crmledger.node.bench.localcluster import LocalCluster


def _first_commit(c: LocalCluster, nodes: list[int], envs, since: float, limit: float = 30.0) -> float:
    """Submit `envs` one at a time round-robin over `nodes` until one is acknowledged
    committed: seconds from `since`."""
    i = 0
    while time.monotonic() - since < limit:
        body = next(envs)
        req = urllib.request.Request(c.url(nodes[i % len(nodes)], "/v1/tx?wait=commit&timeout=2"), data=body,
                                     method="POST", headers={"Content-Type": "application/json"})
        i += 1
        try:
            with urllib.request.urlopen(req, timeout=3) as r:
                if r.status == 200 and json.loads(r.read()).get("status") == "committed":
                    return time.monotonic() - since
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.005)
    raise TimeoutError(f"no commit within {limit} s of the leader's failure")


def _fail(c: LocalCluster, sig: int, envs) -> float:
    c.wait_for_converged()
    leader = c.wait_leader()
    others = [i for i in c.procs if i != leader]
    p = c.procs[leader]
    t0 = time.monotonic()
    p.send_signal(sig)
    try:
        return _first_commit(c, others, envs, t0)
    finally:
        if sig == signal.SIGSTOP:
            p.send_signal(signal.SIGCONT)
        else:
            p.wait(10)
            c.procs.pop(leader)
            c.start(leader)


def run(kills: int = 20, stops: int = 3, out=sys.stdout) -> dict:
    if kills < 1 or stops < 0:
        raise ValueError("--kills must be at least 1 and --stops at least 0")
    prog = Progress(kills + stops)
    with tempfile.TemporaryDirectory(prefix="crmledger-failover-") as tmp:
        c = LocalCluster(Path(tmp) / "cluster", 3)
        try:
            c.start_all()
            pem = (c.dir / "keys" / "org1.pem").read_bytes()
            envs = iter(_pre_sign(pem, f"failover{time.time_ns()}", 200 * (kills + stops)))
            killed, stopped = [], []
            for k in range(kills):
                killed.append(_fail(c, signal.SIGKILL, envs))
                prog.step(f"kill {k + 1}: {killed[-1] * 1000:,.0f} ms")
            for k in range(stops):
                stopped.append(_fail(c, signal.SIGSTOP, envs))
                prog.step(f"stop {k + 1}: {stopped[-1] * 1000:,.0f} ms")
            tick_ms = c.config(1).raft.tick_ms
            election = c.config(1).raft.election_ticks
        finally:
            c.stop_all()
    prog.close()
    ms = [x * 1000 for x in killed]
    print("3 local nodes; from the leader's failure to the first commit acknowledged to a client", file=out)
    print(f"leader killed (SIGKILL) x{kills}: median {statistics.median(ms):,.0f} ms, p90 {_pct(ms, 0.9):,.0f} ms, "
          f"max {max(ms):,.0f} ms (target: median < 500 ms)", file=out)
    print(f"  each: {', '.join(f'{x:,.0f}' for x in ms)}", file=out)
    if stopped:
        st = [x * 1000 for x in stopped]
        print(f"leader stopped (SIGSTOP) x{stops}: median {statistics.median(st):,.0f} ms, max {max(st):,.0f} ms "
              f"(no connection ends: the election timeout, {election} to {2 * election} ticks of {tick_ms} ms, "
              f"applies)", file=out)
    return {"killed_ms": ms, "stopped_ms": [x * 1000 for x in stopped]}
