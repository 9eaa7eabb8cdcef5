"""The single owner of the CPU for streaming recognition.

Every blocking decode of every real-time stream goes through one :class:`Scheduler`. Its worker threads
take jobs in this order:

1. finals before partials (a final is what the client waits for at a sentence end);
2. among streams, round-robin (a busy stream cannot starve the others);
3. a partial that is still queued when a newer partial for the same stream arrives is dropped, and a
   partial whose result is no longer wanted (the sentence ended meanwhile) is skipped at pick time.

Admission control: each stream holds ``units`` of capacity while open; when the capacity is used up, a
new stream is refused with :class:`~voxgate.errors.Throttling` instead of slowing every stream down.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from voxgate.errors import Throttling

log = logging.getLogger("voxgate.scheduler")
T = TypeVar("T")

UNITS_PER_CORE = 2  # one English (tiny.en partials) stream = 1 unit, one multilingual stream = 2 units


def default_capacity(cores: int | None = None) -> int:
    """Capacity units for a machine: two per core (4 English or 2 multilingual streams on 2 cores)."""
    return max(1, UNITS_PER_CORE * (cores or os.cpu_count() or 1))


@dataclass
class Ticket:
    """A stream's admission; give it back with :meth:`Scheduler.release`."""

    key: int
    units: int
    released: bool = False


@dataclass
class _Job:
    stream: int
    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    wanted: Callable[[], bool] | None = None
    final: bool = True
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class SchedulerStats:
    """Counters for monitoring and the benchmark."""

    finals: int = 0
    partials: int = 0
    partials_dropped: int = 0
    refused: int = 0
    busy_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Scheduler:
    """Priority job queue with ``workers`` threads and admission control over ``capacity`` units."""

    def __init__(self, capacity: int, workers: int = 1, max_sessions: int | None = None) -> None:
        self.capacity = capacity
        self.max_sessions = max_sessions
        self.workers = max(1, workers)
        self.stats = SchedulerStats()
        self._used = 0
        self._open: dict[int, Ticket] = {}
        self._ids = itertools.count(1)
        self._finals: OrderedDict[int, deque[_Job]] = OrderedDict()
        self._partials: OrderedDict[int, _Job] = OrderedDict()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # -- admission ----------------------------------------------------------------------------------
    @property
    def open_streams(self) -> int:
        return len(self._open)

    @property
    def used_units(self) -> int:
        return self._used

    def admit(self, units: int = 1) -> Ticket:
        """Reserve capacity for a new stream or raise :class:`Throttling`."""
        with self._cond:
            full = self._used + units > self.capacity
            if self.max_sessions is not None:
                full = len(self._open) >= self.max_sessions
            if full:
                self.stats.refused += 1
                raise Throttling(f"real-time capacity is full ({len(self._open)} streams open); try again later")
            ticket = Ticket(next(self._ids), units)
            self._open[ticket.key] = ticket
            self._used += units
            return ticket

    def resize(self, ticket: Ticket, units: int) -> bool:
        """Change a stream's units (e.g. once its language is known); False if the box has no room."""
        with self._cond:
            if ticket.released:
                return False
            if self.max_sessions is None and self._used - ticket.units + units > self.capacity:
                return False
            self._used += units - ticket.units
            ticket.units = units
            return True

    def release(self, ticket: Ticket) -> None:
        """Free a stream's capacity and drop its queued work. Safe to call twice."""
        with self._cond:
            if ticket.released:
                return
            ticket.released = True
            self._open.pop(ticket.key, None)
            self._used -= ticket.units
            for job in self._finals.pop(ticket.key, deque()):
                _cancel(job)
            partial = self._partials.pop(ticket.key) if ticket.key in self._partials else None
            if partial is not None:
                _cancel(partial)

    # -- work ---------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            self._stopping = False
            for index in range(self.workers):
                thread = threading.Thread(target=self._work, name=f"voxgate-stream-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            for queue in self._finals.values():
                for job in queue:
                    _cancel(job)
            for job in self._partials.values():
                _cancel(job)
            self._finals.clear()
            self._partials.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    async def run_final(self, stream: int, fn: Callable[[], T], wanted: Callable[[], bool] | None = None) -> T:
        """Run ``fn`` with final priority; raises ``asyncio.CancelledError`` if dropped."""
        loop = asyncio.get_running_loop()
        job = _Job(stream, fn, loop.create_future(), loop, wanted, final=True)
        with self._cond:
            self._finals.setdefault(stream, deque()).append(job)
            self._cond.notify()
        result: T = await job.future
        return result

    async def run_partial(self, stream: int, fn: Callable[[], T], wanted: Callable[[], bool] | None = None) -> T | None:
        """Run ``fn`` with partial priority. Returns None if a newer partial replaced it or it went stale."""
        loop = asyncio.get_running_loop()
        job = _Job(stream, fn, loop.create_future(), loop, wanted, final=False)
        with self._cond:
            old = self._partials.pop(stream) if stream in self._partials else None
            if old is not None:
                self.stats.partials_dropped += 1
                _resolve(old, None)
            self._partials[stream] = job
            self._cond.notify()
        try:
            result: T | None = await job.future
        except asyncio.CancelledError:
            if job.future.cancelled():
                return None
            raise
        return result

    def pending(self, stream: int) -> int:
        with self._cond:
            return len(self._finals.get(stream, ())) + (1 if stream in self._partials else 0)

    def _next(self) -> _Job | None:
        """Pick under the lock: finals round-robin, then partials round-robin."""
        while self._finals:
            stream, queue = next(iter(self._finals.items()))
            job = queue.popleft()
            if queue:
                self._finals.move_to_end(stream)
            else:
                del self._finals[stream]
            if job.wanted is not None and not job.wanted():
                _cancel(job)
                continue
            return job
        while self._partials:
            _stream, job = self._partials.popitem(last=False)
            if job.wanted is not None and not job.wanted():
                self.stats.partials_dropped += 1
                _resolve(job, None)
                continue
            return job
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._next()
                while job is None and not self._stopping:
                    self._cond.wait()
                    job = self._next()
                if job is None:
                    return
            if job.future.done():
                continue
            started = time.perf_counter()
            try:
                value = job.fn()
            except BaseException as exc:  # delivered to the awaiting coroutine
                _fail(job, exc)
            else:
                _resolve(job, value)
            finally:
                elapsed = time.perf_counter() - started
                log.debug(
                    "%s job of stream %d: waited %.3f s, ran %.3f s",
                    "final" if job.final else "partial",
                    job.stream,
                    started - job.queued,
                    elapsed,
                )
                with self._cond:
                    self.stats.busy_s += elapsed
                    if job.final:
                        self.stats.finals += 1
                    else:
                        self.stats.partials += 1


def _resolve(job: _Job, value: Any) -> None:
    def apply() -> None:
        if not job.future.done():
            job.future.set_result(value)

    _call(job, apply)


def _fail(job: _Job, exc: BaseException) -> None:
    def apply() -> None:
        if not job.future.done():
            job.future.set_exception(exc)

    _call(job, apply)


def _cancel(job: _Job) -> None:
    def apply() -> None:
        if not job.future.done():
            job.future.cancel()

    _call(job, apply)


def _call(job: _Job, fn: Callable[[], None]) -> None:
    try:
        job.loop.call_soon_threadsafe(fn)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.debug("dropping a result for a closed event loop")
