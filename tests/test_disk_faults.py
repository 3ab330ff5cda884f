"""Disk faults on real nodes: a data folder on a small tmpfs that fills up (the node
refuses writes with a clear error, the cluster goes on, and the node recovers when space
returns); a node restarted after its last write was cut short or garbled (it recovers,
and never serves a chain that differs from the others'), or after its database was
damaged (it refuses to start, with one line naming the folder)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from crmledger.node.ops.verify import verify
from tests.cluster_kit import Cluster, wait_for


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


def _same_chain(c: Cluster, i: int, ref: int) -> bool:
    """Node i's chain is a prefix of node ref's, block for block."""
    h = c.status(i)["height"]
    return all(c.get(i, f"/v1/blocks/{k}")["hash"] == c.get(ref, f"/v1/blocks/{k}")["hash"] for k in range(1, h + 1))


def _mount_tmpfs(path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for a full disk (needs root): {r.stderr.strip()}", pytrace=False)


def _fill(path) -> None:
    """Take every free byte of the file system at `path`."""
    with open(path / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
        try:
            os.fsync(f.fileno())
        except OSError:
            pass


def test_a_full_disk_refuses_writes_and_recovers_when_space_returns(cluster):
    c = cluster
    data = c.dir / "node3"
    _mount_tmpfs(data, "48m")
    try:
        c.start_all()
        for k in range(3):
            assert c.register(1 + k % 3, f"before{k}")[0] == 200
        _fill(data)
        # the others go on; node 3 finds its disk full as soon as it has to write
        k = 0

        def refused() -> bool:
            nonlocal k
            k += 1
            assert c.register(1 + k % 2, f"during{k}")[0] == 200
            status, body = c.register(3, f"to-full{k}", wait=False)
            return status == 507 and body["error"] == "disk_full" and "disk" in body["detail"]
        wait_for(refused, 30, "node 3 to refuse a write with disk_full")
        assert c.get(3, "/v1/status")["node_id"] == "node3"   # it still answers reads
        assert "is full" in (c.dir / "node3.log").read_text()
        (data / "filler").unlink()
        wait_for(lambda: c.register(3, "after")[0] == 200, 30, "node 3 to take writes again")
        c.wait_for_converged(30)
        assert _same_chain(c, 3, 1)
        c.stop_all()
        for i in (1, 2, 3):
            rep = verify(c.dir / f"node{i}", workers=1)
            assert rep.ok, (i, rep.reason)
    finally:
        c.stop_all()
        subprocess.run(["umount", str(data)], check=False)


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_a_node_whose_last_write_was_cut_short_recovers_without_diverging(cluster, damage):
    c = cluster
    c.start_all()
    for k in range(12):
        assert c.register(1 + k % 3, f"c{k}")[0] == 200
    victim = next(i for i in (1, 2, 3) if i != c.leader())
    c.stop(victim, signal.SIGKILL)
    wal = c.dir / f"node{victim}" / "ledger.db-wal"
    size = wal.stat().st_size
    assert size > 4096, "the write-ahead log holds the latest writes"
    with open(wal, "r+b") as f:
        if damage == "truncate":       # the last write torn off part-way
            f.truncate(size - 3000)
        else:                          # the last write's bytes garbled
            f.seek(size - 2000)
            f.write(os.urandom(1000))
    for k in range(3):
        assert c.register(1 if victim != 1 else 2, f"while-down{k}")[0] == 200
    c.start(victim)
    wait_for(lambda: c.status(victim)["role"] in ("follower", "leader"), 30, "the node to start again")
    c.wait_for_converged(30)
    ref = next(i for i in (1, 2, 3) if i != victim)
    assert _same_chain(c, victim, ref)
    assert c.register(victim, "after")[0] == 200
    c.stop_all()
    for i in (1, 2, 3):
        rep = verify(c.dir / f"node{i}", workers=1)
        assert rep.ok, (i, rep.reason)


def test_a_node_with_a_damaged_database_refuses_to_start_with_one_line(cluster):
    c = cluster
    c.start_all()
    assert c.register(1, "x")[0] == 200
    c.stop_all()
    db = c.dir / "node2" / "ledger.db"
    with open(db, "r+b") as f:   # the database header garbled
        f.seek(0)
        f.write(os.urandom(100))
    out = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "node", "--config",
                          str(c.dir / "node2.toml")], capture_output=True, text=True, timeout=60, cwd=c.dir)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "node2" in lines[0] and "damaged" in lines[0], out.stderr
