"""A priority gate: at most ``slots`` requests run at once; waiting ones start highest
priority first (ties in arrival order), as bittensor's priority thread pool orders them."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import List, Tuple

__all__ = ["PriorityGate"]


class PriorityGate:
    """Counts free slots on one event loop; not thread-safe (loop thread only)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("max_workers must be at least 1")
        self._free = slots
        self._waiting: List[Tuple[float, int, "asyncio.Future[None]"]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot (including ones whose caller has gone)."""
        return len(self._waiting)

    async def acquire(self, priority: float) -> None:
        """Wait for a slot; a cancelled waiter gives up its place (and a slot it was just
        handed)."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()
            raise

    def release(self) -> None:
        """Give the slot to the best waiter still waiting, else free it."""
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1
