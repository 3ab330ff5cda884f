"""Load shedding: how many transactions may wait for a block before this node refuses new
submissions (503 with Retry-After). Past what the cluster commits in `max_queue_ms`, a
transaction taken in would only wait longer and push every other one's latency up; it
is refused at the door instead, before its body is decoded or its signature checked, so
that beyond capacity the node keeps committing at full rate and what it accepts commits
quickly. The commit rate is measured here, from the blocks this node applies."""
from __future__ import annotations

WINDOW_S = 0.5   # the commit rate is re-measured over windows of at least this long


class Backlog:
    def __init__(self, max_queue_ms: int, floor: int) -> None:
        self.max_queue_s = max_queue_ms / 1000
        self.floor = floor           # always room for this many (a full block)
        self.rate = 0.0              # committed transactions per second, smoothed
        self._window: tuple[float, int] | None = None   # (started at, committed since)

    def committed(self, txs: int, now: float) -> None:
        if self._window is None:   # the first block starts the first window
            self._window = (now, 0)
            return
        start, count = self._window
        count += txs
        if now - start >= WINDOW_S:
            rate = count / (now - start)
            self.rate = rate if self.rate == 0 else 0.5 * self.rate + 0.5 * rate
            self._window = (now, 0)
        else:
            self._window = (start, count)

    def limit(self) -> int:
        """The most transactions that may wait for a block now."""
        return max(self.floor, int(self.rate * self.max_queue_s))
