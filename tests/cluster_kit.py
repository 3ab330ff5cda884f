"""Real node processes on loopback for tests: started by the test, always stopped."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from node.cluster_init import init_cluster
from node.ledger.keys import SigningKey
from node.ledger.tx import sign_tx

ROOT = Path(__file__).resolve().parent.parent


def _free_block(n: int) -> int:
    """A base port with base+1..base+n and base+101..base+100+n free."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 40000)
        ports = [base + i for i in range(1, n + 1)] + [base + 100 + i for i in range(1, n + 1)]
        try:
            socks = []
            for p in ports:
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free ports")


def wait_for(cond, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = cond()
            if v:
                return v
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Cluster:
    def __init__(self, tmp: Path, n: int = 3, tables: dict | None = None) -> None:
        self.base = _free_block(n)
        self.dir = init_cluster(tmp / "cluster", n, base_port=self.base, tables=tables)
        self.n = n
        self.procs: dict[int, subprocess.Popen] = {}
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.org_keys = {i: SigningKey.from_pem((self.dir / "keys" / f"org{i}.pem").read_bytes())
                         for i in range(1, n + 1)}

    def start(self, i: int) -> None:
        log = open(self.dir / f"node{i}.log", "ab")
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "node.cli", "node", "--config",
                                          str(self.dir / f"node{i}.toml")], stdout=log, stderr=log,
                                         env=self.env, cwd=ROOT)

    def start_all(self) -> None:
        for i in range(1, self.n + 1):
            self.start(i)
        self.wait_leader()

    def stop(self, i: int, sig=signal.SIGTERM, timeout: float = 15) -> int:
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

    def url(self, i: int, path: str) -> str:
        return f"http://127.0.0.1:{self.base + i}{path}"

    def get(self, i: int, path: str):
        with urllib.request.urlopen(self.url(i, path), timeout=5) as r:
            return json.loads(r.read())

    def post(self, i: int, path: str, body) -> tuple[int, dict]:
        req = urllib.request.Request(self.url(i, path), data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
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

    def register(self, i: int, cid: str, org: int = 1, wait: bool = True) -> tuple[int, dict]:
        env = sign_tx(self.org_keys[org], "customer.register", f"org{org}", f"{cid}-{time.time_ns()}",
                      int(time.time() * 1000), {"customer_id": cid, "customer_key": None,
                                                "profile_hash": "ab" * 32})
        return self.post(i, "/v1/tx" + ("?wait=commit" if wait else ""), env)

    def heads(self) -> dict[int, tuple[int, str]]:
        out = {}
        for i in self.procs:
            st = self.status(i)
            out[i] = (st["height"], st["head_hash"])
        return out

    def converged(self) -> bool:
        return len(set(self.heads().values())) == 1
