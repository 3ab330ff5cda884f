"""The blocking client: the asyncio client (see `aio`) run on an event loop of its own, in
a background thread, so that a CRM without asyncio calls it like any library."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

from .aio import AsyncClient


class Client:
    """The same methods as `AsyncClient`, blocking; `events()` and `history()` are plain
    iterators. Use as a context manager, or call `close()`."""

    def __init__(self, *args, **kwargs) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crmledger-client", daemon=True)
        self._thread.start()
        self._aio = AsyncClient(*args, **kwargs)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._aio.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def _iterate(self, agen) -> Iterator:
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if self._loop.is_running():
                self._run(agen.aclose())

    def events(self, from_height: int = 1) -> Iterator[tuple[str, dict]]:
        return self._iterate(self._aio.events(from_height))

    def history(self, customer_id: str, order: str = "asc", page: int = 1000) -> Iterator[dict]:
        return self._iterate(self._aio.history(customer_id, order, page))

    @property
    def key(self):
        return self._aio.key

    def envelope(self, *args, **kwargs) -> dict:
        return self._aio.envelope(*args, **kwargs)

    def __getattr__(self, name: str):
        attr = getattr(self._aio, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args, **kwargs):
            return self._run(attr(*args, **kwargs))
        call.__name__ = name
        call.__doc__ = attr.__doc__
        return call
