"""Small helpers for step-level tests of the Raft core: a node over MemoryStorage with a
seeded RNG, a Ready honoured as the contract says, and a Ready written out as text for
golden transcripts."""
from __future__ import annotations

import random

from crmledger.consensus import (
    ConfChange, Config, EntryType, MemoryStorage, Message, RawNode, Ready,
)


def make_node(nid: int, voters=(1, 2, 3), *, pre_vote: bool = False, check_quorum: bool = False,
              storage: MemoryStorage | None = None, seed: int = 0) -> tuple[RawNode, MemoryStorage]:
    s = storage if storage is not None else MemoryStorage.bootstrapped(list(voters))
    cfg = Config(id=nid, election_tick=10, heartbeat_tick=1, pre_vote=pre_vote, check_quorum=check_quorum)
    return RawNode(cfg, s, random.Random(seed)), s


def honour(raw: RawNode, storage: MemoryStorage, rd: Ready | None = None) -> list[Message]:
    """Take one Ready (or honour `rd`): persist, apply configuration changes, advance;
    returns every message it carried, in the order they may be sent."""
    rd = rd if rd is not None else raw.ready()
    if rd.snapshot is not None:
        storage.apply_snapshot(rd.snapshot)
    if rd.entries:
        storage.append(list(rd.entries))
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    for e in rd.committed_entries:
        if e.type == EntryType.CONF_CHANGE:
            raw.apply_conf_change(ConfChange.decode(e.data))
    raw.advance(rd)
    return list(rd.messages + rd.messages_after_write)


def step(raw: RawNode, storage: MemoryStorage, m: Message) -> list[Message]:
    """Feed one message; the messages that single step produced."""
    raw.step(m)
    return honour(raw, storage) if raw.has_ready() else []


def tick_until(raw: RawNode, storage: MemoryStorage, limit: int = 100) -> list[Message]:
    """Tick until the node has something to send; those messages."""
    for _ in range(limit):
        raw.tick()
        if raw.has_ready():
            out = honour(raw, storage)
            if out:
                return out
    raise AssertionError(f"nothing to send after {limit} ticks")


def _msg(m: Message) -> str:
    parts = [f"{m.type.name} {m.frm}->{m.to} term={m.term}"]
    for name in ("log_term", "index", "commit", "reject_hint"):
        v = getattr(m, name)
        if v:
            parts.append(f"{name}={v}")
    if m.reject:
        parts.append("reject")
    if m.entries:
        parts.append("entries=[" + " ".join(f"{e.term}/{e.index}{'' if not e.data else ':' + e.data.hex()}"
                                            for e in m.entries) + "]")
    if m.snapshot is not None:
        parts.append(f"snapshot={m.snapshot.meta.term}/{m.snapshot.meta.index}")
    return " ".join(parts)


def render(nid: int, rd: Ready) -> list[str]:
    """A Ready as text, one line per part present."""
    out = [f"node {nid} ready:"]
    if rd.soft_state is not None:
        out.append(f"  soft: lead={rd.soft_state.lead} state={rd.soft_state.state.name}")
    if rd.hard_state is not None:
        h = rd.hard_state
        out.append(f"  hard: term={h.term} vote={h.vote} commit={h.commit}")
    if rd.snapshot is not None:
        out.append(f"  snapshot: {rd.snapshot.meta.term}/{rd.snapshot.meta.index}")
    for name in ("entries", "committed_entries"):
        es = getattr(rd, name)
        if es:
            out.append(f"  {name}: " + " ".join(f"{e.term}/{e.index}" + (f":{e.data.hex()}" if e.data else "")
                                                for e in es))
    for m in rd.messages:
        out.append(f"  send: {_msg(m)}")
    for m in rd.messages_after_write:
        out.append(f"  send after write: {_msg(m)}")
    return out
