"""The API node's side of the celery job backend: store the task, publish it, keep results tidy.

An API node in this mode runs no file work: each submitted file becomes one planning message for the
``voxgate worker`` processes (``jobs.celery_app``). Expired results are swept here, as the in-process
executor does, from the shared store and results directory.
"""

from __future__ import annotations

import logging
import threading

from voxgate.errors import ModelUnavailable, Throttling
from voxgate.jobs.celery_app import FILES_QUEUE, PLAN, make_celery
from voxgate.jobs.executor import JobExecutor
from voxgate.jobs.store import FAILED, TERMINAL, JobStore
from voxgate.services import Services

log = logging.getLogger("voxgate.jobs")


class CeleryJobQueue:
    """Publishes file jobs to the broker; the job store stays the one source of truth."""

    def __init__(self, store: JobStore, services: Services) -> None:
        self.store = store
        self.settings = services.settings
        self.app = make_celery(services.settings)
        self._cleaner = JobExecutor(store, services)  # only its result clean-up is used on an API node
        self._stop = threading.Event()
        self._janitor: threading.Thread | None = None

    def start(self) -> None:
        (self.settings.data_dir / "results").mkdir(parents=True, exist_ok=True)
        self._janitor = threading.Thread(target=self._sweep, name="voxgate-job-janitor", daemon=True)
        self._janitor.start()

    def stop(self) -> None:
        self._stop.set()

    def check_capacity(self) -> None:
        """Raise :class:`Throttling` when the tasks waiting across all nodes fill the queue."""
        waiting = self.store.count_waiting()
        if waiting >= self.settings.job_queue_limit:
            raise Throttling(f"the transcription queue is full ({waiting} tasks waiting); please retry later")

    def submitted(self, task_id: str) -> None:
        """Publish one planning message per file of a stored task (blocking: call from a worker thread)."""
        task = self.store.get_task(task_id)
        if task is None:
            return
        try:
            for f in task.files:
                self.app.send_task(PLAN, args=[task_id, f.position], queue=FILES_QUEUE, retry=True)
        except Exception as exc:
            log.exception("could not publish task %s", task_id)
            for f in task.files:
                if f.status not in TERMINAL:
                    self.store.finish_file(task_id, f.position, status=FAILED, code="InternalError")
            self.store.finish_task(task_id, status=FAILED, code="InternalError", message="the job queue is unreachable")
            raise ModelUnavailable("the job queue (broker) is unreachable; please retry later") from exc

    def _sweep(self) -> None:
        interval = min(600.0, max(5.0, self.settings.result_retention_hours * 3600 / 4))
        while not self._stop.wait(interval):
            try:
                self._cleaner.cleanup()
            except Exception:
                log.exception("result clean-up failed")
