"""Peer links: persistent, mutually authenticated TLS 1.3 connections between the nodes
of the genesis only. Every node dials every other node for what it sends, and accepts
their connections for what it receives. A peer is known by the SHA-256 of its
certificate, pinned in the genesis; an unknown certificate, a malformed or oversized
frame ends the connection (counted), never the node. Each outgoing link has a queue
bounded in frames and bytes: when a peer cannot keep up, the oldest frames are dropped,
and while the link is down nothing is queued at all — Raft recovers from lost messages
(a peer that was away gets what it misses, as entries or as a snapshot, when it is back)
and stale ones are worse than none. Drops are counted."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections import Counter, deque
from typing import Callable

from crmledger.ledger.genesis import Genesis, NodeInfo
from crmledger.node.wire import WireError, frame, read_frame

log = logging.getLogger("crmledger.peers")
Handler = Callable[[str, str, object], None]
Lost = Callable[[str], None]


def _context(server: bool, cert: str, key: str, genesis: Genesis) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False          # peers are identified by their pinned certificate
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata="".join(n.tls_cert for n in genesis.nodes.values() if n.tls_cert))
    return ctx


def _peer_fingerprint(writer: asyncio.StreamWriter) -> str | None:
    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    return hashlib.sha256(der).hexdigest() if der else None


class _Outbox:
    def __init__(self, size: int, max_bytes: int) -> None:
        self.q: deque[bytes] = deque()
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.up = False
        self.ready = asyncio.Event()

    def put(self, data: bytes) -> bool:
        """False when something was dropped to make room, or `data` itself for a link down."""
        if not self.up:
            return False
        self.q.append(data)
        self.bytes += len(data)
        dropped = False
        while len(self.q) > self.size or (self.bytes > self.max_bytes and len(self.q) > 1):
            self.bytes -= len(self.q.popleft())
            dropped = True
        self.ready.set()
        return not dropped

    def pop(self) -> bytes:
        data = self.q.popleft()
        self.bytes -= len(data)
        return data

    def link(self, up: bool) -> None:
        self.up = up
        if not up:
            self.q.clear()
            self.bytes = 0


class PeerLinks:
    def __init__(self, me: NodeInfo, genesis: Genesis, cert: str, key: str, on_frame: Handler,
                 queue_size: int = 8192, queue_bytes: int = 64 << 20, on_lost: Lost | None = None,
                 on_up: Lost | None = None) -> None:
        self.me = me
        self.genesis = genesis
        self.on_frame = on_frame
        self.on_lost = on_lost   # told when a peer's established link ends at once (closed or reset)
        self.on_up = on_up       # told when the link to a peer is up (what it missed may be sent again)
        self.server_ctx = _context(True, cert, key, genesis)
        self.client_ctx = _context(False, cert, key, genesis)
        self.by_fingerprint = {n.tls_cert_sha256: n for n in genesis.nodes.values() if n.tls_cert_sha256}
        self.peers = {nid: n for nid, n in genesis.nodes.items() if nid != me.node_id}
        self.outboxes = {nid: _Outbox(queue_size, queue_bytes) for nid in self.peers}
        self.connected: dict[str, bool] = {nid: False for nid in self.peers}
        # set when a peer connects to us: it is up, so the dialer backing off from it
        # tries again at once
        self._seen: dict[str, asyncio.Event] = {nid: asyncio.Event() for nid in self.peers}
        self.counters: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._inbound: set[asyncio.StreamWriter] = set()
        self._closing = False

    # -- sending --------------------------------------------------------------------------
    def send(self, node_id: str, kind: str, body) -> None:
        box = self.outboxes.get(node_id)
        if box is None:
            self.counters["send_to_unknown_peer"] += 1
            return
        if not box.put(frame(kind, body)):
            self.counters["frames_dropped"] += 1

    def broadcast(self, kind: str, body) -> None:
        data = frame(kind, body)
        for nid, box in self.outboxes.items():
            if not box.put(data):
                self.counters["frames_dropped"] += 1

    async def dial_forever(self, node_id: str) -> None:
        """Keep a connection to `node_id` open and feed it the outbox; back off on failure."""
        peer, box, delay = self.peers[node_id], self.outboxes[node_id], 0.05
        host, _, port = peer.peer_addr.rpartition(":")
        while True:
            writer = None
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port), ssl=self.client_ctx), timeout=5)
                if _peer_fingerprint(writer) != peer.tls_cert_sha256:
                    self.counters["peer_certificate_mismatch"] += 1
                    raise ConnectionError(f"{node_id} presented a certificate not pinned for it")
                writer.write(frame("hello", {"node_id": self.me.node_id, "genesis": self.genesis.hash}))
                self.connected[node_id] = True
                box.link(True)
                delay = 0.05
                if self.on_up is not None:
                    self.on_up(node_id)
                while True:
                    while box.q:
                        writer.write(box.pop())
                    box.ready.clear()
                    await writer.drain()
                    if not box.q:
                        await box.ready.wait()
            except asyncio.CancelledError:
                raise
            except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as e:
                if self.connected[node_id]:
                    log.info("link to %s lost: %s", node_id, e)
                self.counters["dial_failures"] += 1
            finally:
                self.connected[node_id] = False
                box.link(False)
                if writer is not None:
                    writer.close()
            seen = self._seen[node_id]
            seen.clear()
            try:
                await asyncio.wait_for(seen.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 2.0)

    # -- receiving ------------------------------------------------------------------------
    async def start_server(self) -> None:
        host, _, port = self.me.peer_addr.rpartition(":")
        # a certificate that no genesis node has fails the handshake itself (uvloop cannot
        # upgrade a server stream to TLS later, so that refusal is not counted here)
        self._server = await asyncio.start_server(self._accept, host, int(port), ssl=self.server_ctx)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._inbound.add(writer)
        peer = None
        try:
            peer = self.by_fingerprint.get(_peer_fingerprint(writer) or "")
            if peer is None or peer.node_id == self.me.node_id:
                self.counters["peer_refused_unknown_certificate"] += 1
                return
            kind, body = await read_frame(reader)
            if kind != "hello" or type(body) is not dict or body.get("node_id") != peer.node_id \
                    or body.get("genesis") != self.genesis.hash:
                self.counters["peer_refused_bad_hello"] += 1
                return
            self._seen[peer.node_id].set()
            while True:
                kind, body = await read_frame(reader)
                self.on_frame(peer.node_id, kind, body)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            # the peer's end was closed or reset: its process is gone (a stopped process
            # or a cut link says nothing, and is left to the Raft timeouts)
            if peer is not None and self.on_lost is not None and not self._closing:
                self.on_lost(peer.node_id)
        except WireError as e:
            self.counters["frames_malformed"] += 1
            log.warning("dropping a peer link: %s", e)
        finally:
            self._inbound.discard(writer)
            writer.close()

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for w in list(self._inbound):
            w.close()
        if self._server is not None:
            await self._server.wait_closed()
