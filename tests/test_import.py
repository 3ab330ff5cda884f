"""`crmledger import` against a real cluster: rows mapped to profiles and registered in
batches, bad rows refused one by one with their reasons, and every row registered exactly
once — run twice, or killed halfway and run again."""
from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.requests import sign_request
from tests.cluster_kit import Cluster, wait_for


def _write_csv(path, n: int, bad: bool = True) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Id", "Full Name", "Email", "Phone"])
        for i in range(n):
            w.writerow([f"crm-{i}", f"Customer Number {i}", f"c{i}@example.org", f"+1 555 {i:07d}"])
        if bad:
            w.writerow(["", "No Id", "noid@example.org", ""])
            w.writerow(["crm-bad", "Bad Mail", "not-an-address", ""])
            w.writerow(["crm-1", "Twice In The File", "twice@example.org", ""])


def _import(c: Cluster, path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(c, path, *extra), capture_output=True, text=True, timeout=300)


def _cmd(c: Cluster, path, *extra) -> list[str]:
    return [sys.executable, "-m", "crmledger.node.ops.cli", "import", "--csv", str(path), "--org", "org1",
            "--key", str(c.dir / "keys" / "org1.pem"), "--node", "127.0.0.1:1", "--node", c.url(2),
            "--node", c.url(3), "--id-column", "Id", "--field", "name=Full Name", "--field", "email=Email",
            "--field", "phone=Phone", "--batch", "100", "--quiet", *extra]


def _profile(c: Cluster, cid: str) -> dict:
    path = f"/v1/customers/{cid}?purpose=dpv:CustomerCare"
    key = SigningKey.from_pem((c.dir / "keys" / "org1.pem").read_bytes())
    st, out = c.request(1, "GET", path, headers=sign_request(key, "GET", path, time.time_ns() // 10**6))
    assert st == 200, out
    return out["profile"]


def test_import_refuses_bad_rows_and_registers_the_rest_exactly_once(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start_all()
        src = tmp_path / "crm.csv"
        _write_csv(src, 300)
        r = _import(c, src)
        assert r.returncode == 0, r.stderr
        assert "rows 303: imported 300, already present 0, refused 3" in r.stdout, r.stdout
        with open(f"{src}.rejects.csv") as f:
            rejects = list(csv.DictReader(f))
        assert [(x["row"], x["reason"]) for x in rejects] == [
            ("301", "missing customer id"), ("302", "bad e-mail address 'not-an-address'"),
            ("303", "duplicate customer id in the file")]
        assert _profile(c, "crm-7") == {"name": "Customer Number 7", "email": "c7@example.org",
                                        "phone": "+1 555 0000007"}
        r = _import(c, src)   # again: nothing twice
        assert "rows 303: imported 0, already present 300, refused 3" in r.stdout, r.stdout
        # JSON lines, with a mapping file
        lines = tmp_path / "crm.jsonl"
        lines.write_text("\n".join(json.dumps({"ref": f"j{i}", "mail": f"j{i}@example.org"}) for i in range(5))
                         + "\n[1, 2]\n")
        mapping = tmp_path / "map.json"
        mapping.write_text(json.dumps({"customer_id": "ref", "fields": {"email": "mail"}}))
        r = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "import", "--jsonl", str(lines),
                            "--org", "org1", "--key", str(c.dir / "keys" / "org1.pem"), "--node", c.url(1),
                            "--map", str(mapping), "--quiet"], capture_output=True, text=True, timeout=120)
        assert "rows 6: imported 5, already present 0, refused 1" in r.stdout, r.stdout + r.stderr
    finally:
        c.stop_all()


def test_an_import_killed_halfway_and_run_again_registers_every_row_once(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start_all()
        src = tmp_path / "big.csv"
        _write_csv(src, 4000, bad=False)
        start = c.status(1)["height"]
        p = subprocess.Popen(_cmd(c, src), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: c.status(1)["height"] > start + 1, 60, "the first registrations to commit", 0.01)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        r = _import(c, src)
        assert r.returncode == 0, r.stderr
        imported, present, refused = map(int, re.search(
            r"imported (\d+), already present (\d+), refused (\d+)", r.stdout).groups())
        assert imported + present == 4000 and refused == 0, r.stdout
        assert present > 0, r.stdout   # the killed run had registered some
        for i in (0, 1999, 3999):
            assert _profile(c, f"crm-{i}")["name"] == f"Customer Number {i}"
    finally:
        c.stop_all()
