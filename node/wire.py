"""The peer wire format: length-prefixed msgpack frames `[version, kind, body]`, decoded
strictly and bounded in size, and the codec of Raft messages. A frame that breaks any
rule raises `WireError`; the link that sent it is dropped."""
from __future__ import annotations

import asyncio
import struct

import msgpack

from crmledger.consensus import (
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMeta,
)

VERSION = 1
MAX_FRAME = 64 << 20
KINDS = frozenset({"hello", "raft", "txs", "get_blocks", "blocks", "call", "reply", "private"})


class WireError(ValueError):
    pass


def frame(kind: str, body) -> bytes:
    payload = msgpack.packb([VERSION, kind, body], use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise WireError("frame too large")
    return struct.pack(">I", len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[str, object]:
    head = await reader.readexactly(4)
    (n,) = struct.unpack(">I", head)
    if n == 0 or n > MAX_FRAME:
        raise WireError(f"frame length {n} out of bounds")
    payload = await reader.readexactly(n)
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as e:  # msgpack signals malformed input with several exception types
        raise WireError(f"undecodable frame: {type(e).__name__}") from None
    if type(obj) is not list or len(obj) != 3 or obj[0] != VERSION or obj[1] not in KINDS:
        raise WireError("not a frame of this protocol version")
    return obj[1], obj[2]


# -- Raft messages --------------------------------------------------------------------------
def _conf_to_wire(cs: ConfState) -> list:
    return [sorted(cs.voters), sorted(cs.learners), sorted(cs.promoting)]


def message_to_wire(m: Message) -> list:
    snap = None
    if m.snapshot is not None:
        s = m.snapshot
        snap = [s.index, s.term, _conf_to_wire(s.meta.conf_state), s.data]
    return [int(m.type), m.to, m.frm, m.term, m.log_term, m.index,
            [[e.term, e.index, int(e.type), e.data] for e in m.entries],
            m.commit, m.reject, m.reject_hint, snap, m.context]


def _int(v) -> int:
    if type(v) is not int or v < 0 or v >= 1 << 63:
        raise WireError("expected a non-negative integer")
    return v


def _ids(v) -> frozenset[int]:
    if type(v) is not list:
        raise WireError("expected a list of ids")
    return frozenset(_int(x) for x in v)


def message_from_wire(obj) -> Message:
    if type(obj) is not list or len(obj) != 12:
        raise WireError("a Raft message has 12 fields")
    t, to, frm, term, log_term, index, ents, commit, reject, hint, snap, ctx = obj
    try:
        mtype = MessageType(t)
    except ValueError:
        raise WireError(f"unknown message type {t!r}") from None
    if type(ents) is not list or type(reject) is not bool or type(ctx) is not bytes:
        raise WireError("malformed Raft message")
    entries = []
    for e in ents:
        if type(e) is not list or len(e) != 4 or type(e[3]) is not bytes:
            raise WireError("malformed entry")
        try:
            et = EntryType(e[2])
        except ValueError:
            raise WireError("unknown entry type") from None
        entries.append(Entry(_int(e[0]), _int(e[1]), e[3], et))
    snapshot = None
    if snap is not None:
        if type(snap) is not list or len(snap) != 4 or type(snap[2]) is not list or len(snap[2]) != 3 \
                or type(snap[3]) is not bytes:
            raise WireError("malformed snapshot")
        cs = ConfState(_ids(snap[2][0]), _ids(snap[2][1]), _ids(snap[2][2]))
        snapshot = Snapshot(SnapshotMeta(_int(snap[0]), _int(snap[1]), cs), snap[3])
    return Message(mtype, _int(to), _int(frm), _int(term), _int(log_term), _int(index), tuple(entries),
                   _int(commit), reject, _int(hint), snapshot, ctx)
