"""The gate of the synchronous endpoints: how many recognitions run at once and how many may wait; the rest are
refused with ``Throttling`` at once instead of queueing without bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from voxgate.errors import Throttling

T = TypeVar("T")
SYNC_QUEUE_LIMIT = 16  # synchronous requests allowed to wait for the recognizer; more are refused


class SyncGate:
    """Bounds synchronous recognitions: ``concurrency`` run at once, at most ``queue_limit`` wait."""

    def __init__(self, concurrency: int, queue_limit: int) -> None:
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._queue_limit = queue_limit
        self.waiting = 0

    def check(self) -> None:
        """Refuse now (``Throttling``) if a new request would have to wait in a full queue."""
        if self._slots.locked() and self.waiting >= self._queue_limit:
            raise Throttling("too many synchronous recognition requests are waiting; retry shortly")

    async def acquire(self, *, admit: bool = True) -> None:
        """Wait for a turn; ``admit=False`` for later blocks of a request already admitted."""
        if admit:
            self.check()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._slots.release()

    @asynccontextmanager
    async def slot(self, *, admit: bool = True) -> AsyncIterator[None]:
        await self.acquire(admit=admit)
        try:
            yield
        finally:
            self.release()

    async def run(self, fn: Callable[[], T], *, admit: bool = True) -> T:
        """Run blocking ``fn`` in a worker thread during a turn. The turn ends when the thread does, even
        if the caller is cancelled (a client gone mid-request), so the bound holds for real CPU work."""
        await self.acquire(admit=admit)
        try:
            work = asyncio.ensure_future(asyncio.to_thread(fn))
        except BaseException:
            self.release()
            raise
        work.add_done_callback(lambda _done: self.release())
        return await asyncio.shield(work)
