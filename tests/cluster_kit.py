"""Real node processes on loopback for tests: started by the test, always stopped."""
from __future__ import annotations

import time
from pathlib import Path

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import sign_tx
from crmledger.node.bench.localcluster import LocalCluster, wait_for  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent


class Cluster(LocalCluster):
    def __init__(self, tmp: Path, n: int = 3, tables: dict | None = None) -> None:
        super().__init__(tmp / "cluster", n, tables)
        self.org_keys = {i: SigningKey.from_pem((self.dir / "keys" / f"org{i}.pem").read_bytes())
                         for i in range(1, n + 1)}

    def register(self, i: int, cid: str, org: int = 1, wait: bool = True) -> tuple[int, dict]:
        env = sign_tx(self.org_keys[org], "customer.register", f"org{org}", f"{cid}-{time.time_ns()}",
                      int(time.time() * 1000), {"customer_id": cid, "customer_key": None,
                                                "profile_hash": "ab" * 32})
        return self.post(i, "/v1/tx" + ("?wait=commit" if wait else ""), env)
