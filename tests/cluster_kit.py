"""Real node processes on loopback for tests: started by the test, always stopped."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.requests import sign_request
from crmledger.ledger.tx import private_hash, sign_tx
from crmledger.node.bench.localcluster import LocalCluster, wait_for  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent


class Cluster(LocalCluster):
    def __init__(self, tmp: Path, n: int = 3, tables: dict | None = None, **kw) -> None:
        super().__init__(tmp / "cluster", n, tables, **kw)
        self.org_keys = {int(f.stem[3:]): SigningKey.from_pem(f.read_bytes())
                         for f in (self.dir / "keys").glob("org*.pem")}

    def register(self, i: int, cid: str, org: int = 1, wait: bool = True) -> tuple[int, dict]:
        env = sign_tx(self.org_keys[org], "customer.register", f"org{org}", f"{cid}-{time.time_ns()}",
                      int(time.time() * 1000), {"customer_id": cid, "customer_key": None,
                                                "profile_hash": "ab" * 32})
        return self.post(i, "/v1/tx" + ("?wait=commit" if wait else ""), env)

    def submit(self, i: int, key: SigningKey, type_: str, org: str, payload: dict, private: dict | None = None,
               wait: bool = True) -> tuple[int, dict]:
        """A transaction signed by `key`, sent to node i (with its private part)."""
        env = sign_tx(key, type_, org, f"{type_}-{time.time_ns()}", int(time.time() * 1000), payload)
        if private is not None:
            env["private"] = private
        return self.post(i, "/v1/tx" + ("?wait=commit" if wait else ""), env)

    def signed_get(self, i: int, path: str, key: SigningKey, ts: int | None = None) -> tuple[int, dict]:
        return self.request(i, "GET", path, headers=self.sign(key, path, ts))

    @staticmethod
    def sign(key: SigningKey, path: str, ts: int | None = None) -> dict:
        return sign_request(key, "GET", path, int(time.time() * 1000) if ts is None else ts)


@contextmanager
def running(tmp: Path, **kw) -> Iterator[Cluster]:
    """A started cluster, stopped on the way out however the block ends."""
    c = Cluster(tmp, **kw)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def with_private(value: dict | str) -> tuple[str, dict]:
    """(salted hash, private part) of a profile or a text, with a fresh salt."""
    salt = os.urandom(16)
    name = "profile" if isinstance(value, dict) else "text"
    return private_hash(salt, value), {"salt": salt.hex(), name: value}


def bytes_in(folder: Path, needles: list[bytes]) -> list[str]:
    """Files under `folder` holding any of `needles` (what a byte search finds)."""
    found = []
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            found += [f"{f.name}: {n!r}" for n in needles if n in data]
    return found
