"""The in-process job executor: a bounded pool of worker threads taking file jobs from the store.

Workers claim PENDING tasks from the store (atomically), fetch each file, run the recognizer in the
worker thread (never on the event loop) and write each file's outcome back to the store. Nothing about
a job lives only in memory: after a crash or SIGKILL, :meth:`JobExecutor.start` puts interrupted tasks
back in the queue and their unfinished files run again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from voxgate.engine.catalog import EngineProfile
from voxgate.engine.priority import lower_this_thread
from voxgate.engine.scheduler import DecoderStopped
from voxgate.engine.types import FileResult
from voxgate.errors import Throttling, VoxgateError
from voxgate.jobs.fetch import Fetcher
from voxgate.jobs.params import JobParameters, parse_job_parameters
from voxgate.jobs.results import failure_of, result_body, settle, write_result
from voxgate.jobs.store import FAILED, SUCCEEDED, TERMINAL, JobStore, TaskView
from voxgate.metrics import JOB_REALTIME_FACTOR
from voxgate.services import Services

log = logging.getLogger("voxgate.jobs")

IDLE_POLL_S = 2.0
ORPHAN_AGE_S = 3600.0  # a result file this old that no task holds is a crash leftover


class _Canceled(Exception):
    """The task was canceled while a file was being recognized."""


class _Stopping(Exception):
    """The server is shutting down; the task stays RUNNING and is resumed at the next start."""


class JobExecutor:
    """Runs file jobs from ``store`` on ``settings.job_workers`` daemon threads."""

    def __init__(self, store: JobStore, services: Services, fetcher: Fetcher | None = None) -> None:
        self.store = store
        self.services = services
        self.settings = services.settings
        self.fetcher = fetcher or Fetcher(services.settings)
        self.results_dir = self.settings.data_dir / "results"
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Requeue interrupted tasks, clear stale downloads, start the workers and the janitor."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.fetcher.tmp_dir, ignore_errors=True)
        resumed = self.store.requeue_interrupted(self.settings.job_max_attempts)
        if resumed:
            log.info("resuming %d interrupted file job(s): %s", len(resumed), ", ".join(resumed))
        self.cleanup()
        for n in range(max(1, self.settings.job_workers)):
            thread = threading.Thread(target=self._worker, name=f"voxgate-job-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        janitor = threading.Thread(target=self._janitor, name="voxgate-job-janitor", daemon=True)
        janitor.start()
        self._threads.append(janitor)

    def stop(self) -> None:
        """Stop taking jobs. A file being recognized is abandoned at its next checkpoint and resumed later."""
        self._stop.set()
        self.notify()

    def notify(self) -> None:
        """Wake idle workers (a task was submitted)."""
        with self._wake:
            self._wake.notify_all()

    def submitted(self, task_id: str) -> None:
        """A task was stored: wake an idle worker."""
        self.notify()

    def check_capacity(self) -> None:
        """Raise :class:`Throttling` when the queue of waiting tasks is full."""
        waiting = self.store.count_waiting()
        if waiting >= self.settings.job_queue_limit:
            raise Throttling(f"the transcription queue is full ({waiting} tasks waiting); please retry later")

    # -- workers ----------------------------------------------------------------------------------
    def _worker(self) -> None:
        lower_this_thread()  # fetching, decoding and VAD of files: bulk work, behind real-time streams
        while not self._stop.is_set():
            try:
                task_id = self.store.claim_next()
            except Exception:  # database briefly unavailable: keep the worker alive
                log.exception("could not claim a job")
                task_id = None
            if task_id is None:
                with self._wake:
                    self._wake.wait(IDLE_POLL_S)
                continue
            try:
                self.run_task(task_id)
            except _Stopping:
                return
            except Exception:
                log.exception("file job %s crashed", task_id)
                self.store.finish_task(task_id, status=FAILED, code="InternalError", message="internal error")

    def _janitor(self) -> None:
        interval = min(600.0, max(5.0, self.settings.result_retention_hours * 3600 / 4))
        while not self._stop.wait(interval):
            try:
                self.cleanup()
            except Exception:
                log.exception("result clean-up failed")

    def cleanup(self, now: float | None = None) -> int:
        """Delete expired result files and forget tasks whose results are all gone."""
        now = now or time.time()
        paths = self.store.expire(now)
        for path in paths:
            Path(path).unlink(missing_ok=True)
        self.store.expire_tasks_without_results(now - self.settings.result_retention_hours * 3600)
        return len(paths) + self._sweep_orphans(now)

    def _sweep_orphans(self, now: float) -> int:
        """Delete result files (whole or ``.part``) older than an hour that no task holds: what a crash between
        writing a result and recording it leaves behind when the file is never retried."""
        if not self.results_dir.is_dir():
            return 0
        old = [
            p
            for p in self.results_dir.iterdir()
            if p.suffix in (".json", ".part") and p.stat().st_mtime < now - ORPHAN_AGE_S
        ]
        gone = self.store.unreferenced_tokens(p.stem for p in old)
        orphans = [p for p in old if p.stem in gone]
        for path in orphans:
            path.unlink(missing_ok=True)
        return len(orphans)

    # -- one task ---------------------------------------------------------------------------------
    def run_task(self, task_id: str) -> None:
        """Process every unfinished file of a claimed task, then settle the task's status."""
        task = self.store.get_task(task_id)
        if task is None or task.status in TERMINAL:
            return
        try:
            profile = self.services.catalog.resolve(task.model, mode="file")
            params = parse_job_parameters(task.parameters)
            params.options.hotwords = self.services.hotwords_for(params.vocabulary_id, task.owner)
        except VoxgateError as exc:
            for f in task.files:
                if f.status not in TERMINAL:
                    self.store.finish_file(task_id, f.position, status=FAILED, code=exc.code, message=exc.message)
            self._settle(task_id)
            return
        for f in task.files:
            if f.status in TERMINAL:
                continue
            if self._stop.is_set():
                raise _Stopping
            if self.store.cancel_requested(task_id):
                break
            try:
                self._run_file(task, f.position, f.file_url, profile, params)
            except _Canceled:
                break
        self._settle(task_id)

    def _settle(self, task_id: str) -> None:
        settle(self.store, task_id)

    def _run_file(self, task: TaskView, position: int, url: str, profile: EngineProfile, params: JobParameters) -> None:
        store = self.store
        token = store.start_file(task.id, position)
        fetched = None
        try:
            fetched = self.fetcher.fetch(url)

            def progress(seconds: float) -> None:
                if self._stop.is_set():
                    raise _Stopping
                if store.cancel_requested(task.id):
                    raise _Canceled
                store.file_progress(task.id, position, int(seconds * 1000))

            started = time.monotonic()
            result = self.services.recognizer.transcribe_file(
                fetched.path,
                params.options,
                profile,
                progress=progress,
                max_duration_s=self.settings.max_file_duration_s,
                max_bytes=self.settings.max_file_bytes,
            )
            path = self._write_result(token, result, url, profile, params)
            expires = time.time() + self.settings.result_retention_hours * 3600
            duration = result.info.duration_ms or max((t.duration_ms for t in result.transcripts), default=0)
            if duration > 0:
                JOB_REALTIME_FACTOR.observe((time.monotonic() - started) / (duration / 1000))
            store.finish_file(
                task.id, position, status=SUCCEEDED, duration_ms=duration, result=(token, str(path), expires)
            )
        except (_Canceled, _Stopping):
            raise
        except DecoderStopped:
            raise _Stopping from None
        except VoxgateError as exc:
            code, message = failure_of(exc)
            store.finish_file(task.id, position, status=FAILED, code=code, message=message)
        except Exception:
            log.exception("file %d of task %s failed", position, task.id)
            store.finish_file(
                task.id,
                position,
                status=FAILED,
                code="InternalError",
                message="internal error while transcribing",
            )
        finally:
            if fetched is not None:
                fetched.cleanup()

    def _write_result(
        self, token: str, result: FileResult, url: str, profile: EngineProfile, params: JobParameters
    ) -> Path:
        return write_result(self.results_dir, token, result_body(result, url, profile, params))
