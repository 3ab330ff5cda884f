"""`crmledger node --config FILE`: one node in the foreground, until SIGTERM or Ctrl-C.
One task group owns every task; the stop event set by a signal hands leadership over,
stops the HTTP server and the peer links, and closes storage."""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sqlite3
import ssl
import sys
import time

from aiohttp import web

from crmledger.node.api import make_app
from crmledger.node.httpguard import GuardedRunner
from crmledger.node.config import ConfigError, load_config, read_private_key
from crmledger.ledger.genesis import GenesisError
from crmledger.node.runtime import Node, NodeError


class _JsonLines(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, r: logging.LogRecord) -> str:
        return json.dumps({"ts": round(r.created, 3), "node": self.node_id, "level": r.levelname.lower(),
                           "logger": r.name, "msg": r.getMessage()})


def _time_gc(metrics) -> None:
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            metrics.gc_pause.labels(generation=str(info["generation"])).observe(time.perf_counter() - started[0])
    gc.callbacks.append(callback)


def _api_tls(cfg) -> ssl.SSLContext | None:
    if cfg.api_tls_cert is None:
        return None
    read_private_key(cfg.api_tls_key)   # refused when others may read it
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.api_tls_cert, cfg.api_tls_key)
    return ctx


async def serve(node: Node) -> None:
    _time_gc(node.metrics)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log = logging.getLogger("crmledger.node")
    runner = GuardedRunner(make_app(node), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        node.on_removed = stop.set   # voted out: it stops as if told to
        async with node.running():
            host, _, port = node.cfg.api_listen.rpartition(":")
            tls = _api_tls(node.cfg)
            await web.TCPSite(runner, host, int(port), ssl_context=tls).start()
            log.info("serving %s on %s, peers on %s", "HTTPS" if tls else "HTTP", node.cfg.api_listen,
                     node.me.peer_addr)
            gc.freeze()   # what start-up made lives as long as the process: keep it out of collections
            await stop.wait()
            log.info("stopping")
            await node.hand_over()   # submissions refused from here on; a leader hands over
            await runner.cleanup()   # ends the event streams, lets requests in flight finish
    finally:
        if runner.server is not None:   # the node stopped by itself: stop serving too
            await runner.cleanup()
    log.info("stopped")


def run(config_path: str) -> int:
    try:
        cfg = load_config(config_path)
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        logging.getLogger().handlers[0].setFormatter(_JsonLines(cfg.node_id))
        node = Node(cfg)
        _api_tls(cfg)   # a certificate that cannot be loaded stops the node before it starts
    except (ConfigError, GenesisError, NodeError, ValueError, OSError, ssl.SSLError) as e:
        print(f"crmledger node: {e}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:
        print(f"crmledger node: the data folder {cfg.data_dir} is damaged ({e}): restore it from a backup, or "
              f"move it away to have this node fetch the chain from the others again", file=sys.stderr)
        return 2
    import uvloop
    # heavy reads run in threads: let the loop thread, which drives Raft, have the
    # interpreter back within a millisecond rather than five
    sys.setswitchinterval(0.001)
    t = time.monotonic()
    uvloop.run(serve(node))
    logging.getLogger("crmledger.node").info("ran for %.1f s", time.monotonic() - t)
    return 0
