"""A bounded cache of recently used entries in two generations: entries are put in the
young one; when it holds half the bound it becomes the old one and the oldest entries
go. A hit in the old generation moves up. Plain dictionaries, so a put or a hit costs
about as much as a dictionary lookup. It holds at most `bound` entries, plus those of
the last `put_all` (a block's changes are put at once)."""
from __future__ import annotations

from typing import Any, Hashable, Iterable


class RecentCache:
    __slots__ = ("half", "young", "old")

    def __init__(self, bound: int) -> None:
        self.half = max(1, bound // 2)
        self.young: dict = {}
        self.old: dict = {}

    def get(self, key: Hashable) -> Any:
        v = self.young.get(key)
        if v is None:
            v = self.old.get(key)
            if v is not None:
                self.put_all(((key, v),))
        return v

    def put_all(self, items: Iterable[tuple[Hashable, Any]]) -> None:
        young = self.young
        for k, v in items:
            young[k] = v
        if len(young) >= self.half:
            self.old, self.young = young, {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)
