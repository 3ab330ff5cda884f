"""`crmledger bench-import`: CSV rows imported into a local 3-node cluster per second
(`crmledger import`: mapping, checks, private profiles, batches, every outcome read back
from the chain), next to the same number of bare registrations sent in batches by the
same client in the same run — what the import's own work costs."""
from __future__ import annotations

import asyncio
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

from crmledger.client import AsyncClient
from crmledger.ledger.keys import SigningKey
from crmledger.node.bench.localcluster import LocalCluster
from crmledger.node.ops.crm_import import Mapping, _import, read_rows


class _Quiet:
    def update(self, n: int) -> None:
        pass


def _write(path: Path, tag: str, rows: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Id", "Name", "Email", "Phone"])
        for i in range(rows):
            w.writerow([f"{tag}-{i}", f"Customer {tag} {i}", f"{tag}.{i}@example.org", f"+1 555 {i % 10**7:07d}"])


async def _bare(nodes: list[str], key: SigningKey, tag: str, rows: int, batch: int) -> float:
    """Registrations without profiles, in batches, until the last commits: seconds."""
    t0 = time.monotonic()
    async with AsyncClient(nodes, key=key, org="org1") as c:
        last = None
        for at in range(0, rows, batch):
            envs = [c.envelope("customer.register", {"customer_id": f"{tag}-{i}", "customer_key": None,
                                                     "profile_hash": "ab" * 32}) for i in range(at, min(rows, at + batch))]
            while True:
                out = await c.submit_batch(envs)
                again = [e for e, a in zip(envs, out) if a["status_code"] in (429, 503)]
                last = next((a["tx_id"] for a in reversed(out) if a["status_code"] == 202), last)
                if not again:
                    break
                envs = again
                await asyncio.sleep(1)
        while last and (await c.tx(last))["status"] != "committed":
            await asyncio.sleep(0.05)
    return time.monotonic() - t0


def run(rows: int = 100_000, runs: int = 3, batch: int = 500, out=sys.stdout) -> dict:
    with tempfile.TemporaryDirectory(prefix="crmledger-bench-import-") as tmp:
        c = LocalCluster(Path(tmp) / "cluster", 3)
        try:
            c.start_all()
            key = SigningKey.from_pem((c.dir / "keys" / "org1.pem").read_bytes())
            nodes = [c.url(i) for i in (1, 2, 3)]
            mapping = Mapping("Id", {"name": "Name", "email": "Email", "phone": "Phone"})
            imported, bare = [], []
            for r in range(runs):
                src = Path(tmp) / f"rows{r}.csv"
                _write(src, f"r{r}", rows)
                s = asyncio.run(_import(read_rows(str(src), "csv"), mapping, "org1", key, nodes, batch, _Quiet()))
                if s.imported != rows:
                    raise RuntimeError(f"run {r}: imported {s.imported} of {rows} ({s.rejects[:3]})")
                imported.append(rows / s.seconds)
                bare.append(rows / asyncio.run(_bare(nodes, key, f"b{r}", rows, batch)))
                print(f"  run {r + 1}: import {imported[-1]:,.0f} rows/s, bare registrations {bare[-1]:,.0f}/s",
                      file=sys.stderr)
        finally:
            c.stop_all()
    im, br = statistics.median(imported), statistics.median(bare)
    print(f"import of {rows:,} CSV rows into 3 local nodes, batches of {batch}, median of {runs} runs:", file=out)
    print(f"  crmledger import      {im:>8,.0f} rows/s  ({rows / im:,.0f} s for all)", file=out)
    print(f"  bare registrations    {br:>8,.0f} tx/s   (no profile, same client and batches)", file=out)
    print(f"  import / bare         {im / br:>8.2f}", file=out)
    return {"import_rows_s": im, "bare_tx_s": br}
