"""Governance through the real processes and the `crmledger org` commands: a key rotated
by vote is refused from the effective block on, an org voted in can act and one voted
out cannot, bad votes are refused with their codes, and every node's chain verifies
with the consortium's changes replayed."""
import json
import subprocess
import sys

import pytest

from crmledger.ledger.keys import SigningKey
from crmledger.node.ops.verify import verify
from tests.cluster_kit import Cluster, running, wait_for


@pytest.fixture
def cluster(tmp_path):
    with running(tmp_path) as c:
        yield c


def org_cmd(c: Cluster, *args: str, node: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "org", *args,
                           "--node", c.url(node)[len("http://"):]], capture_output=True, text=True, timeout=60)


def signed(c: Cluster, org: int, *args: str, node: int = 1) -> subprocess.CompletedProcess:
    return org_cmd(c, *args, "--key", str(c.dir / "keys" / f"org{org}.pem"), "--org", f"org{org}", node=node)


def proposal_id(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[1]


def consortium(c: Cluster, i: int) -> dict:
    return c.get(i, "/v1/consortium")


def test_keys_rotate_and_orgs_join_and_leave_by_vote(cluster, tmp_path):
    c = cluster
    # -- a key rotated by vote: the old key is refused from the effective block on
    new2 = SigningKey.generate()
    (tmp_path / "org2-new.pem").write_bytes(new2.to_pem())
    (tmp_path / "org2-new.pem").chmod(0o600)
    old2 = c.org_keys[2].public_hex
    pid = proposal_id(signed(c, 1, "rotate-key", "org2", old2, new2.public_hex))
    assert signed(c, 1, "vote", pid).returncode == 0
    out = signed(c, 1, "vote", pid)
    assert out.returncode == 1 and "already_voted" in out.stderr
    assert c.register(2, "before-rotation", org=2)[1]["code"] == "valid"
    out = signed(c, 3, "vote", pid, node=3)
    assert out.returncode == 0 and "executed" in out.stdout, out.stdout + out.stderr
    # the old key is no member's now: refused at the door (on the chain, one that got
    # there after the effective block is `forbidden`, see test_governance)
    status, body = c.register(2, "after-rotation", org=2)
    assert status == 403 and body["error"] == "unknown_signer", body
    ok = c.submit(1, new2, "customer.register", "org2", {"customer_id": "by-new-key", "customer_key": None,
                                                           "profile_hash": "ab" * 32})[1]
    assert ok["code"] == "valid", ok
    out = signed(c, 1, "vote", pid)
    assert out.returncode == 1 and "proposal_closed" in out.stderr

    # -- an org voted in can act; then voted out, it cannot, and its own vote never counts
    a4 = SigningKey.generate()
    (tmp_path / "org4.json").write_text(json.dumps({
        "org": "org4", "admins": [a4.public_hex], "contact": {"name": "Org Four"}}))
    pid = proposal_id(signed(c, 3, "propose-add", "--org-file", str(tmp_path / "org4.json")))
    for org in (1, 3):
        assert signed(c, org, "vote", pid).returncode == 0
    wait_for(lambda: all("org4" in consortium(c, i)["orgs"] for i in (1, 2, 3)), what="org4 on every node")
    assert c.submit(2, a4, "customer.register", "org4", {"customer_id": "c4", "customer_key": None,
                                                         "profile_hash": "ab" * 32})[1]["code"] == "valid"
    (tmp_path / "org4.pem").write_bytes(a4.to_pem())
    (tmp_path / "org4.pem").chmod(0o600)
    pid = proposal_id(signed(c, 1, "propose-remove", "org4"))
    out = org_cmd(c, "vote", pid, "--key", str(tmp_path / "org4.pem"), "--org", "org4")
    assert out.returncode == 1 and "forbidden" in out.stderr
    for org in (1, 3):   # 2 of the 3 orgs that vote
        assert signed(c, org, "vote", pid).returncode == 0
    status, body = c.submit(3, a4, "customer.register", "org4", {"customer_id": "c5", "customer_key": None,
                                                                 "profile_hash": "ab" * 32})
    assert status == 403 and body["error"] == "unknown_signer", body   # refused at the door now

    # -- bad input: refused with its code, nothing changed
    before = consortium(c, 1)
    out = signed(c, 1, "propose-remove", "org9")
    assert out.returncode == 1 and "bad_proposal" in out.stderr
    out = signed(c, 1, "rotate-key", "org1", c.org_keys[1].public_hex, "--revoke")
    assert out.returncode == 1 and "bad_proposal" in out.stderr, out.stderr   # its last admin key
    out = signed(c, 1, "vote", "ab" * 32)
    assert out.returncode == 1 and "unknown_proposal" in out.stderr
    out = signed(c, 1, "rotate-key", "org1", "not-a-key", "--revoke")
    assert out.returncode == 2 and "old_key" in out.stderr
    after = consortium(c, 1)
    assert (after["version"], after["orgs"]) == (before["version"], before["orgs"]) == (3, before["orgs"])

    listing = org_cmd(c, "list")
    assert listing.returncode == 0 and "consortium version 3" in listing.stdout
    assert listing.stdout.count("executed") == 3, listing.stdout

    # -- every chain replays the changes
    c.wait_for_converged()
    c.stop_all()
    for i in (1, 2, 3):
        rep = verify(c.dir / f"node{i}", workers=1)
        assert rep.ok, (i, rep.reason)
