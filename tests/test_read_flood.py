"""Reads never stall consensus: real node processes, the leader flooded with the most
expensive reads there are (whole pages of a long history both ways, full blocks, event
replays from the first block) while another member's batches commit, and the followers'
gaps between the leader's Raft messages and the leader's /v1/status answers are
measured."""
import asyncio
import http.client
import json
import multiprocessing
import os
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import aiohttp
import pytest

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import sign_tx
from tests.cluster_kit import Cluster, wait_for

pytestmark = pytest.mark.solo   # it measures latency: run alone, not beside other tests

ENTRIES = 20_000
FLOOD_S = 6.0
READERS = 12
GAP_LIMIT = 0.5   # s: half the election timeout of the test cluster (10 ticks of 100 ms)


def _observations_over(c: Cluster, i: int, histogram: str, limit: float) -> int:
    """How many observations node i's histogram `histogram` holds above `limit`."""
    text = c.get_text(i, "/metrics")
    count = float(re.search(rf"^{histogram}_count (\S+)$", text, re.M).group(1))
    under = float(re.search(rf'^{histogram}_bucket{{le="{limit}"}} (\S+)$', text, re.M).group(1))
    return int(count - under)


def _gaps_over(c: Cluster, i: int, limit: float) -> int:
    """How many gaps between the leader's Raft messages node i has seen above `limit`."""
    return _observations_over(c, i, "crmledger_raft_leader_gap_seconds", limit)


def _poll_status(c: Cluster, i: int, stop: threading.Event, out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", c.base + i, timeout=5)
    while not stop.is_set():
        t = time.perf_counter()
        conn.request("GET", "/v1/status")
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t)
        assert r.status == 200
        stop.wait(0.05)
    conn.close()


async def _write(url: str, key, until: float, done: dict) -> None:
    """Meanwhile, batches from another member, each waited for: consensus goes on."""
    async with aiohttp.ClientSession(url) as s:
        n = 0
        while time.monotonic() < until:
            n += 1
            envs = [sign_tx(key, "customer.register", "org2", f"w{n}-{i}", int(time.time() * 1000), {
                "customer_id": f"w{n}-{i}", "customer_key": None, "profile_hash": "ab" * 32}) for i in range(200)]
            async with s.post("/v1/tx/batch", json=envs) as r:
                last = (await r.json())[-1]["tx_id"]
            while time.monotonic() < until + 10:
                async with s.get(f"/v1/tx/{last}") as r:
                    if (await r.json())["status"] == "committed":
                        done["written"] = done.get("written", 0) + len(envs)
                        break
                await asyncio.sleep(0.05)


async def _flood(url: str, height: int, until: float, done: dict) -> None:
    paths = ["/v1/customers/c1/history?order=desc&limit=1000", "/v1/customers/c1/history?limit=1000",
             "/v1/customers/c1/history?order=desc&limit=1000&after={h}.0", "/v1/blocks/{h}?full=1"]
    async with aiohttp.ClientSession(url) as s:
        async def one(k: int) -> None:
            n = k
            while time.monotonic() < until:
                n += 1
                if n % 9 == 0:   # an event stream replaying every block from the first
                    async with s.get("/v1/events?from_height=1") as r:
                        got = 0
                        async for _ in r.content.iter_chunked(1 << 16):
                            got += 1
                            if got > 20 or time.monotonic() > until:
                                break
                    done["events"] = done.get("events", 0) + 1
                    continue
                path = paths[n % len(paths)].format(h=1 + (n * 7919) % height)
                async with s.get(path) as r:
                    body = await r.read()
                    done[r.status] = done.get(r.status, 0) + 1
                    if r.status == 200:
                        done["bytes"] = done.get("bytes", 0) + len(body)
        await asyncio.gather(*(one(k) for k in range(READERS)))


def _load(url: str, height: int, writer_pem: bytes, seconds: float) -> dict:
    """The flood and the writer, for FLOOD_S seconds (run in a process of its own, at a
    low priority: these clients stand for other machines, and here they share the
    nodes' two cores)."""
    os.nice(10)
    done: dict = {}
    until = time.monotonic() + seconds

    async def both():
        await asyncio.gather(_flood(url, height, until, done),
                             _write(url, SigningKey.from_pem(writer_pem), until, done))
    asyncio.run(both())
    return done


def test_reads_flooding_the_leader_never_stall_consensus(tmp_path):
    c = Cluster(tmp_path)
    try:
        leader = c.start_all()
        key = c.org_keys[1]
        assert c.register(leader, "c1")[0] == 200
        now = int(time.time() * 1000)
        last = None
        for b in range(ENTRIES // 1000):
            envs = [sign_tx(key, "loyalty.issue", "org1", f"f{b}-{i}", now, {"customer_id": "c1", "program": "p",
                                                                            "amount": 1}) for i in range(1000)]
            status, out = c.post(leader, "/v1/tx/batch", envs)
            assert status == 202 and all(o["status_code"] == 202 for o in out), out[:3]
            last = out[-1]["tx_id"]   # each batch committed before the next: within every budget
            wait_for(lambda: c.get(leader, f"/v1/tx/{last}")["status"] == "committed", 60, "a batch to commit")
        before = c.status(leader)
        assert before["role"] == "leader"
        followers = [i for i in c.procs if i != leader]
        gaps_before = {i: _gaps_over(c, i, GAP_LIMIT) for i in followers}

        stop, latencies = threading.Event(), []
        poller = threading.Thread(target=_poll_status, args=(c, leader, stop, latencies))
        poller.start()
        try:
            # the load comes from a process of its own, so that the poller's answers are
            # the node's, not those of a client busy reading megabytes
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                done = pool.submit(_load, c.url(leader), before["height"], c.org_keys[2].to_pem(),
                                   FLOOD_S).result(timeout=FLOOD_S + 60)
        finally:
            stop.set()
            poller.join()
        lag = _observations_over(c, leader, "crmledger_event_loop_lag_seconds", 0.05)

        after = c.status(leader)
        assert (after["role"], after["term"]) == ("leader", before["term"]), (before, after)
        assert after["height"] > before["height"]
        for i in followers:
            st = c.status(i)
            assert (st["term"], st["leader_id"]) == (before["term"], f"node{leader}"), st
            assert _gaps_over(c, i, GAP_LIMIT) == gaps_before[i], f"node{i} saw the leader fall silent"
        assert done.get(200, 0) >= 30 and done.get("bytes", 0) > 5_000_000, done   # the reads were heavy
        assert done.get("written", 0) >= 1000, done   # and commits went on
        assert latencies and max(latencies) < 0.1, (
            f"/v1/status took up to {max(latencies) * 1000:.0f} ms ({len(latencies)} polls; the leader's loop "
            f"was late by over 50 ms {lag} times since it started), {json.dumps(done)}")
        # the history the flood read is whole and in order
        page = c.get(leader, "/v1/customers/c1/history?order=desc&limit=1000")
        assert len(page["history"]) == 1000 and page["next"]
    finally:
        c.stop_all()
