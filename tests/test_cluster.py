"""Real node processes on loopback: a 3-node cluster commits what any node is sent, every
node reaches the same head; kill -9 of the leader; SIGTERM of the leader; a peer whose
certificate is not in the genesis; the chain verifies on every node afterwards."""
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from crmledger.ledger.keys import SigningKey
from crmledger.node.bench.localcluster import free_ports
from crmledger.node.ops.cluster_init import init_cluster
from crmledger.node.ops.tlscerts import make_certificate
from crmledger.node.wire import frame
from crmledger.node.ops.verify import verify
from tests.cluster_kit import ROOT, Cluster, running, wait_for


@pytest.fixture
def cluster(tmp_path):
    with running(tmp_path) as c:
        yield c


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed process can stay one for a while)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _all_verify(c: Cluster) -> None:
    c.stop_all()
    for i in range(1, c.n + 1):
        rep = verify(c.dir / f"node{i}", workers=1)
        assert rep.ok, (i, rep.reason)


def test_commits_from_any_node_and_all_converge(cluster):
    acked = []
    for k in range(9):
        status, body = cluster.register(1 + k % 3, f"cust{k}")
        assert status == 200 and body["code"] == "valid", body
        acked.append(body["tx_id"])
    wait_for(cluster.converged, what="the same head on every node")
    for i in (1, 2, 3):
        for tx_id in acked:
            assert cluster.get(i, f"/v1/tx/{tx_id}")["status"] == "committed"
    # the public record, history and block endpoints agree across nodes
    assert cluster.get(2, "/v1/customers/cust4")["owner"] == "org1"
    assert [h["type"] for h in cluster.get(3, "/v1/customers/cust4/history")["history"]] == ["customer.register"]
    latest = cluster.get(1, "/v1/blocks/latest")
    assert cluster.get(3, f"/v1/blocks/{latest['height']}?full=1")["hash"] == latest["hash"]
    _all_verify(cluster)


def test_kill_9_of_the_leader(cluster):
    for k in range(3):
        assert cluster.register(1, f"a{k}")[0] == 200
    old = cluster.leader()
    readers = _children(cluster.procs[old].pid)
    assert readers   # its reader processes
    cluster.stop(old, signal.SIGKILL)
    wait_for(lambda: not any(_running(p) for p in readers), 10, "the killed node's readers to end with it")
    new = cluster.wait_leader()
    assert new != old
    others = [i for i in (1, 2, 3) if i != old]
    # its connections ended at once: the followers knew it was gone without waiting for
    # the election timeout, and the first of them by id campaigned
    for i in others:
        assert f"the link from the leader node{old} ended" in (cluster.dir / f"node{i}.log").read_text()
    for k in range(3):
        status, body = cluster.register(others[k % 2], f"b{k}")
        assert status == 200 and body["code"] == "valid"
    cluster.start(old)
    wait_for(lambda: cluster.status(old)["role"] == "follower" and cluster.converged(), 20,
             "the restarted node to catch up")
    _all_verify(cluster)


def test_sigterm_on_the_leader_moves_leadership_and_loses_nothing(cluster):
    acked = [cluster.register(2, f"s{k}")[1]["tx_id"] for k in range(5)]
    old = cluster.leader()
    term = cluster.status(old)["term"]
    assert cluster.stop(old, signal.SIGTERM) == 0
    new = wait_for(lambda: next((i for i in cluster.procs if cluster.status(i)["role"] == "leader"), None),
                   5, "a new leader")
    assert cluster.status(new)["term"] == term + 1   # a hand-over, not an election after a timeout
    for i in cluster.procs:
        for tx_id in acked:
            assert cluster.get(i, f"/v1/tx/{tx_id}")["status"] == "committed"
    assert cluster.register(new, "after")[0] == 200
    _all_verify(cluster)


def test_a_peer_not_in_the_genesis_is_refused(cluster, tmp_path):
    intruder = SigningKey.generate()
    cert = tmp_path / "intruder.crt"
    key = tmp_path / "intruder.pem"
    cert.write_bytes(make_certificate(intruder._key, "node1", ["127.0.0.1"]))
    key.write_bytes(intruder.to_pem())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(cert), str(key))
    peer_port = cluster.base + 100 + 2
    genesis_hash = __import__("crmledger.storage.datadir", fromlist=["genesis_of"]).genesis_of(cluster.dir).hash
    with socket.create_connection(("127.0.0.1", peer_port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                # a well-formed hello claiming to be node1: only the certificate gives it away
                tls.sendall(frame("hello", {"node_id": "node1", "genesis": genesis_hash}))
                refused = tls.recv(1) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            refused = True
        except socket.timeout:
            refused = False  # the node kept the link open: it accepted the intruder
    assert refused
    assert cluster.get(2, "/healthz")["ok"]
    assert cluster.register(2, "still-works")[0] == 200


def _start_node(config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "node", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_bad_config_is_one_line_not_a_traceback(tmp_path):
    f = tmp_path / "n.toml"
    f.write_text('node_id = "x"\n')
    out = _start_node(f)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "missing key" in out.stderr


def test_a_key_file_missing_malformed_or_readable_by_others_is_one_line_naming_it(tmp_path):
    d = init_cluster(tmp_path / "c", 1, base_port=free_ports([1, 101]))
    key = d / "keys" / "node1.pem"
    good = key.read_bytes()
    key.chmod(0o644)   # as a copy or an unpacked archive may leave it: refused, as ssh does
    out = _start_node(d / "node1.toml")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and str(key) in out.stderr
    assert "may be read by others (mode 0644)" in out.stderr and f"chmod 600 {key}" in out.stderr
    key.chmod(0o600)
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    out = _start_node(d / "node1.toml")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and str(key) in out.stderr
    assert "not an Ed25519 private key" in out.stderr
    key.unlink()
    out = _start_node(d / "node1.toml")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and str(key) in out.stderr
    assert "cannot read this private key" in out.stderr
    key.write_bytes(good)
    key.chmod(0o600)


def test_a_node_down_across_a_snapshot_catches_up_by_block_transfer(tmp_path):
    c = Cluster(tmp_path, tables={"raft": {"snapshot_every_blocks": 4, "keep_entries": 2}})
    try:
        c.start_all()
        assert c.register(1, "first")[0] == 200
        wait_for(c.converged, what="a converged start")
        down = next(i for i in (1, 2, 3) if i != c.leader())
        c.stop(down)
        up = [i for i in (1, 2, 3) if i != down]
        for k in range(20):     # one block each: the others snapshot and compact past it
            assert c.register(up[k % 2], f"while-down-{k}")[0] == 200
        c.start(down)
        wait_for(lambda: c.converged() and c.status(down)["height"] >= 21, 30, "the node to catch up")
        log = (c.dir / f"node{down}.log").read_text()
        assert "catching up from height" in log        # it did not replay a Raft log: it had none
        assert c.register(down, "after")[0] == 200
        wait_for(c.converged, what="convergence")
    finally:
        c.stop_all()
    for i in (1, 2, 3):
        assert verify(c.dir / f"node{i}", workers=1).ok


def test_a_listening_event_stream_does_not_hold_up_shutdown(cluster):
    import threading
    import time
    import urllib.request
    got = []
    r = urllib.request.urlopen(cluster.url(1, "/v1/events"), timeout=30)

    def read():
        try:
            got.append(r.read())   # returns once the node ends the stream
        except OSError:
            got.append(b"")
    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert cluster.register(1, "watched")[0] == 200
    t0 = time.monotonic()
    assert cluster.stop(1) == 0
    assert time.monotonic() - t0 < 8
    t.join(5)
    assert got and b"event: block" in got[0]


def test_sigstop_of_the_leader_then_sigcont(cluster):
    import os
    assert cluster.register(1, "before-stop")[0] == 200
    old = cluster.leader()
    pid = cluster.procs[old].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        new = wait_for(lambda: next((i for i in cluster.procs if i != old and cluster.status(i)["role"] == "leader"),
                                    None), 20, "a leader among the others")
        assert cluster.register(new, "while-frozen")[0] == 200
        for i in cluster.procs:   # a stopped process ends no connection: the timeout applied
            assert "the link from the leader" not in (cluster.dir / f"node{i}.log").read_text()
    finally:
        os.kill(pid, signal.SIGCONT)
    # the old leader wakes up in an old term: it steps down and catches up
    wait_for(lambda: cluster.status(old)["role"] == "follower" and cluster.converged(), 20, "the old leader to rejoin")
    assert cluster.get(old, "/v1/customers/while-frozen")["owner"] == "org1"
    _all_verify(cluster)


def test_acknowledged_transactions_survive_crashes_under_load(cluster):
    """Clients keep submitting to every node while nodes are killed and restarted; every
    acknowledged transaction ends up committed on every node, in the same order."""
    import random
    import threading
    import time
    rng = random.Random(11)
    acked, stop = [], threading.Event()

    def client(node_hint: int) -> None:
        k = 0
        while not stop.is_set() and k < 400:
            k += 1
            i = node_hint if node_hint in cluster.procs else next(iter(cluster.procs))
            try:
                status, body = cluster.register(i, f"load-{node_hint}-{k}")
            except OSError:
                continue
            if status == 200:
                acked.append(body["tx_id"])
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in (1, 2, 3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            victim = rng.choice(sorted(cluster.procs))
            cluster.stop(victim, signal.SIGKILL if rng.random() < 0.5 else signal.SIGTERM)
            time.sleep(rng.uniform(0.5, 1.5))   # let the load run against two nodes
            cluster.start(victim)
            cluster.wait_leader()
            time.sleep(rng.uniform(0.3, 1.0))
    finally:
        stop.set()
        for t in threads:
            t.join(40)
    wait_for(lambda: len(cluster.procs) == 3 and cluster.converged(), 30, "convergence after the storm")
    assert len(acked) > 20
    for i in (1, 2, 3):
        for tx_id in acked:
            assert cluster.get(i, f"/v1/tx/{tx_id}")["status"] == "committed", (i, tx_id)
    _all_verify(cluster)


def test_malformed_frames_from_a_genesis_peer_are_dropped_and_counted(cluster):
    """Even a peer with a pinned certificate is cut off for a bad frame; the node lives on."""
    import struct
    import urllib.request
    from crmledger.storage.datadir import genesis_of
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(cluster.dir / "keys" / "node1.crt"), str(cluster.dir / "keys" / "node1.pem"))
    hello = frame("hello", {"node_id": "node1", "genesis": genesis_of(cluster.dir).hash})
    for garbage in (struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",       # not msgpack
                    struct.pack(">I", 1 << 30),                          # far too large
                    frame("raft", [1, 2, 3])):                           # not a Raft message
        with socket.create_connection(("127.0.0.1", cluster.base + 100 + 2), timeout=5) as raw:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(hello + garbage)
                try:
                    while tls.recv(1024):
                        pass
                except (ssl.SSLError, ConnectionResetError):
                    pass
    metrics = urllib.request.urlopen(cluster.url(2, "/metrics"), timeout=5).read().decode()
    assert 'crmledger_peer_events{event="frames_malformed"} 3.0' in metrics
    assert cluster.register(2, "unharmed")[0] == 200


def test_a_node_that_died_between_a_snapshot_and_its_blocks_resumes_on_start(tmp_path):
    """The Raft snapshot is written before the blocks it stands for are fetched: a node
    killed in between finds a snapshot ahead of its ledger and catches up when it starts."""
    from crmledger.consensus import HardState
    from crmledger.storage.datadir import open_data_dir
    c = Cluster(tmp_path, tables={"raft": {"snapshot_every_blocks": 4, "keep_entries": 2}})
    try:
        c.start_all()
        assert c.register(1, "first")[0] == 200
        down = next(i for i in (1, 2, 3) if i != c.leader())
        up = [i for i in (1, 2, 3) if i != down]
        c.stop(down)
        for k in range(12):
            assert c.register(up[k % 2], f"gap-{k}")[0] == 200
        c.stop(up[0])   # copy its snapshot into the node that is down, as if received there
        src = open_data_dir(c.dir / f"node{up[0]}")
        snap, hs = src.raft.snapshot(), src.raft.hard_state
        src.close()
        dst = open_data_dir(c.dir / f"node{down}")
        assert dst.ledger.applied_index < snap.index
        dst.raft.save(HardState(hs.term, 0, snap.index), (), snap)
        dst.close()
        c.start(up[0])
        c.start(down)
        wait_for(lambda: c.converged() and c.status(down)["height"] >= 13, 30, "the node to resume its catch-up")
        assert "catching up from height" in (c.dir / f"node{down}.log").read_text()
    finally:
        c.stop_all()
    for i in (1, 2, 3):
        assert verify(c.dir / f"node{i}", workers=1).ok
