"""`crmledger bench`: a local 3-node cluster driven over HTTP.

Transactions are signed ahead of time (in worker processes), then sent at concurrency
1, 16 and 64, one per request (`?wait=commit`) and in batches (`/v1/tx/batch`). A phase
ends when every node has committed everything it was sent; it reports committed tx/s and
commit latency p50/p99, each the median of several runs. With `--reference etcd` a local
3-node etcd (Debian's etcd-server) is driven through its HTTP gateway (`/v3/kv/put`,
300-byte values) with the same load shape by the same client, and the ratios are printed.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import sign_tx
from crmledger.node.bench.localcluster import LocalCluster, free_ports, wait_for
from crmledger.node.metrics import STAGES

T_PHASE = 60.0  # no phase runs longer than this


class Progress:
    def __init__(self, total: int, out=sys.stderr) -> None:
        self.total, self.done, self.out, self.t0 = total, 0, out, time.monotonic()

    def step(self, label: str) -> None:
        self.done += 1
        n = 30 * self.done // self.total
        print(f"\r[{'#' * n}{'.' * (30 - n)}] {self.done}/{self.total} {label:<40}", end="", file=self.out, flush=True)

    def close(self) -> None:
        print(f"\r{' ' * 90}\r", end="", file=self.out, flush=True)


def _sign_chunk(args: tuple[bytes, str, int, int]) -> list[bytes]:
    pem, tag, first, count = args
    key = SigningKey.from_pem(pem)
    now = int(time.time() * 1000)
    return [json.dumps(sign_tx(key, "customer.register", "org1", f"{tag}-{i}", now, {
        "customer_id": f"{tag}-{i}", "customer_key": None,
        "profile_hash": hashlib.sha256(f"{tag}-{i}".encode()).hexdigest()})).encode()
        for i in range(first, first + count)]


def _pre_sign(pem: bytes, tag: str, n: int) -> list[bytes]:
    chunk = 500
    jobs = [(pem, tag, i, min(chunk, n - i)) for i in range(0, n, chunk)]
    with ProcessPoolExecutor(max(1, (os.cpu_count() or 2))) as pool:
        return [e for part in pool.map(_sign_chunk, jobs) for e in part]


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


MAX_TRIES = 60


async def _drive(urls: list[str], items: list[bytes], concurrency: int, path: str,
                 wait_path: str | None) -> tuple[float, list[float]]:
    """Send `items` (request bodies) with `concurrency` workers round-robin over `urls`;
    returns (seconds, latencies of each request, or of each batch until committed)."""
    latencies: list[float] = []
    shed = [0]   # requests answered 429/503 with Retry-After, and sent again
    it = iter(enumerate(items))
    conn = aiohttp.TCPConnector(limit=concurrency * 2)
    deadline = time.monotonic() + T_PHASE
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def worker() -> None:
            for i, body in it:
                if time.monotonic() > deadline:
                    return
                url = urls[i % len(urls)]
                for _ in range(MAX_TRIES):   # a node that sheds load says when to come back
                    t = time.monotonic()     # latency: of the request that was taken
                    async with s.post(url + path, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        retry = r.headers.get("Retry-After")
                        if r.status in (429, 503) and retry is not None and retry.isdigit():
                            shed[0] += 1
                            # at least as long as asked, spread so that the clients refused
                            # together do not all come back together
                            await asyncio.sleep(min(int(retry), 1) * random.uniform(1.0, 1.5))
                            continue
                        if r.status >= 500 and r.status != 504:
                            raise RuntimeError(f"{url}{path}: HTTP {r.status}")
                        break
                else:
                    raise RuntimeError(f"{url}{path}: still shedding load after {MAX_TRIES} tries")
                if wait_path is not None:  # a batch: wait until its last transaction commits
                    last = json.dumps(json.loads(body)[-1]).encode()
                    async with s.post(url + wait_path, data=last, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                latencies.append(time.monotonic() - t)
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - t0, latencies


async def _drive_reads(url: str, requests: list[tuple[str, dict]], concurrency: int) -> tuple[float, list[float]]:
    """GET each (path, headers) with `concurrency` workers; (seconds, latencies)."""
    latencies: list[float] = []
    it = iter(requests)
    deadline = time.monotonic() + T_PHASE
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2),
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def worker() -> None:
            for path, headers in it:
                if time.monotonic() > deadline:
                    return
                t = time.monotonic()
                async with s.get(url + path, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}{path}: HTTP {r.status}")
                latencies.append(time.monotonic() - t)
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - t0, latencies


def _bench_reads(c: LocalCluster, runs: int, scale: float, prog: Progress) -> dict:
    """Profile reads by another org through one node at c=16, each filed on the chain as
    an access.read entry and answered once it commits, next to public reads of the same
    record: the price of the audit."""
    from crmledger.ledger.keys import SigningKey
    from crmledger.ledger.requests import sign_request
    from crmledger.ledger.tx import private_hash, sign_tx
    org1 = SigningKey.from_pem((c.dir / "keys" / "org1.pem").read_bytes())
    org3 = SigningKey.from_pem((c.dir / "keys" / "org3.pem").read_bytes())
    ck, salt, now = SigningKey.generate(), os.urandom(16), int(time.time() * 1000)
    profile = {"name": "Bench Customer", "email": "bench@example.org"}
    reg = sign_tx(org1, "customer.register", "org1", f"bench-reg-{now}", now, {
        "customer_id": "bench-reader", "customer_key": ck.public_hex, "profile_hash": private_hash(salt, profile)})
    grant = sign_tx(ck, "consent.grant", "", f"bench-grant-{now}", now, {
        "customer_id": "bench-reader", "grantee_org": "org3", "scope": ["email"], "purpose": "dpv:CustomerCare",
        "expires_ts": None})
    for env in ({**reg, "private": {"salt": salt.hex(), "profile": profile}}, grant):
        status, out = c.post(1, "/v1/tx?wait=commit", env)
        if status != 200 or not out.get("valid"):
            raise RuntimeError(f"setting up the read benchmark: {status} {out}")
    path = "/v1/customers/bench-reader?purpose=dpv:CustomerCare&fields=email"
    out = {}
    for name, n in (("audited", int(800 * scale)), ("public", int(4000 * scale))):
        rates, p50s, p99s = [], [], []
        for r in range(runs):
            if name == "audited":
                t = int(time.time() * 1000)
                reqs = [(path, sign_request(org3, "GET", path, t + i)) for i in range(n)]
            else:
                reqs = [("/v1/customers/bench-reader", {})] * n
            secs, lat = asyncio.run(_drive_reads(c.url(3), reqs, 16))
            rates.append(len(lat) / secs)
            p50s.append(_pct(lat, 0.5))
            p99s.append(_pct(lat, 0.99))
            prog.step(f"{name} reads run {r + 1}")
        out[name] = {"tx_s": statistics.median(rates), "p50": statistics.median(p50s), "p99": statistics.median(p99s)}
    return out


# -- our cluster ---------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used, from its own counters."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stage_totals(c: LocalCluster) -> dict[str, list[float]]:
    """stage: [seconds, transactions], summed over the nodes' `crmledger_stage_*` counters."""
    from prometheus_client.parser import text_string_to_metric_families
    out: dict[str, list[float]] = {s: [0.0, 0.0] for s in STAGES}
    for i in c.procs:
        for fam in text_string_to_metric_families(c.get_text(i, "/metrics")):
            if fam.name in ("crmledger_stage_seconds", "crmledger_stage_txs"):
                col = 0 if fam.name == "crmledger_stage_seconds" else 1
                for smp in fam.samples:
                    if smp.name.endswith("_total"):
                        out[smp.labels["stage"]][col] += smp.value
    return out


class PhaseMeter:
    """CPU of the node processes and time per stage over one phase."""

    def __init__(self, c: LocalCluster) -> None:
        self.c = c
        self.cpu0 = sum(_cpu_seconds(p.pid) for p in c.procs.values())
        self.st0 = _stage_totals(c)

    def done(self, txs: int) -> tuple[float, dict[str, list[float]]]:
        """(CPU µs per committed transaction summed over the nodes, {stage: [s, n]})."""
        cpu = sum(_cpu_seconds(p.pid) for p in self.c.procs.values()) - self.cpu0
        st1 = _stage_totals(self.c)
        return cpu / txs * 1e6, {k: [st1[k][0] - v[0], st1[k][1] - v[1]] for k, v in self.st0.items()}


def _bench_ledger(work: Path, shape: list[tuple[str, int, int]], runs: int, batch: int, prog: Progress,
                  scale: float = 1.0) -> dict:
    c = LocalCluster(work / "cluster", 3)
    try:
        c.start_all()
        pem = (c.dir / "keys" / "org1.pem").read_bytes()
        urls = [c.url(i) for i in (1, 2, 3)]
        results: dict = {}
        for mode, conc, n in shape:
            rates, p50s, p99s, cpus = [], [], [], []
            stages = {k: [0.0, 0.0] for k in STAGES}
            for r in range(runs):
                envs = _pre_sign(pem, f"{mode}{conc}r{r}t{time.time_ns()}", n)
                if mode == "single":
                    items, path, wait = envs, "/v1/tx?wait=commit", None
                else:
                    items = [b"[" + b",".join(envs[i:i + batch]) + b"]" for i in range(0, len(envs), batch)]
                    path, wait = "/v1/tx/batch", "/v1/tx?wait=commit"
                target = max(c.status(i)["height"] for i in (1, 2, 3))
                meter = PhaseMeter(c)
                t0 = time.monotonic()
                _, lat = asyncio.run(_drive(urls, items, conc, path, wait))
                wait_for(lambda: c.converged() and c.status(1)["height"] > target, 60, "all nodes to commit", 0.01)
                elapsed = time.monotonic() - t0
                cpu, st = meter.done(n)
                cpus.append(cpu)
                for k, (secs, cnt) in st.items():
                    stages[k][0] += secs
                    stages[k][1] += cnt
                rates.append(n / elapsed)
                p50s.append(_pct(lat, 0.5))
                p99s.append(_pct(lat, 0.99))
                prog.step(f"crmledger {mode} c={conc} run {r + 1}")
            results[(mode, conc)] = {"tx_s": statistics.median(rates), "p50": statistics.median(p50s),
                                     "p99": statistics.median(p99s), "cpu_us": statistics.median(cpus),
                                     "stages": {k: (v[0] / v[1] if v[1] else None) for k, v in stages.items()}}
        results["reads"] = _bench_reads(c, runs, scale, prog)
        return results
    finally:
        c.stop_all()


# -- the etcd reference --------------------------------------------------------------------
def _bench_etcd(work: Path, shape: list[tuple[str, int, int]], runs: int, prog: Progress) -> dict:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server)")
    base = free_ports([1, 2, 3, 101, 102, 103])
    peers = ",".join(f"e{i}=http://127.0.0.1:{base + 100 + i}" for i in (1, 2, 3))
    procs = []
    try:
        for i in (1, 2, 3):
            log = open(work / f"etcd{i}.log", "wb")
            procs.append(subprocess.Popen([
                etcd, "--name", f"e{i}", "--data-dir", str(work / f"etcd{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{base + i}",
                "--advertise-client-urls", f"http://127.0.0.1:{base + i}",
                "--listen-peer-urls", f"http://127.0.0.1:{base + 100 + i}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{base + 100 + i}",
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", "crmledger-bench"], stdout=log, stderr=log))
        urls = [f"http://127.0.0.1:{base + i}" for i in (1, 2, 3)]

        def healthy() -> bool:
            import urllib.request
            with urllib.request.urlopen(urls[0] + "/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"
        wait_for(healthy, 30, "etcd to elect a leader")
        value = base64.b64encode(os.urandom(300)).decode()
        results: dict = {}
        for mode, conc, n in shape:
            if mode != "single":
                continue
            rates, p50s, p99s = [], [], []
            for r in range(runs):
                items = [json.dumps({"key": base64.b64encode(f"k{conc}-{r}-{i}".encode()).decode(),
                                     "value": value}).encode() for i in range(n)]
                secs, lat = asyncio.run(_drive(urls, items, conc, "/v3/kv/put", None))
                rates.append(n / secs)
                p50s.append(_pct(lat, 0.5))
                p99s.append(_pct(lat, 0.99))
                prog.step(f"etcd put c={conc} run {r + 1}")
            results[("single", conc)] = {"tx_s": statistics.median(rates), "p50": statistics.median(p50s),
                                         "p99": statistics.median(p99s)}
        return results
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


STAGE_LABELS = {
    "receive": "HTTP receive and decode", "verify": "signature check (entry node)",
    "admit": "admission to the mempool", "gossip_out": "gossip: batched for the peers",
    "gossip_in": "gossip: checked by a peer", "block_wait": "wait for the block cut (leader)",
    "replicate": "replication, both fsyncs", "apply": "apply (every node)", "reply": "reply to the client"}


def _print_stages(ours: dict, shape: list[tuple[str, int, int]], out) -> None:
    """Mean ms a transaction spends in each stage, from the nodes' own counters."""
    heads = [f"{m} c={c}" for m, c, _ in shape]
    print("\nwhere a transaction's time goes (mean ms per transaction, from the nodes' counters)", file=out)
    print(f"{'stage':<34}" + "".join(f"{h:>14}" for h in heads), file=out)
    for k in STAGES:
        vals = [ours[(m, c)]["stages"][k] for m, c, _ in shape]
        print(f"{STAGE_LABELS[k]:<34}" + "".join(f"{'-' if v is None else f'{v * 1000:.2f}':>14}" for v in vals),
              file=out)


def run(reference: str | None = None, runs: int = 3, scale: float = 1.0, batch: int = 100, out=sys.stdout) -> dict:
    shape = [("single", 1, int(200 * scale)), ("single", 16, int(2000 * scale)), ("single", 64, int(3000 * scale)),
             ("batch", 1, int(3000 * scale)), ("batch", 16, int(12000 * scale)), ("batch", 64, int(20000 * scale)),
             ("batch", 256, int(30000 * scale))]
    total = (len(shape) + 2) * runs + (3 * runs if reference == "etcd" else 0)
    prog = Progress(total)
    with tempfile.TemporaryDirectory(prefix="crmledger-bench-") as tmp:
        ours = _bench_ledger(Path(tmp), shape, runs, batch, prog, scale)
        ref = _bench_etcd(Path(tmp), shape, runs, prog) if reference == "etcd" else {}
    prog.close()
    print(f"3 local nodes, {os.cpu_count()} cores; median of {runs} runs; latency = until committed", file=out)
    print(f"{'load':<22} {'tx/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/tx':>9}" +
          (f" {'etcd put/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}" if ref else ""), file=out)
    for mode, conc, _ in shape:
        r = ours[(mode, conc)]
        line = f"{mode + (f' ({batch}/req)' if mode == 'batch' else ''):<14} c={conc:<5} {r['tx_s']:>9,.0f} " \
               f"{r['p50'] * 1000:>8.1f} {r['p99'] * 1000:>8.1f} {r['cpu_us']:>9,.0f}"
        e = ref.get((mode, conc))
        if e:
            line += f" {e['tx_s']:>11,.0f} {e['p50'] * 1000:>8.1f} {e['p99'] * 1000:>8.1f} {r['tx_s'] / e['tx_s']:>6.2f}"
        print(line, file=out)
    print("CPU µs/tx: the three node processes' own CPU counters over the phase, per committed transaction",
          file=out)
    _print_stages(ours, shape, out)
    single64, batch_best = ours[("single", 64)], max(ours[("batch", c)]["tx_s"] for c in (1, 16, 64, 256))
    if ref:
        e = ref[("single", 64)]
        print(f"single submissions at c=64: {single64['tx_s'] / e['tx_s']:.2f}x etcd's puts/s (target >= 1.0), "
              f"p99 {single64['p99'] * 1000:.0f} ms vs {e['p99'] * 1000:.0f} ms (target <=)", file=out)
    print(f"batches: best {batch_best:,.0f} committed tx/s (target >= 4,000)", file=out)
    reads = ours.pop("reads")
    for name, label in (("audited", "audited profile reads"), ("public", "public record reads")):
        r = reads[name]
        print(f"{label:<22} c=16 through one node: {r['tx_s']:>8,.0f}/s  p50 {r['p50'] * 1000:.1f} ms  "
              f"p99 {r['p99'] * 1000:.1f} ms", file=out)
    print(f"the audit costs {reads['public']['tx_s'] / reads['audited']['tx_s']:.1f}x in reads/s: each audited read "
          "waits for its access.read entry to commit", file=out)
    return {"ours": {f"{m}-{c}": v for (m, c), v in ours.items()}, "reads": reads,
            "etcd": {f"{m}-{c}": v for (m, c), v in ref.items()}}
