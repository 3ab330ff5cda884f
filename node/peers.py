"""Peer links: persistent, mutually authenticated TLS 1.3 connections between the nodes
of the consortium in force only (`update` follows its changes: a node voted in is dialled
and accepted, one voted out is no longer, and its links are closed). Every node dials every other node for what it sends, and accepts
their connections for what it receives. A peer is known by the SHA-256 of its
certificate, pinned in the genesis or in the vote that added it; an unknown certificate, a malformed or oversized
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

from crmledger.ledger.consortium import Consortium
from crmledger.ledger.genesis import NodeInfo
from crmledger.node.wire import WireError, frame, read_frame

log = logging.getLogger("crmledger.peers")
Handler = Callable[[str, str, object], None]
Lost = Callable[[str], None]


def _context(server: bool, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False          # peers are identified by their pinned certificate
    ctx.verify_mode = ssl.CERT_REQUIRED
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
    def __init__(self, me: NodeInfo, consortium: Consortium, genesis_hash: str, cert: str, key: str,
                 on_frame: Handler, queue_size: int = 8192, queue_bytes: int = 64 << 20, on_lost: Lost | None = None,
                 on_up: Lost | None = None) -> None:
        self.me = me
        self.genesis_hash = genesis_hash
        self.on_frame = on_frame
        self.on_lost = on_lost   # told when a peer's established link ends at once (closed or reset)
        self.on_up = on_up       # told when the link to a peer is up (what it missed may be sent again)
        self.queue = (queue_size, queue_bytes)
        self.server_ctx = _context(True, cert, key)
        self.client_ctx = _context(False, cert, key)
        self._trusted: set[str] = set()
        self.by_fingerprint: dict[str, NodeInfo] = {}
        self.peers: dict[str, NodeInfo] = {}
        self.outboxes: dict[str, _Outbox] = {}
        self.connected: dict[str, bool] = {}
        # set when a peer connects to us: it is up, so the dialer backing off from it
        # tries again at once
        self._seen: dict[str, asyncio.Event] = {}
        self._dialers: dict[str, asyncio.Task] = {}
        self.dialing = False
        self.counters: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._inbound: dict[asyncio.StreamWriter, str | None] = {}   # -> the peer, once known
        self._closing = False
        self.update(consortium)

    def update(self, consortium: Consortium, linger: frozenset[str] = frozenset()) -> None:
        """Follow the consortium in force: trust and dial the nodes it added, stop
        dialling and accepting the nodes it removed, and close their links — except the
        removed nodes in `linger` (still in the Raft group, which must tell them so)."""
        nodes = dict(consortium.nodes)
        nodes.update({nid: self.peers[nid] for nid in linger if nid in self.peers and nid not in nodes})
        for n in nodes.values():
            if n.tls_cert and n.tls_cert not in self._trusted:
                for ctx in (self.server_ctx, self.client_ctx):
                    ctx.load_verify_locations(cadata=n.tls_cert)
                self._trusted.add(n.tls_cert)
        self.by_fingerprint = {n.tls_cert_sha256: n for n in nodes.values() if n.tls_cert_sha256}
        now = {nid: n for nid, n in nodes.items() if nid != self.me.node_id}
        for nid in [p for p in self.peers if p not in now]:
            log.info("%s is no longer a node of the consortium: its links are closed", nid)
            del self.peers[nid], self.outboxes[nid], self.connected[nid], self._seen[nid]
            t = self._dialers.pop(nid, None)
            if t is not None:
                t.cancel()
            for w, peer in list(self._inbound.items()):
                if peer == nid:
                    w.close()
        for nid, n in now.items():
            if nid not in self.peers:
                self.outboxes[nid] = _Outbox(*self.queue)
                self.connected[nid] = False
                self._seen[nid] = asyncio.Event()
            self.peers[nid] = n
            if self.dialing and nid not in self._dialers:
                self._dialers[nid] = asyncio.get_running_loop().create_task(self.dial_forever(nid))

    def start_dialing(self) -> None:
        """Dial every peer, now and as the consortium adds them (until `close`)."""
        self.dialing = True
        for nid in self.peers:
            if nid not in self._dialers:
                self._dialers[nid] = asyncio.get_running_loop().create_task(self.dial_forever(nid))

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
        peer, box, seen, delay = self.peers[node_id], self.outboxes[node_id], self._seen[node_id], 0.05
        host, _, port = peer.peer_addr.rpartition(":")
        while True:
            writer = None
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port), ssl=self.client_ctx), timeout=5)
                if _peer_fingerprint(writer) != peer.tls_cert_sha256:
                    self.counters["peer_certificate_mismatch"] += 1
                    raise ConnectionError(f"{node_id} presented a certificate not pinned for it")
                writer.write(frame("hello", {"node_id": self.me.node_id, "genesis": self.genesis_hash}))
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
                if self.connected.get(node_id):
                    log.info("link to %s lost: %s", node_id, e)
                self.counters["dial_failures"] += 1
            finally:
                if node_id in self.connected:   # (not when it was removed)
                    self.connected[node_id] = False
                box.link(False)
                if writer is not None:
                    writer.close()
            seen.clear()
            try:
                await asyncio.wait_for(seen.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 2.0)

    # -- receiving ------------------------------------------------------------------------
    async def start_server(self) -> None:
        host, _, port = self.me.peer_addr.rpartition(":")
        # a certificate that no node of the consortium has fails the handshake itself (uvloop cannot
        # upgrade a server stream to TLS later, so that refusal is not counted here)
        self._server = await asyncio.start_server(self._accept, host, int(port), ssl=self.server_ctx)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._inbound[writer] = None
        peer = None
        try:
            peer = self.by_fingerprint.get(_peer_fingerprint(writer) or "")
            if peer is None or peer.node_id == self.me.node_id:
                self.counters["peer_refused_unknown_certificate"] += 1
                return
            kind, body = await read_frame(reader)
            if kind != "hello" or type(body) is not dict or body.get("node_id") != peer.node_id \
                    or body.get("genesis") != self.genesis_hash:
                self.counters["peer_refused_bad_hello"] += 1
                return
            if peer.node_id not in self.peers:   # removed while it said hello
                return
            self._inbound[writer] = peer.node_id
            self._seen[peer.node_id].set()
            while True:
                kind, body = await read_frame(reader)
                self.on_frame(peer.node_id, kind, body)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            # the peer's end was closed or reset: its process is gone (a stopped process
            # or a cut link says nothing, and is left to the Raft timeouts)
            if peer is not None and self.on_lost is not None and not self._closing and peer.node_id in self.peers:
                self.on_lost(peer.node_id)
        except WireError as e:
            self.counters["frames_malformed"] += 1
            log.warning("dropping a peer link: %s", e)
        finally:
            self._inbound.pop(writer, None)
            writer.close()

    async def close(self) -> None:
        self._closing = True
        for t in self._dialers.values():
            t.cancel()
        self._dialers.clear()
        if self._server is not None:
            self._server.close()
        for w in list(self._inbound):
            w.close()
        if self._server is not None:
            await self._server.wait_closed()
