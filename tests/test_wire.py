"""The peer wire format: strict decoding, bounded frames; anything else is a WireError."""
import asyncio
import struct

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from crmledger.consensus import ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMeta
from crmledger.node.wire import MAX_FRAME, WireError, frame, message_from_wire, message_to_wire, read_frame


def _read(data: bytes):
    async def go():
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        return await read_frame(r)
    return asyncio.run(go())


def test_raft_messages_round_trip():
    snap = Snapshot(SnapshotMeta(9, 3, ConfState(frozenset({1, 2}), frozenset({3}), frozenset({3}))), b"d")
    for m in [Message(MessageType.APP, 2, 1, 3, 2, 7, (Entry(3, 8, b"x"), Entry(3, 9, b"", EntryType.CONF_CHANGE)),
                      6, False, 0, None, b""),
              Message(MessageType.SNAP, 2, 1, 3, snapshot=snap),
              Message(MessageType.VOTE, 3, 1, 4, 2, 10, context=b"transfer")]:
        assert message_from_wire(msgpack.unpackb(msgpack.packb(message_to_wire(m)), raw=False)) == m
    assert _read(frame("raft", message_to_wire(Message(MessageType.HEARTBEAT, 2, 1, 1)))) [0] == "raft"


@pytest.mark.parametrize("data", [
    struct.pack(">I", 0),
    struct.pack(">I", MAX_FRAME + 1),
    struct.pack(">I", 3) + b"\xc1\xc1\xc1",                       # not msgpack
    struct.pack(">I", 4) + msgpack.packb([2, "raft", None]),      # another version
    frame("raft", None).replace(b"raft", b"rafx"),               # unknown kind
])
def test_bad_frames(data):
    with pytest.raises(WireError):
        _read(data)


_any = st.recursive(st.none() | st.booleans() | st.integers(-5, 2 ** 64) | st.binary(max_size=4) | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=13), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_any)
def test_any_decoded_value_is_a_message_or_a_wire_error(obj):
    try:
        m = message_from_wire(obj)
    except WireError:
        return
    assert isinstance(m, Message)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_on_the_link(data):
    try:
        _read(struct.pack(">I", len(data)) + data)
    except (WireError, asyncio.IncompleteReadError):
        pass
