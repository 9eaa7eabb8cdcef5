"""The single owner of decoding CPU time in the process.

Every model call — real-time finals and partials, synchronous requests, file jobs — runs as a *unit* on one
of the scheduler's worker threads, in three :class:`Tier` of ``plan.workers`` threads each, each tier with its
own copies of the models and its own OS priority (:mod:`voxgate.engine.priority`):

- **real time** (normal priority): **finals** (a client waits for them at every sentence end), round-robin
  across streams — a final submitted as not ``urgent`` (the head of a sentence still being spoken) goes after
  every urgent one — then **partials**, the newest per stream only (an older queued partial is dropped), on
  every real-time worker but one (a final arriving then starts at once or behind another final only);
- **synchronous** requests (nice 10), first come first served;
- **file-job** units (nice 19, the lowest), first come first served.

Bulk work uses every core the real-time tier leaves idle, and the kernel takes a core from it the moment a
real-time unit is ready, in the middle of a long bulk unit: a final never waits for a file window to end, and
a synchronous request goes ahead of file work in the same way. A file job slows down while streams are busy
and speeds up when they are idle; admission keeps the streams under ``capacity``, so it never starves.

Admission is by measured headroom: each stream is priced in core-seconds per second of audio (a prior from
its models until enough of its own audio has been decoded, then its measured cost); a new stream is admitted
while the open streams' cost plus its own fits in ``capacity`` and finals are not already waiting longer than
``max_final_wait_s``; otherwise :class:`~voxgate.errors.Throttling`.

Thread counts for every model are decided here (:class:`ThreadPlan`). Per-class queue depth and wait are kept
in :class:`ClassStats` and passed to an optional observer (for metrics).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from voxgate.engine.priority import LOWEST_NICE, lower_this_thread
from voxgate.errors import Throttling

log = logging.getLogger("voxgate.scheduler")
T = TypeVar("T")

WARM_AUDIO_S = 20.0  # a stream is priced by its own measured cost after this much audio
RECENT_FINALS = 32  # final waits remembered for the admission check
RECENT_WINDOW_S = 30.0
PARTIAL_SHARE = 0.15  # of the real-time tier's cores that the open streams' interims may use together


class DecoderStopped(RuntimeError):
    """The scheduler stopped before a unit could run (the server is shutting down)."""


class WorkClass(enum.IntEnum):
    """Kinds of decoding work, in priority order."""

    FINAL = 0
    PARTIAL = 1
    SYNC = 2
    FILE = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def tier(self) -> Tier:
        """The tier of workers (and model copies) that runs this kind of work."""
        return _TIERS[self]


class Tier(enum.Enum):
    """A set of ``plan.workers`` threads with its own model copies, at one OS priority."""

    REALTIME = "realtime"
    SYNC = "sync"
    FILE = "file"

    @property
    def nice(self) -> int:
        return _NICE[self]


_TIERS = {
    WorkClass.FINAL: Tier.REALTIME,
    WorkClass.PARTIAL: Tier.REALTIME,
    WorkClass.SYNC: Tier.SYNC,
    WorkClass.FILE: Tier.FILE,
}
_NICE = {Tier.REALTIME: 0, Tier.SYNC: 10, Tier.FILE: LOWEST_NICE}


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    """How the CPU is split: ``workers`` concurrent model calls of ``intra_threads`` threads each."""

    workers: int
    intra_threads: int

    @classmethod
    def for_machine(cls, cores: int | None = None, workers: int = 0, intra_threads: int = 0) -> ThreadPlan:
        """One worker per core with one thread each, unless configured; never more threads than cores in
        one tier (the bulk tiers' threads run on what the real-time tier leaves idle)."""
        cores = max(1, cores or os.cpu_count() or 1)
        if workers <= 0:
            workers = cores if intra_threads <= 0 else max(1, cores // intra_threads)
        if intra_threads <= 0:
            intra_threads = max(1, cores // workers)
        return cls(workers=workers, intra_threads=intra_threads)


@dataclass
class Ticket:
    """A stream's admission; give it back with :meth:`Scheduler.release`."""

    key: int
    prior: float  # core-seconds per second of audio expected for this stream
    audio_s: float = 0.0
    final_s: float = 0.0
    partial_s: float = 0.0
    partials: int = 0
    released: bool = False

    @property
    def cost(self) -> float:
        """Core-seconds per audio second: the prior until the stream is warm, then finals measured plus one
        partial per second of audio (partials beyond that are dropped under load, so they are not priced)."""
        if self.audio_s < WARM_AUDIO_S:
            return self.prior
        partial_each = self.partial_s / self.partials if self.partials else 0.0
        return self.final_s / self.audio_s + partial_each


@dataclass
class ClassStats:
    """Counters of one work class."""

    done: int = 0
    dropped: int = 0
    busy_s: float = 0.0
    wait_s: float = 0.0
    max_wait_s: float = 0.0
    depth: int = 0


@dataclass
class _Unit:
    work: WorkClass
    fn: Callable[[], Any]
    deliver: Callable[[bool, Any], None]  # (ok, value or exception)
    drop: Callable[[], None]
    stream: int = 0
    wanted: Callable[[], bool] | None = None
    queued: float = field(default_factory=time.perf_counter)
    urgent: bool = True


_local = threading.local()


class Scheduler:
    """Priority queues of decoding units served by three tiers of ``plan.workers`` threads, with admission."""

    def __init__(
        self,
        plan: ThreadPlan | None = None,
        *,
        capacity: float | None = None,
        max_sessions: int | None = None,
        max_final_wait_s: float = 1.0,
        observer: Callable[[WorkClass, float], None] | None = None,
        on_quiet: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan or ThreadPlan.for_machine()
        self.workers = self.plan.workers
        self.capacity = capacity if capacity is not None else 0.85 * self.plan.workers * self.plan.intra_threads
        self.max_sessions = max_sessions
        self.max_final_wait_s = max_final_wait_s
        self.observer = observer
        self.on_quiet = on_quiet  # run by a worker once the last stream has closed and its work is done
        self._quiet_due = False
        self.refused = 0
        self.stats = {work: ClassStats() for work in WorkClass}
        self._open: dict[int, Ticket] = {}
        self._ids = itertools.count(1)
        self._finals: OrderedDict[int, deque[_Unit]] = OrderedDict()
        self._partials: OrderedDict[int, _Unit] = OrderedDict()
        self._bulk: dict[WorkClass, deque[_Unit]] = {WorkClass.SYNC: deque(), WorkClass.FILE: deque()}
        self._running = dict.fromkeys(Tier, 0)  # units running, by tier
        self._partials_running = 0
        # partials may hold every real-time worker but one, so a final never waits behind partials
        self.partial_slots = max(1, self.plan.workers - 1)
        self._recent_final_waits: deque[tuple[float, float, int]] = deque(maxlen=RECENT_FINALS)
        lock = threading.Lock()
        self._ready = {tier: threading.Condition(lock) for tier in Tier}  # one lock; each tier waits on its own
        self._cond = self._ready[Tier.REALTIME]
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # -- admission ----------------------------------------------------------------------------------
    @property
    def open_streams(self) -> int:
        return len(self._open)

    @property
    def load(self) -> float:
        """Core-seconds per second that the open streams are expected to need."""
        with self._cond:
            return sum(t.cost for t in self._open.values())

    def admit(self, prior: float) -> Ticket:
        """Admit a stream expected to cost ``prior`` core-seconds per audio second, or raise Throttling."""
        with self._cond:
            self._check(prior)
            ticket = Ticket(next(self._ids), prior)
            self._open[ticket.key] = ticket
            return ticket

    def check(self, prior: float) -> None:
        """Raise Throttling if a stream of ``prior`` would not be admitted now (nothing is reserved)."""
        with self._cond:
            self._check(prior)

    def _check(self, prior: float) -> None:
        load = sum(t.cost for t in self._open.values())
        reason = None
        if self.max_sessions is not None and len(self._open) >= self.max_sessions:
            reason = f"the real-time session capacity ({self.max_sessions} sessions) is in use"
        elif self._open and load + prior > self.capacity:
            reason = f"real-time capacity is in use ({len(self._open)} streams open)"
        if reason is None and self._open and self._final_wait_p95() > self.max_final_wait_s:
            reason = "real-time results are already running late"
        if reason is not None:
            self.refused += 1
            raise Throttling(f"{reason}; try again later")

    def reprice(self, ticket: Ticket, prior: float) -> None:
        """A stream's expected cost changed (e.g. its language is now known)."""
        with self._cond:
            ticket.prior = prior

    def add_audio(self, ticket: Ticket, seconds: float) -> None:
        ticket.audio_s += seconds

    def release(self, ticket: Ticket) -> None:
        """Free a stream's capacity and drop its queued work. Safe to call twice."""
        with self._cond:
            if ticket.released:
                return
            ticket.released = True
            self._open.pop(ticket.key, None)
            if not self._open and self.on_quiet is not None:
                self._quiet_due = True
                self._cond.notify()
            for unit in self._finals.pop(ticket.key, deque()):
                self.stats[WorkClass.FINAL].depth -= 1
                self._drop(unit)
            partial = self._partials.pop(ticket.key, None)
            if partial is not None:
                self.stats[WorkClass.PARTIAL].depth -= 1
                self._drop(partial)

    def partial_spacing_s(self, stream: int) -> float:
        """The least time between two interims of ``stream``: all open streams' interims together use at most
        :data:`PARTIAL_SHARE` of the cores (open streams x this stream's mean interim cost / that share), so
        interims come less often as streams are added, and finals keep the rest."""
        with self._cond:
            ticket = self._open.get(stream)
            if ticket is None or not ticket.partials:
                return 0.0
            cores = PARTIAL_SHARE * self.workers * self.plan.intra_threads
            return len(self._open) * (ticket.partial_s / ticket.partials) / cores

    def _final_wait_p95(self) -> float:
        now = time.perf_counter()
        waits = sorted(w for at, w, key in self._recent_final_waits if now - at < RECENT_WINDOW_S and key in self._open)
        if len(waits) < 4:
            return 0.0
        return waits[min(len(waits) - 1, int(0.95 * len(waits)))]

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            self._stopping = False
            for tier in Tier:
                for index in range(self.workers):
                    name = f"voxgate-{tier.value}-{index}"
                    thread = threading.Thread(target=self._work, args=(tier,), name=name, daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            units = [u for q in self._finals.values() for u in q] + list(self._partials.values())
            units += [u for q in self._bulk.values() for u in q]
            self._finals.clear()
            self._partials.clear()
            for queue in self._bulk.values():
                queue.clear()
            for stats in self.stats.values():
                stats.depth = 0
            for unit in units:
                self._drop(unit)
            for ready in self._ready.values():
                ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    # -- submitting work ----------------------------------------------------------------------------
    async def run_final(
        self, stream: int, fn: Callable[[], T], wanted: Callable[[], bool] | None = None, *, urgent: bool = True
    ) -> T:
        """Run ``fn`` with final priority (after every urgent final unless ``urgent``); raises
        ``asyncio.CancelledError`` if dropped."""
        result: T = await self._submit_async(WorkClass.FINAL, fn, stream, wanted, dropped=_CANCEL, urgent=urgent)
        return result

    async def run_partial(self, stream: int, fn: Callable[[], T], wanted: Callable[[], bool] | None = None) -> T | None:
        """Run ``fn`` with partial priority. None if a newer partial replaced it or it went stale."""
        result: T | None = await self._submit_async(WorkClass.PARTIAL, fn, stream, wanted, dropped=None)
        return result

    async def run_async(self, work: WorkClass, fn: Callable[[], T]) -> T:
        """Run a bulk unit from the event loop."""
        result: T = await self._submit_async(work, fn, 0, None, dropped=_CANCEL)
        return result

    def run(self, work: WorkClass, fn: Callable[[], T]) -> T:
        """Run ``fn`` as one unit of ``work`` and return its result, blocking the calling thread."""
        return self.run_many(work, [fn])[0]

    def run_many(self, work: WorkClass, fns: Sequence[Callable[[], T]]) -> list[T]:
        """Run independent units of ``work`` (on as many workers as the policy allows), results in order.

        Called from a scheduler worker (a unit that needs a sub-step), or before the workers are started
        (a command-line run), the units run inline in the calling thread."""
        if getattr(_local, "worker", False) or not self._threads:
            return [fn() for fn in fns]
        futures: list[Future[T]] = []
        for fn in fns:
            future: Future[T] = Future()
            futures.append(future)
            self._enqueue(_Unit(work, fn, _deliver_to(future), _fail_to(future)))
        return [future.result() for future in futures]

    @property
    def finals_waiting(self) -> int:
        """Finals queued and not yet started, over all streams."""
        return self.stats[WorkClass.FINAL].depth

    def pending(self, stream: int) -> int:
        with self._cond:
            return len(self._finals.get(stream, ())) + (1 if stream in self._partials else 0)

    async def _submit_async(
        self,
        work: WorkClass,
        fn: Callable[[], Any],
        stream: int,
        wanted: Callable[[], bool] | None,
        *,
        dropped: Any,
        urgent: bool = True,
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def deliver(ok: bool, value: Any) -> None:
            _in_loop(loop, future, (lambda: future.set_result(value)) if ok else (lambda: future.set_exception(value)))

        def drop() -> None:
            if dropped is _CANCEL:
                _in_loop(loop, future, future.cancel)
            else:
                _in_loop(loop, future, lambda: future.set_result(dropped))

        def alive() -> bool:  # a caller that stopped waiting (cancelled) no longer wants the result
            return not future.done() and (wanted is None or wanted())

        self._enqueue(_Unit(work, fn, deliver, drop, stream, alive, urgent=urgent))
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled() and dropped is not _CANCEL:
                return dropped
            raise

    def _enqueue(self, unit: _Unit) -> None:
        with self._cond:
            if self._stopping:
                self._drop(unit)
                return
            stats = self.stats[unit.work]
            if unit.work is WorkClass.FINAL:
                self._finals.setdefault(unit.stream, deque()).append(unit)
            elif unit.work is WorkClass.PARTIAL:
                old = self._partials.pop(unit.stream, None)
                if old is not None:
                    stats.depth -= 1
                    stats.dropped += 1
                    self._drop(old)
                self._partials[unit.stream] = unit
            else:
                self._bulk[unit.work].append(unit)
            stats.depth += 1
            self._ready[unit.work.tier].notify()

    # -- picking and running --------------------------------------------------------------------------
    def _next(self, tier: Tier) -> _Unit | None:
        """Under the lock: the next unit for a worker of ``tier``."""
        if tier is not Tier.REALTIME:
            work = WorkClass.SYNC if tier is Tier.SYNC else WorkClass.FILE
            if self._bulk[work]:
                self.stats[work].depth -= 1
                return self._bulk[work].popleft()
            return None
        while self._finals:
            stream, queue = next(
                ((key, q) for key, q in self._finals.items() if any(u.urgent for u in q)),
                next(iter(self._finals.items())),
            )
            unit = next((u for u in queue if u.urgent), queue[0])
            queue.remove(unit)
            if queue:
                self._finals.move_to_end(stream)
            else:
                del self._finals[stream]
            self.stats[WorkClass.FINAL].depth -= 1
            if unit.wanted is not None and not unit.wanted():
                self.stats[WorkClass.FINAL].dropped += 1
                self._drop(unit)
                continue
            return unit
        while self._partials and self._partials_running < self.partial_slots:
            _stream, unit = self._partials.popitem(last=False)
            self.stats[WorkClass.PARTIAL].depth -= 1
            if unit.wanted is not None and not unit.wanted():
                self.stats[WorkClass.PARTIAL].dropped += 1
                self._drop(unit)
                continue
            return unit
        return None

    def _work(self, tier: Tier) -> None:
        _local.worker = True
        if tier.nice:
            lower_this_thread(tier.nice)
        ready = self._ready[tier]
        while True:
            with ready:
                unit = self._next(tier)
                while unit is None and not self._stopping and not self._quiet_now():
                    ready.wait()
                    unit = self._next(tier)
                if unit is None and self._stopping:
                    return
                if unit is not None:
                    self._running[tier] += 1
                    self._partials_running += unit.work is WorkClass.PARTIAL
            if unit is None:
                self._run_quiet_hook()
                continue
            started = time.perf_counter()
            waited = started - unit.queued
            try:
                value = unit.fn()
            except BaseException as exc:  # delivered to the waiting caller
                unit.deliver(False, exc)
            else:
                unit.deliver(True, value)
            elapsed = time.perf_counter() - started
            self._account(unit, waited, elapsed)
            with self._cond:
                quiet = self._quiet_now()
            if quiet:
                self._run_quiet_hook()

    def _quiet_now(self) -> bool:
        """(Under the lock) the quiet hook is due and no stream, running unit or queued work is left; claims it."""
        if not self._quiet_due or self._open or any(self._running.values()) or self._queued():
            return False
        self._quiet_due = False
        return True

    def _run_quiet_hook(self) -> None:
        if self.on_quiet is None:
            return
        try:
            self.on_quiet()
        except Exception:
            log.exception("scheduler quiet hook failed")

    def _queued(self) -> bool:
        return bool(self._finals or self._partials or any(self._bulk.values()))

    @property
    def idle(self) -> bool:
        """True when a real-time worker is free and no work is queued or running in the bulk tiers (CPU time
        spent now takes nothing from anyone)."""
        with self._cond:
            busy = self._running[Tier.SYNC] or self._running[Tier.FILE]
            return self._running[Tier.REALTIME] < self.workers and not busy and not self._queued()

    def _account(self, unit: _Unit, waited: float, elapsed: float) -> None:
        with self._cond:
            self._running[unit.work.tier] -= 1
            self._partials_running -= unit.work is WorkClass.PARTIAL
            stats = self.stats[unit.work]
            stats.done += 1
            stats.busy_s += elapsed
            stats.wait_s += waited
            stats.max_wait_s = max(stats.max_wait_s, waited)
            ticket = self._open.get(unit.stream)
            if unit.work is WorkClass.FINAL:
                self._recent_final_waits.append((time.perf_counter(), waited, unit.stream))
                if ticket is not None:
                    ticket.final_s += elapsed
            elif unit.work is WorkClass.PARTIAL and ticket is not None:
                ticket.partial_s += elapsed
                ticket.partials += 1
        log.debug("%s unit of stream %d: waited %.3f s, ran %.3f s", unit.work.label, unit.stream, waited, elapsed)
        if self.observer is not None:
            try:
                self.observer(unit.work, waited)
            except Exception:  # a metrics failure must not stop decoding
                log.exception("scheduler observer failed")

    def _drop(self, unit: _Unit) -> None:
        try:
            unit.drop()
        except Exception:  # already resolved
            log.debug("unit already resolved")

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per-class counters (depth, done, dropped, busy and wait seconds) for monitoring."""
        with self._cond:
            return {
                work.label: {
                    "depth": float(s.depth),
                    "done": float(s.done),
                    "dropped": float(s.dropped),
                    "busy_s": s.busy_s,
                    "wait_s": s.wait_s,
                    "max_wait_s": s.max_wait_s,
                }
                for work, s in self.stats.items()
            }


_CANCEL = object()


def _deliver_to(future: Future[Any]) -> Callable[[bool, Any], None]:
    def deliver(ok: bool, value: Any) -> None:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    return deliver


def _fail_to(future: Future[Any]) -> Callable[[], None]:
    return lambda: future.set_exception(DecoderStopped("the decoder is shutting down"))


def _in_loop(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], fn: Callable[[], Any]) -> None:
    def apply() -> None:
        if not future.done():
            fn()

    try:
        loop.call_soon_threadsafe(apply)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.debug("dropping a result for a closed event loop")
