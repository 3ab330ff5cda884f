"""Golden transcripts of the Raft core, as etcd's raft keeps under testdata/: three nodes
on an in-memory network, a scripted scenario, and every Ready each node produces written
out as text (tests/raft_kit.render) and compared line for line with a file under
tests/testdata/raft/. A change in behaviour shows as a diff of that file; after a
deliberate change, `CRMLEDGER_REWRITE_GOLDEN=1` writes the files anew, to be read and
committed with it."""
import os
from pathlib import Path

import pytest

from crmledger.consensus import Message

from tests.raft_kit import honour, make_node, render

DATA = Path(__file__).parent / "testdata" / "raft"


class Net:
    """Three nodes; messages delivered in the order sent; a node can be cut off."""

    def __init__(self) -> None:
        self.nodes = {i: make_node(i, seed=i) for i in (1, 2, 3)}
        self.queue: list[Message] = []
        self.cut: set[int] = set()
        self.lines: list[str] = []

    def flush(self, nid: int) -> None:
        raw, s = self.nodes[nid]
        while raw.has_ready():
            rd = raw.ready()
            self.lines += render(nid, rd)
            self.queue += honour(raw, s, rd)

    def settle(self, limit: int = 500) -> None:
        for i in self.nodes:
            self.flush(i)
        while self.queue and limit:
            limit -= 1
            m = self.queue.pop(0)
            if m.to in self.cut or m.frm in self.cut:
                self.lines.append(f"dropped: {m.type.name} {m.frm}->{m.to}")
                continue
            self.nodes[m.to][0].step(m)
            self.flush(m.to)

    def say(self, what: str) -> None:
        self.lines.append(f"> {what}")

    def elect(self, nid: int) -> None:
        raw = self.nodes[nid][0]
        self.say(f"node {nid} campaigns")
        raw.campaign()
        self.settle()


def _campaign(net: Net) -> None:
    net.elect(1)


def _replicate(net: Net) -> None:
    net.elect(1)
    net.say("node 1 proposes 'x' and 'y'")
    net.nodes[1][0].propose(b"x")
    net.nodes[1][0].propose(b"y")
    net.settle()
    net.say("a heartbeat carries the commit index to the followers")
    net.nodes[1][0].tick()
    net.settle()


def _snapshot(net: Net) -> None:
    net.elect(1)
    net.say("node 3 is cut off; node 1 commits three entries and compacts its log")
    net.cut.add(3)
    for d in (b"a", b"b", b"c"):
        net.nodes[1][0].propose(d)
    net.settle()
    net.nodes[1][0].compact(b"state-at-5")
    net.say("node 3 is back: it is sent the snapshot")
    net.cut.clear()
    net.nodes[1][0].tick()
    net.settle()


@pytest.mark.parametrize("name, script", [("campaign", _campaign), ("replicate", _replicate),
                                          ("snapshot", _snapshot)])
def test_transcript(name, script):
    net = Net()
    script(net)
    got = "\n".join(net.lines) + "\n"
    path = DATA / f"{name}.txt"
    if os.environ.get("CRMLEDGER_REWRITE_GOLDEN") == "1":
        path.write_text(got)
    assert path.exists(), f"{path} is missing: run with CRMLEDGER_REWRITE_GOLDEN=1 and read what it writes"
    assert got == path.read_text()
