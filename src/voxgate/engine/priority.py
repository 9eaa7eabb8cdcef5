"""Operating-system priority of decoding threads.

Bulk work runs on threads of lowered scheduling priority (file jobs at the lowest, synchronous requests
between them and real time), so the kernel hands a core to a real-time unit the moment it is ready, in the
middle of a long bulk unit: preemption without cutting model calls short. Threads inherit the priority of
the thread that creates them, which is how a model's own worker threads (CTranslate2) get it: the model is
loaded from a lowered thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("voxgate.scheduler")
T = TypeVar("T")

LOWEST_NICE = 19  # a thread at nice 19 gets about 1.5% of a core that a thread at nice 0 wants


def lower_this_thread(nice: int = LOWEST_NICE) -> bool:
    """Give the calling thread (only it) the ``nice`` value; False where the platform does not allow it."""
    if not hasattr(os, "setpriority"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # Linux: one thread, not the process
    except OSError as exc:
        log.warning("bulk decoding runs at normal priority (%s)", exc)
        return False
    return True


def thread_nice() -> int | None:
    """The calling thread's nice value (None where unknown)."""
    if not hasattr(os, "getpriority"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def in_lowered_thread(fn: Callable[[], T], nice: int = LOWEST_NICE) -> T:
    """Run ``fn`` on a new thread at ``nice`` and return its result; threads it starts keep that priority."""
    box: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        lower_this_thread(nice)
        try:
            box.append(fn())
        except BaseException as exc:  # re-raised in the caller
            error.append(exc)

    thread = threading.Thread(target=run, name="voxgate-bulk-loader", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return box[0]
