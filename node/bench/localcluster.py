"""A local cluster of real node processes on loopback, for the benchmark and the tests:
free ports, `init`, start, stop (SIGTERM, then SIGKILL after a timeout), status."""
from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from crmledger.node.ops.cluster_init import init_cluster



def _below_ephemeral() -> int:
    """The first port the kernel may hand out to outgoing connections: ports chosen below
    it cannot be taken by one between choosing and binding."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(offsets: list[int]) -> int:
    """A base port for which base+o is free for every offset o."""
    rng = random.Random()
    top = max(_below_ephemeral() - max(offsets) - 1, 11000)
    for _ in range(500):
        base = rng.randrange(10000, top)
        socks = []
        try:
            for o in offsets:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + o))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free ports on 127.0.0.1")


def wait_for(cond, timeout: float = 20.0, what: str = "condition", poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = cond()
            if v:
                return v
        except (OSError, ValueError, LookupError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(poll)


class LocalCluster:
    def __init__(self, folder: Path, n: int = 3, tables: dict | None = None,
                 service_levels: dict[str, int] | None = None, node_orgs: list[int] | None = None,
                 hosts: list[str] | None = None) -> None:
        """`hosts`: an address for each node (its own host); all on 127.0.0.1 otherwise."""
        self.hosts = hosts or ["127.0.0.1"] * n
        self.base = free_ports([i for i in range(1, n + 1)] + [100 + i for i in range(1, n + 1)]) \
            if hosts is None else 7000
        self.dir = init_cluster(folder, n, base_port=self.base, tables=tables, service_levels=service_levels,
                                node_orgs=node_orgs, hosts=hosts)
        self.n = n
        self.procs: dict[int, subprocess.Popen] = {}

    def launcher(self, i: int) -> list[str]:
        """What node i's command line starts with (how it gets onto its host)."""
        return []

    def start(self, i: int) -> None:
        with open(self.dir / f"node{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                [*self.launcher(i), sys.executable, "-m", "crmledger.node.ops.cli", "node",
                 "--config", str(self.dir / f"node{i}.toml")], stdout=log, stderr=log, cwd=self.dir)

    def start_all(self, timeout: float = 30.0) -> int:
        """Start every node; return the leader once there is one and every node serves."""
        for i in range(1, self.n + 1):
            self.start(i)
        leader = self.wait_leader(timeout)
        wait_for(lambda: all(self.status(i) for i in self.procs), timeout, "every node to serve")
        return leader

    def stop(self, i: int, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        p = self.procs.pop(i)
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.stop(i)

    def url(self, i: int, path: str = "") -> str:
        return f"http://{self.hosts[i - 1]}:{self.base + i}{path}"

    def get_text(self, i: int, path: str) -> str:
        with urllib.request.urlopen(self.url(i, path), timeout=5) as r:
            return r.read().decode()

    def get(self, i: int, path: str):
        return json.loads(self.get_text(i, path))

    def post(self, i: int, path: str, body) -> tuple[int, dict]:
        return self.request(i, "POST", path, body)

    def request(self, i: int, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
        """(status, decoded JSON answer) of a request to node i."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(i, path), data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def status(self, i: int) -> dict:
        return self.get(i, "/v1/status")

    def leader(self) -> int | None:
        for i in self.procs:
            try:
                if self.status(i)["role"] == "leader":
                    return i
            except OSError:
                pass
        return None

    def wait_leader(self, timeout: float = 20.0) -> int:
        return wait_for(self.leader, timeout, "a leader")

    def heads(self) -> dict[int, tuple[int, str]]:
        return {i: (st["height"], st["head_hash"]) for i in self.procs for st in [self.status(i)]}

    def converged(self) -> bool:
        return len(set(self.heads().values())) == 1

    def wait_for_converged(self, timeout: float = 30.0) -> None:
        wait_for(lambda: len(self.procs) == self.n and self.converged(), timeout, "every node at the same head")

    def add_firm(self) -> int:
        """Vote the next firm and its node into the consortium (`crmledger add-firm`);
        its number. Start its node with `join`."""
        out = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "add-firm", "--cluster-dir",
                              str(self.dir), "--node", self.url(1)[len("http://"):]],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"add-firm failed: {out.stderr.strip()}")
        k = int(out.stdout.split()[-1])
        self.hosts.append(self.hosts[0])
        self.n = max(self.n, k)
        return k

    def join(self, i: int, via: int = 1) -> None:
        """Start node i, voted in, with `crmledger join` (reading the consortium from node `via`)."""
        with open(self.dir / f"node{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                [*self.launcher(i), sys.executable, "-m", "crmledger.node.ops.cli", "join", "--from",
                 self.url(via)[len("http://"):], "--config", str(self.dir / f"node{i}.toml")],
                stdout=log, stderr=log, cwd=self.dir)

    def config(self, i: int):
        from crmledger.node.config import load_config
        return load_config(self.dir / f"node{i}.toml")
