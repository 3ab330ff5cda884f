"""Heavy work off the event loop. The loop that serves HTTP also ticks Raft and answers
peers, so a read that decodes many stored transactions (a page of a customer's history,
a full block, a replay of blocks to an event stream) runs in a reader process, on a
read-only connection of its own (SQLite in WAL mode lets it read beside the writer), and
builds its answer there. At most `workers` such reads run and `queue` more wait; past
that a read is refused with `Busy` (503 with Retry-After), so that a flood of
reads costs the loop nothing but the refusals. `Workers` is the same for work that needs
no store (checking the signatures of a large batch)."""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import multiprocessing
import os
import signal
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from crmledger.ledger.genesis import Genesis, genesis_from_dict
from crmledger.storage.ledger_store import LedgerStore
from crmledger.storage.sqlite import connect

T = TypeVar("T")


class Busy(Exception):
    pass


class Workers:
    """A bounded pool for work that must not hold the event loop: at most `workers` calls
    run and `queue` more wait; past that `run` raises Busy."""

    def __init__(self, name: str, workers: int, queue: int, pool: Executor | None = None) -> None:
        self.limit = workers + queue
        self.queue = queue
        self.active = 0
        self.pool = pool or ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args) -> T:
        if self.active >= self.limit:
            raise Busy()
        self.active += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._call(fn), *args)
        finally:
            self.active -= 1

    def _call(self, fn: Callable[..., T]) -> Callable[..., T]:
        return fn

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# -- in each reader process ---------------------------------------------------------------------
READER_NICENESS = 10   # below the node's own process, which drives Raft
_store: LedgerStore | None = None


def _die_with_parent() -> None:
    """A node killed outright (kill -9) takes its readers with it (Linux's
    PR_SET_PDEATHSIG; elsewhere they end when their pipe to the node closes)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:   # the node died before that took effect
        os._exit(0)


def _open_store(db_path: str, genesis: dict) -> None:
    global _store
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the node stops its readers itself
    os.nice(READER_NICENESS)   # a flood of reads must not take the CPU from consensus
    _store = LedgerStore(connect(db_path, readonly=True, cache_mb=16), genesis_from_dict(genesis),
                         readonly=True, lookups=False)


def _with_store(fn: Callable[..., T], *args) -> T:
    return fn(_store, *args)


def _ready() -> bool:
    return _store is not None


class Reader(Workers):
    """Workers in processes of their own (so that what they decode and encode does not
    compete with the event loop for the interpreter), each with a read-only store of the
    ledger that every call gets as its first argument. `fn` and its arguments go to the
    process by pickling: a module-level function, and plain values."""

    def __init__(self, db_path: Path, genesis: Genesis, workers: int = 2, queue: int = 16) -> None:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_open_store, initargs=(str(db_path), dict(genesis.raw)))
        super().__init__("reader", workers, queue, pool)

    def _call(self, fn: Callable[..., T]) -> Callable[..., T]:
        return functools.partial(_with_store, fn)

    async def warm_up(self) -> None:
        """Start the reader processes now rather than on the first read."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.pool, _ready) for _ in range(self.limit - self.queue)))
