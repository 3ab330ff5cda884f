"""Clients that write and read through the faults, recording a History: writers register
customers (`?wait=commit`) at random nodes; a reader asks random nodes for the status of
transactions whose commit was already acknowledged. Bounded in count and in time."""
from __future__ import annotations

import asyncio
import random
import time

import aiohttp

from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import admit, sign_tx
from crmledger.node.faults.history import History, Op

WAIT_S = 3.0          # how long a node waits for the commit before answering 504
CLIENT_TIMEOUT = 6.0  # how long a client waits for any answer


async def write(session: aiohttp.ClientSession, url: str, env: dict, history: History, node: int) -> Op:
    """Send one transaction, waiting for its commit; its operation, recorded and ended."""
    op = history.invoke(admit(env).tx_id, node)
    try:
        async with session.post(f"{url}/v1/tx?wait=commit&timeout={WAIT_S}", json=env,
                                timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as r:
            body = await r.json(content_type=None)
            code = body.get("code") if isinstance(body, dict) else None
            if r.status == 200 or (r.status == 409 and code == "already_committed"):
                history.end(op, "ok", code)
            elif r.status == 400:
                history.end(op, "fail", code)
            else:
                history.end(op, "unknown", code or str(r.status))
                if r.status == 503:   # overloaded, no leader, stopping: back off as told
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")) * random.uniform(0.2, 0.6))
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        history.end(op, "unknown", type(e).__name__)
        await asyncio.sleep(0.05)
    return op


async def _writer(k: int, urls: list[str], key: SigningKey, history: History, until: float, max_ops: int,
                  rng: random.Random, session: aiohttp.ClientSession) -> None:
    n = 0
    while time.monotonic() < until and n < max_ops:
        node = rng.randrange(len(urls))
        cid = f"w{k}-{n}-{rng.getrandbits(32):08x}"
        env = sign_tx(key, "customer.register", "org1", cid, int(time.time() * 1000),
                      {"customer_id": cid, "customer_key": None, "profile_hash": "ab" * 32})
        await write(session, urls[node], env, history, node + 1)
        n += 1


async def _reader(urls: list[str], history: History, until: float, rng: random.Random,
                  session: aiohttp.ClientSession) -> None:
    while time.monotonic() < until:
        acked = history.acked()
        if not acked:
            await asyncio.sleep(0.1)
            continue
        op = rng.choice(acked[-200:])
        node = rng.randrange(len(urls))
        try:
            async with session.get(f"{urls[node]}/v1/tx/{op.tx_id}",
                                   timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as r:
                if r.status == 200:
                    history.read_seen(op.tx_id, node + 1, (await r.json())["status"])
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            pass
        await asyncio.sleep(0.05)


async def run_clients(urls: list[str], key: SigningKey, history: History, seconds: float, *, writers: int = 4,
                      max_ops: int = 100_000, seed: int = 0, stop: asyncio.Event | None = None) -> None:
    """Write and read for `seconds` (or until `stop` is set)."""
    rng = random.Random(seed)
    until = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(_writer(k, urls, key, history, until, max_ops // writers,
                                             random.Random(rng.random()), session)) for k in range(writers)]
        tasks.append(asyncio.create_task(_reader(urls, history, until, random.Random(rng.random()), session)))
        if stop is not None:
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([waiter, asyncio.gather(*tasks)], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for t in tasks:
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
