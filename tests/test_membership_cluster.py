"""Nodes follow the vote, through the real processes under a steady client load: a fourth
firm is voted in, its node joins with `crmledger join`, catches up and becomes a voter,
and serves reads and writes; then a founding firm is voted out, and its node leaves the
Raft group and stops. No acknowledged transaction is lost, no request fails but those
the departing node refused, and every chain verifies across both changes."""
import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from crmledger.ledger.tx import sign_tx
from crmledger.node.ops.verify import verify
from tests.cluster_kit import Cluster, running, wait_for

LOAD_SECONDS = 90   # the load stops by itself after this, whatever happens


class Load:
    """Client writers (registrations with ?wait=commit) spread over the nodes in
    `targets`, retrying a 503 as a client should; every outcome is kept."""

    def __init__(self, c: Cluster, targets: list[int]) -> None:
        self.c, self.targets = c, list(targets)
        self.acked: list[str] = []
        self.failed: list[tuple[int, float, str]] = []   # (node, when, why)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(3)]
        self.key = c.org_keys[1]

    def _run(self, w: int) -> None:
        rng, end, k = random.Random(w), time.monotonic() + LOAD_SECONDS, 0
        while not self.stop.is_set() and time.monotonic() < end:
            k += 1
            i = rng.choice(self.targets)
            env = sign_tx(self.key, "customer.register", "org1", f"load-{w}-{k}", int(time.time() * 1000),
                          {"customer_id": f"m{w}-{k}", "customer_key": None, "profile_hash": "ab" * 32})
            for attempt in range(20):
                try:
                    req = urllib.request.Request(self.c.url(i, "/v1/tx?wait=commit&timeout=10"),
                                                 data=json.dumps(env).encode(),
                                                 headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=15) as r:
                        body = json.loads(r.read())
                    assert body["code"] == "valid", body
                    self.acked.append(body["tx_id"])
                    break
                except urllib.error.HTTPError as e:
                    if e.code == 409:   # committed by an earlier attempt
                        self.acked.append(env_id(env))
                        break
                    if e.code in (503, 504) and attempt < 19:
                        time.sleep(0.2)
                        continue
                    self.failed.append((i, time.monotonic(), f"{e.code} {e.read()[:200]!r}"))
                    break
                except OSError as e:
                    self.failed.append((i, time.monotonic(), repr(e)))
                    break
            time.sleep(0.02)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def _hello_as(c: Cluster, i: int, to: int) -> str:
    """Connect to node `to`'s peer port with node i's certificate and say hello."""
    import socket
    import ssl
    from crmledger.node.wire import frame
    from crmledger.storage.datadir import genesis_of
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(c.dir / "keys" / f"node{i}.crt"), str(c.dir / "keys" / f"node{i}.pem"))
    host, _, port = c.config(to).peer_listen.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(frame("hello", {"node_id": f"node{i}", "genesis": genesis_of(c.dir).hash}))
                return "refused" if tls.recv(1) == b"" else "accepted"
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return "refused"
        except socket.timeout:
            return "accepted"


def env_id(env: dict) -> str:
    from crmledger.ledger.tx import admit
    return admit(env).tx_id


@pytest.fixture
def cluster(tmp_path):
    # the log is compacted often, so that the new node catches up by snapshot and blocks
    with running(tmp_path, tables={"raft": {"snapshot_every_blocks": 20, "keep_entries": 5}}) as c:
        yield c


def voters(c: Cluster, i: int) -> list[str]:
    return c.status(i)["voters"]


def test_a_firm_joins_by_vote_and_another_leaves_under_load(cluster):
    c = cluster
    with Load(c, [1, 2, 3]) as load:
        wait_for(lambda: len(load.acked) >= 20, 30, "load under way")
        k = c.add_firm()
        decided = time.monotonic()
        assert k == 4
        c.join(4)
        wait_for(lambda: "node4" in voters(c, 1), 60, "node4 a voter")
        to_voter = time.monotonic() - decided
        # it serves writes and reads, and takes its share of the load
        assert c.register(4, "via-node4")[1]["code"] == "valid"
        load.targets.append(4)
        wait_for(lambda: c.status(4)["height"] >= c.status(1)["height"] - 2, 30, "node4 caught up")
        assert c.get(4, f"/v1/tx/{load.acked[0]}")["status"] == "committed"

        # org3 is voted out (org1 and org2 of the three that vote: org1, org2, org4)
        org = [sys.executable, "-m", "crmledger.node.ops.cli", "org"]

        def signed(org_no: int, *args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*org, *args, "--node", c.url(1)[len("http://"):],
                                   "--key", str(c.dir / "keys" / f"org{org_no}.pem"), "--org", f"org{org_no}"],
                                  capture_output=True, text=True, timeout=60)
        out = signed(1, "propose-remove", "org3")
        assert out.returncode == 0, out.stderr
        pid = out.stdout.split()[1]
        assert signed(1, "vote", pid).returncode == 0
        out = signed(2, "vote", pid)
        assert out.returncode == 0 and "executed" in out.stdout, out.stdout + out.stderr
        removed_at = time.monotonic()
        load.targets.remove(3)
        wait_for(lambda: "node3" not in voters(c, 1) and "node3" not in c.status(1)["learners"], 30,
                 "node3 out of the Raft group")
        out_of_group = time.monotonic() - removed_at
        wait_for(lambda: c.procs[3].poll() is not None, 30, "node3 to stop by itself")
        gone = time.monotonic() - removed_at
        assert c.procs[3].returncode == 0
        c.procs.pop(3)
        n_before = len(load.acked)
        wait_for(lambda: len(load.acked) >= n_before + 20, 30, "commits after the removal")
    print(f"\nfrom the deciding vote: node4 a voter in {to_voter:.2f} s (its start included); node3 out of the "
          f"Raft group in {out_of_group:.2f} s, its process gone in {gone:.2f} s; {len(load.acked)} acked")

    # only the departing node refused anything, and only once it was voted out
    assert all(i == 3 for i, _, _ in load.failed), load.failed
    # every acknowledged transaction is on every remaining node, and the chains agree
    wait_for(lambda: len({c.status(i)["head_hash"] for i in (1, 2, 4)}) == 1, 30, "the same head")
    for tx_id in load.acked[::7]:
        for i in (1, 2, 4):
            assert c.get(i, f"/v1/tx/{tx_id}")["status"] == "committed", (i, tx_id)
    # the removed node is no peer now, and its certificate is refused
    assert [p["node_id"] for p in c.get(1, "/v1/status")["peers"]] == ["node2", "node4"]
    assert _hello_as(c, 3, to=1) == "refused"
    assert 'crmledger_peer_events{event="peer_refused_unknown_certificate"}' in c.get_text(1, "/metrics")
    # ... and it does not start again
    out = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "node", "--config",
                          str(c.dir / "node3.toml")], capture_output=True, text=True, timeout=60, cwd=c.dir)
    assert out.returncode == 2 and "removed from the consortium" in out.stderr, out.stderr
    assert "by block transfer" in (c.dir / "node4.log").read_text(), "node4 caught up from a snapshot"
    c.stop_all()
    for i in (1, 2, 3, 4):
        rep = verify(c.dir / f"node{i}", workers=1)
        assert rep.ok, (i, rep.reason)
