"""The decode scheduler's policy with a fake decoder: priorities, preemption points, fairness, admission.

Deterministic: a blocking unit holds the worker(s) until the test has queued everything; no sleeps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from voxgate.engine.priority import LOWEST_NICE, thread_nice
from voxgate.engine.scheduler import PARTIAL_SHARE, WARM_AUDIO_S, Scheduler, ThreadPlan, WorkClass
from voxgate.errors import Throttling


class FakeDecoder:
    """Records the order in which units ran; ``hold()`` returns a unit that blocks until released."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self._lock = threading.Lock()

    def unit(self, name: str, value: Any = None) -> Callable[[], Any]:
        def run() -> Any:
            with self._lock:
                self.order.append(name)
            return value if value is not None else name

        return run

    @staticmethod
    def hold() -> tuple[Callable[[], None], threading.Event, threading.Event]:
        started, release = threading.Event(), threading.Event()

        def run() -> None:
            started.set()
            release.wait(10)

        return run, started, release


async def settle() -> None:
    """Let every submitted coroutine reach its enqueue (one loop turn each)."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
async def one_worker() -> Any:
    scheduler = Scheduler(ThreadPlan(1, 1))
    scheduler.start()
    yield scheduler
    await asyncio.to_thread(scheduler.stop)


async def test_each_tier_runs_on_its_own_workers_in_its_own_order(one_worker: Scheduler) -> None:
    """Real time: finals before partials. Synchronous requests and file work have workers of their own, so
    neither waits for the other tiers."""
    fake = FakeDecoder()
    final_block, final_started, final_release = fake.hold()
    file_block, file_started, file_release = fake.hold()
    blockers = [
        asyncio.ensure_future(one_worker.run_final(9, final_block)),
        asyncio.ensure_future(one_worker.run_async(WorkClass.FILE, file_block)),
    ]
    await asyncio.to_thread(final_started.wait)
    await asyncio.to_thread(file_started.wait)
    jobs = [
        asyncio.ensure_future(one_worker.run_async(WorkClass.FILE, fake.unit("file"))),
        asyncio.ensure_future(one_worker.run_partial(1, fake.unit("partial"))),
        asyncio.ensure_future(one_worker.run_final(1, fake.unit("final"))),
    ]
    await settle()
    assert await one_worker.run_async(WorkClass.SYNC, fake.unit("sync")) == "sync"  # while both are held
    final_release.set()
    await asyncio.gather(blockers[0], jobs[1], jobs[2])
    assert fake.order == ["sync", "final", "partial"]  # the real-time tier ran while the file tier was held
    file_release.set()
    await asyncio.gather(*blockers, *jobs)
    assert fake.order == ["sync", "final", "partial", "file"]


async def test_a_final_waits_behind_one_file_unit_not_the_whole_file(one_worker: Scheduler) -> None:
    """A file cut into units: a final submitted while unit 1 runs goes right after it."""
    fake = FakeDecoder()
    block, started, release = fake.hold()
    units = [block] + [fake.unit(f"file {n}") for n in range(2, 6)]
    job = asyncio.ensure_future(asyncio.to_thread(one_worker.run_many, WorkClass.FILE, units))
    await asyncio.to_thread(started.wait)
    final = asyncio.ensure_future(one_worker.run_final(7, fake.unit("final")))
    await settle()
    release.set()
    results = await job
    await final
    assert fake.order[0] == "final"
    assert fake.order[1:] == [f"file {n}" for n in range(2, 6)]
    assert results[1:] == [f"file {n}" for n in range(2, 6)]  # results in submission order


async def test_newer_partial_replaces_older_and_stale_partials_are_skipped(one_worker: Scheduler) -> None:
    fake = FakeDecoder()
    block, started, release = fake.hold()
    blocker = asyncio.ensure_future(one_worker.run_final(9, block))
    await asyncio.to_thread(started.wait)
    old = asyncio.ensure_future(one_worker.run_partial(1, fake.unit("old")))
    await settle()
    new = asyncio.ensure_future(one_worker.run_partial(1, fake.unit("new", "fresh")))
    stale = asyncio.ensure_future(one_worker.run_partial(2, fake.unit("stale"), wanted=lambda: False))
    await settle()
    release.set()
    assert await old is None
    assert await new == "fresh"
    assert await stale is None
    await blocker
    assert fake.order == ["new"]
    assert one_worker.stats[WorkClass.PARTIAL].dropped == 2


async def test_finals_are_round_robin_between_streams(one_worker: Scheduler) -> None:
    fake = FakeDecoder()
    block, started, release = fake.hold()
    blocker = asyncio.ensure_future(one_worker.run_final(0, block))
    await asyncio.to_thread(started.wait)
    jobs = [asyncio.ensure_future(one_worker.run_final(1, fake.unit("a"))) for _ in range(3)]
    jobs += [asyncio.ensure_future(one_worker.run_final(2, fake.unit("b"))) for _ in range(3)]
    await settle()
    release.set()
    await asyncio.gather(blocker, *jobs)
    assert fake.order == ["a", "b", "a", "b", "a", "b"]


async def test_queue_depth_returns_to_zero_when_a_stream_goes(one_worker: Scheduler) -> None:
    fake = FakeDecoder()
    block, started, release = fake.hold()
    blocker = asyncio.ensure_future(one_worker.run_final(0, block))
    await asyncio.to_thread(started.wait)
    ticket = one_worker.admit(0.1)
    queued = [asyncio.ensure_future(one_worker.run_final(ticket.key, fake.unit("final"))) for _ in range(2)]
    partial = asyncio.ensure_future(one_worker.run_partial(ticket.key, fake.unit("partial")))
    await settle()
    assert one_worker.stats[WorkClass.FINAL].depth == 2 and one_worker.stats[WorkClass.PARTIAL].depth == 1
    one_worker.release(ticket)  # the client went away: its queued work goes with it
    release.set()
    await blocker
    assert await partial is None
    for job in queued:
        with pytest.raises(asyncio.CancelledError):
            await job
    assert one_worker.stats[WorkClass.FINAL].depth == 0 and one_worker.stats[WorkClass.PARTIAL].depth == 0
    assert fake.order == []


async def test_a_cancelled_final_never_runs(one_worker: Scheduler) -> None:
    fake = FakeDecoder()
    block, started, release = fake.hold()
    blocker = asyncio.ensure_future(one_worker.run_final(0, block))
    await asyncio.to_thread(started.wait)
    speculative = asyncio.ensure_future(one_worker.run_final(1, fake.unit("speculative")))
    kept = asyncio.ensure_future(one_worker.run_final(1, fake.unit("kept")))
    await settle()
    speculative.cancel()
    await settle()
    release.set()
    await asyncio.gather(blocker, kept)
    assert fake.order == ["kept"]


async def test_finals_and_sync_run_while_file_work_holds_every_file_worker() -> None:
    scheduler = Scheduler(ThreadPlan(2, 1))
    scheduler.start()
    fake = FakeDecoder()
    try:
        ticket = scheduler.admit(0.2)
        holds = [fake.hold() for _ in range(3)]
        file_job = asyncio.ensure_future(
            asyncio.to_thread(scheduler.run_many, WorkClass.FILE, [hold[0] for hold in holds[:2]])
        )
        await asyncio.to_thread(holds[0][1].wait)
        await asyncio.to_thread(holds[1][1].wait)
        third_file = asyncio.ensure_future(scheduler.run_async(WorkClass.FILE, holds[2][0]))
        finals = await asyncio.gather(*(scheduler.run_final(ticket.key, fake.unit(f"final {n}")) for n in range(3)))
        assert finals == ["final 0", "final 1", "final 2"]
        assert await scheduler.run_async(WorkClass.SYNC, fake.unit("sync")) == "sync"
        assert not holds[2][1].is_set(), "the third file unit waits for a file worker"
        for hold in holds:
            hold[2].set()
        await asyncio.gather(file_job, third_file)
        scheduler.release(ticket)
    finally:
        await asyncio.to_thread(scheduler.stop)


@pytest.mark.skipif(thread_nice() is None, reason="no per-thread priority on this platform")
async def test_file_units_run_at_the_lowest_os_priority_sync_between_real_time_at_normal() -> None:
    scheduler = Scheduler(ThreadPlan(1, 1))
    scheduler.start()
    try:
        mine = thread_nice()
        assert await scheduler.run_async(WorkClass.FILE, thread_nice) == LOWEST_NICE
        assert await scheduler.run_async(WorkClass.SYNC, thread_nice) == 10
        assert await scheduler.run_final(1, thread_nice) == mine
        assert await scheduler.run_partial(1, thread_nice) == mine
    finally:
        await asyncio.to_thread(scheduler.stop)


def test_units_run_inline_without_workers() -> None:
    scheduler = Scheduler(ThreadPlan(2, 1))
    assert scheduler.run_many(WorkClass.FILE, [lambda: 1, lambda: 2]) == [1, 2]


def test_admission_by_measured_headroom() -> None:
    scheduler = Scheduler(ThreadPlan(2, 1), capacity=1.0)
    streams = [scheduler.admit(0.3) for _ in range(3)]
    with pytest.raises(Throttling):
        scheduler.admit(0.3)  # 1.2 > 1.0
    # one stream turns out cheaper than its prior once warm: measured cost replaces the prior
    cheap = streams[0]
    scheduler.add_audio(cheap, WARM_AUDIO_S)
    cheap.final_s = 0.1 * WARM_AUDIO_S
    assert cheap.cost == pytest.approx(0.1)
    scheduler.admit(0.3)  # 0.1 + 0.3 + 0.3 + 0.3 = 1.0 fits
    scheduler.reprice(streams[1], 0.5)
    with pytest.raises(Throttling):
        scheduler.admit(0.01)
    scheduler.release(streams[1])
    scheduler.release(streams[1])  # twice is harmless
    scheduler.admit(0.2)
    assert scheduler.open_streams == 4 and scheduler.refused == 2


def test_admission_refuses_while_finals_run_late() -> None:
    scheduler = Scheduler(ThreadPlan(2, 1), capacity=10.0, max_final_wait_s=0.5)
    ticket = scheduler.admit(0.1)
    for _ in range(8):
        scheduler._recent_final_waits.append((time.perf_counter(), 1.5, ticket.key))
    with pytest.raises(Throttling, match="late"):
        scheduler.admit(0.1)
    scheduler.release(ticket)  # late finals of streams that are gone do not count
    scheduler.admit(0.1)


def test_session_limit_overrides_headroom() -> None:
    scheduler = Scheduler(ThreadPlan(2, 1), capacity=100.0, max_sessions=1)
    scheduler.admit(0.1)
    with pytest.raises(Throttling, match="session capacity"):
        scheduler.admit(0.1)


def test_thread_plan_never_oversubscribes() -> None:
    assert ThreadPlan.for_machine(2) == ThreadPlan(2, 1)
    assert ThreadPlan.for_machine(8, workers=2) == ThreadPlan(2, 4)
    assert ThreadPlan.for_machine(8, intra_threads=2) == ThreadPlan(4, 2)
    assert ThreadPlan.for_machine(1) == ThreadPlan(1, 1)


async def test_quiet_hook_runs_once_after_the_last_stream_and_its_work() -> None:
    quiet = threading.Event()
    calls: list[int] = []

    def hook() -> None:
        calls.append(running.is_set() and not release.is_set())
        quiet.set()

    scheduler = Scheduler(ThreadPlan(2, 1), on_quiet=hook)
    scheduler.start()
    try:
        first, second = scheduler.admit(0.1), scheduler.admit(0.1)
        fn, running, release = FakeDecoder.hold()
        held = asyncio.ensure_future(scheduler.run_final(first.key, fn))
        await asyncio.to_thread(running.wait, 5)
        scheduler.release(second)
        scheduler.release(first)  # the last stream is gone, but its final is still decoding
        await asyncio.sleep(0.05)
        assert not quiet.is_set(), "not while a unit runs"
        release.set()
        await held
        assert await asyncio.to_thread(quiet.wait, 5)
        await scheduler.run_async(WorkClass.SYNC, lambda: None)  # later work without streams: no new call
        await asyncio.sleep(0.05)
        assert calls == [False], calls
    finally:
        await asyncio.to_thread(scheduler.stop)


async def test_urgent_finals_go_before_heads_of_sentences_still_spoken(one_worker: Scheduler) -> None:
    """Stream 1 queues the heads of a sentence still being spoken; stream 2's sentence ends: its final goes
    first, then the heads in order, then partials."""
    fake = FakeDecoder()
    block, started, release = fake.hold()
    blocker = asyncio.ensure_future(one_worker.run_final(3, block))
    await asyncio.to_thread(started.wait)
    jobs = [
        asyncio.ensure_future(one_worker.run_final(1, fake.unit("head 1"), urgent=False)),
        asyncio.ensure_future(one_worker.run_final(1, fake.unit("head 2"), urgent=False)),
        asyncio.ensure_future(one_worker.run_partial(2, fake.unit("partial"))),
        asyncio.ensure_future(one_worker.run_final(2, fake.unit("end of sentence"))),
    ]
    await settle()
    release.set()
    await asyncio.gather(blocker, *jobs)
    assert fake.order == ["end of sentence", "head 1", "head 2", "partial"]


def test_interims_are_spaced_out_as_streams_are_added() -> None:
    """All open streams' interims together stay within PARTIAL_SHARE of the cores."""
    scheduler = Scheduler(ThreadPlan(2, 1), capacity=10.0)
    first = scheduler.admit(0.1)
    assert scheduler.partial_spacing_s(first.key) == 0.0  # no interim measured yet
    first.partial_s, first.partials = 2.0, 10  # 0.2 s each
    alone = scheduler.partial_spacing_s(first.key)
    assert alone == pytest.approx(0.2 / (PARTIAL_SHARE * 2))
    others = [scheduler.admit(0.1) for _ in range(3)]
    assert scheduler.partial_spacing_s(first.key) == pytest.approx(4 * alone)
    for ticket in others:
        scheduler.release(ticket)
    assert scheduler.partial_spacing_s(first.key) == pytest.approx(alone)


async def test_partials_leave_one_real_time_worker_for_finals() -> None:
    """With two real-time workers, one partial runs at a time: a second stream's partial waits, and a final
    arriving meanwhile starts on the free worker at once."""
    scheduler = Scheduler(ThreadPlan(2, 1))
    scheduler.start()
    fake = FakeDecoder()
    try:
        first, second = scheduler.admit(0.2), scheduler.admit(0.2)
        hold, started, release = fake.hold()
        held = asyncio.ensure_future(scheduler.run_partial(first.key, hold))
        await asyncio.to_thread(started.wait)
        waiting = asyncio.ensure_future(scheduler.run_partial(second.key, fake.unit("partial 2")))
        await settle()
        assert await scheduler.run_final(second.key, fake.unit("final 2")) == "final 2"  # while the partial holds
        assert fake.order == ["final 2"], "the second partial waits for the partial slot"
        release.set()
        assert await waiting == "partial 2"
        await held
        assert fake.order == ["final 2", "partial 2"]
        scheduler.release(first)
        scheduler.release(second)
    finally:
        await asyncio.to_thread(scheduler.stop)
