"""The Celery wiring of the distributed job backend (``VOXGATE_JOB_BACKEND=celery``).

API nodes only publish :data:`PLAN` messages (``CeleryJobQueue``); ``voxgate worker`` processes run the three
steps of ``jobs.blocks``. Messages are acknowledged after the step ran (``acks_late``), a message whose worker
process died is put back (``task_reject_on_worker_lost``), and a worker takes one message at a time
(prefetch 1), so a killed worker loses nothing: its block is decoded again elsewhere. Nothing is kept in a
Celery result backend: the job store holds all state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from voxgate.config import Settings

log = logging.getLogger("voxgate.jobs")

FILES_QUEUE = "voxgate.files"  # planning and block decoding, in arrival order
ASSEMBLE_QUEUE = "voxgate.assemble"  # short final steps, not stuck behind other files' blocks
PLAN = "voxgate.plan_file"
BLOCK = "voxgate.decode_block"
ASSEMBLE = "voxgate.assemble_file"


def make_celery(settings: Settings) -> Celery:
    """A Celery app on ``settings.broker_url`` with the at-least-once settings above."""
    if not settings.broker_url:
        raise ValueError("VOXGATE_BROKER_URL is required with VOXGATE_JOB_BACKEND=celery (redis://host:6379/0)")
    app = Celery("voxgate", broker=settings.broker_url, set_as_current=False)
    visibility = settings.broker_visibility_timeout_s
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=FILES_QUEUE,
        task_routes={ASSEMBLE: {"queue": ASSEMBLE_QUEUE}},
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility,
            # look for messages of dead workers often enough for the timeout
            "unacked_restore_interval": max(1, min(60, int(visibility // 4))),
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
    )
    return app


# -- the worker side ------------------------------------------------------------------------------------------
_context_lock = threading.Lock()
_context: Any = None  # WorkerContext, built in each worker process on its first message


def _worker_context() -> Any:
    """The process's services (models load on first use); built after the fork, never shared."""
    global _context
    with _context_lock:
        if _context is None:
            from voxgate.app import build_services
            from voxgate.jobs.blocks import WorkerContext
            from voxgate.jobs.fetch import Fetcher
            from voxgate.jobs.store import JobStore

            settings = Settings()
            settings = settings.model_copy(
                update={"decode_workers": settings.decode_workers or 1, "cpu_threads": settings.cpu_threads or 1}
            )
            services = build_services(settings)
            store = JobStore(settings.resolved_database_url())
            services.store = store
            services.vocabularies = store
            if services.recognizer.plan.workers > 1:
                services.recognizer.start()
            _context = WorkerContext(services, Fetcher(settings))
        return _context


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _forget_inherited_context(**_: Any) -> None:
    global _context
    _context = None


def register_tasks(app: Celery) -> None:
    """The three steps as Celery tasks of ``app`` (only worker processes need them)."""
    from voxgate.jobs import blocks

    def send_block(task_id: str, position: int, channel: int, index: int, language: str | None) -> None:
        app.send_task(BLOCK, args=[task_id, position, channel, index, language], queue=FILES_QUEUE)

    def send_assemble(task_id: str, position: int) -> None:
        app.send_task(ASSEMBLE, args=[task_id, position], queue=ASSEMBLE_QUEUE)

    @app.task(name=PLAN)  # type: ignore[untyped-decorator]
    def plan_file(task_id: str, position: int) -> None:
        blocks.plan_file(_worker_context(), task_id, position, send_block, send_assemble)

    @app.task(name=BLOCK, bind=True)  # type: ignore[untyped-decorator]
    def decode_block(self: Any, task_id: str, position: int, channel: int, index: int, language: str | None) -> None:
        worker = str(self.request.hostname or socket.gethostname())
        blocks.decode_block(_worker_context(), task_id, position, channel, index, language, worker, send_assemble)

    @app.task(name=ASSEMBLE)  # type: ignore[untyped-decorator]
    def assemble_file(task_id: str, position: int) -> None:
        blocks.assemble_file(_worker_context(), task_id, position)


def run_worker(settings: Settings, concurrency: int, name: str | None) -> None:
    """Run a Celery worker (prefork: ``concurrency`` processes, each with its own models) until stopped."""
    app = make_celery(settings)
    register_tasks(app)
    hostname = name or f"voxgate-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        argv=[
            "worker",
            f"--queues={ASSEMBLE_QUEUE},{FILES_QUEUE}",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            f"--hostname={hostname}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
