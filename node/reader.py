"""Heavy work off the event loop. The loop that serves HTTP also ticks Raft and answers
peers, so a read that decodes many stored transactions (a page of a customer's history,
a full block, a replay of blocks to an event stream) runs in a worker thread, on a
read-only connection of its own (SQLite in WAL mode lets it read beside the writer), and
builds its answer there. At most `workers` such reads run and `queue` more wait; past
that a read is refused with `Busy` (503 with Retry-After), so that a flood of
reads costs the loop nothing but the refusals. `Workers` is the same for work that needs
no store (checking the signatures of a large batch)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from crmledger.ledger.genesis import Genesis
from crmledger.storage.ledger_store import LedgerStore
from crmledger.storage.sqlite import connect

T = TypeVar("T")


class Busy(Exception):
    pass


class Workers:
    """A bounded pool of threads for work that must not hold the event loop: at most
    `workers` calls run and `queue` more wait; past that `run` raises Busy."""

    def __init__(self, name: str, workers: int, queue: int) -> None:
        self.limit = workers + queue
        self.active = 0
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        return fn(*args)

    async def run(self, fn: Callable[..., T], *args) -> T:
        if self.active >= self.limit:
            raise Busy()
        self.active += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._call, fn, args)
        finally:
            self.active -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class Reader(Workers):
    """Workers whose calls get a read-only store of the ledger as first argument."""

    def __init__(self, db_path: Path, genesis: Genesis, workers: int = 2, queue: int = 16) -> None:
        super().__init__("reader", workers, queue)
        self.db_path = db_path
        self.genesis = genesis
        self.local = threading.local()
        self.stores: list[LedgerStore] = []
        self.lock = threading.Lock()

    def _store(self) -> LedgerStore:
        store = getattr(self.local, "store", None)
        if store is None:
            conn = connect(self.db_path, readonly=True, cache_mb=16)
            store = self.local.store = LedgerStore(conn, self.genesis, readonly=True, lookups=False)
            with self.lock:
                self.stores.append(store)
        return store

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        return fn(self._store(), *args)

    async def run(self, fn: Callable[..., T], *args) -> T:
        """`fn(store, *args)` in a reader thread, `store` reading the ledger read-only."""
        return await super().run(fn, *args)

    def close(self) -> None:
        super().close()
        with self.lock:
            for s in self.stores:
                s.conn.close()
            self.stores.clear()
