"""``create_app(settings)``: the FastAPI application with every protocol adapter mounted."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from voxgate.api import temporary_keys
from voxgate.api.body import install_request_schemas
from voxgate.api.errors import install_error_handlers
from voxgate.api.middleware import RequestContextMiddleware
from voxgate.api.shared_limits import rate_limiter_for
from voxgate.config import Settings
from voxgate.engine.catalog import Catalog
from voxgate.engine.recognizer import EngineConfig, Recognizer
from voxgate.engine.scheduler import WorkClass
from voxgate.jobs.executor import JobExecutor
from voxgate.jobs.store import JobStore
from voxgate.metrics import MODEL_LOADED, QUEUE_WAIT
from voxgate.services import Services
from voxgate.sync_gate import SYNC_QUEUE_LIMIT, SyncGate
from voxgate.uploads import UploadSigner, sweep_uploads
from voxgate.web.browser_auth import BrowserKeyMiddleware

if TYPE_CHECKING:
    from voxgate.jobs.celery_queue import CeleryJobQueue

log = logging.getLogger("voxgate")

# Protocol adapters: each module exposes ``router`` (an APIRouter) and may define
# ``async def on_startup(services)`` / ``async def on_shutdown(services)``.
ROUTER_MODULES = (
    "voxgate.api.dashscope.transcription",
    "voxgate.api.dashscope.vocabulary",
    "voxgate.api.dashscope.generation",
    "voxgate.api.dashscope.uploads",
    "voxgate.api.dashscope.tokens",
    "voxgate.api.monitoring",
    "voxgate.api.dashscope.inference_ws",
    "voxgate.api.dashscope.realtime_ws",
    "voxgate.api.openai.chat",
    "voxgate.api.openai.transcriptions",
    "voxgate.api.openai.realtime",
    "voxgate.web.console",
)


def _adapter_modules() -> list[ModuleType]:
    """Every adapter module; one that fails to import stops the start with its error."""
    return [importlib.import_module(name) for name in ROUTER_MODULES]


def build_services(settings: Settings) -> Services:
    """The services that exist before the lifespan starts (the recognizer loads its models lazily)."""
    engine = EngineConfig(
        model_dir=settings.model_dir,
        cpu_threads=settings.cpu_threads,
        num_workers=settings.decode_workers,
        max_sessions=settings.realtime_max_sessions or None,
        realtime_capacity=settings.realtime_capacity or None,
        english_model=settings.english_model,
        fast_finals=settings.realtime_fast_finals,
    )
    recognizer = Recognizer(engine)
    return Services(
        settings=settings,
        catalog=Catalog(settings.model_profiles),
        recognizer=recognizer,
        rate_limiter=rate_limiter_for(settings.rate_limit_redis_url()),
        sync_gate=SyncGate(recognizer.plan.workers, SYNC_QUEUE_LIMIT),
    )


async def _sweep_uploads_forever(settings: Settings) -> None:
    while True:
        try:
            removed = await asyncio.to_thread(sweep_uploads, settings)
            if removed:
                log.info("removed %d expired uploads", removed)
        except Exception:
            log.exception("upload sweep failed")
        await asyncio.sleep(3600)


def _job_backend(store: JobStore, services: Services) -> JobExecutor | CeleryJobQueue:
    """File jobs run here (in-process worker threads) or on ``voxgate worker`` processes (celery)."""
    if services.settings.job_backend == "celery":
        from voxgate.jobs.celery_queue import CeleryJobQueue

        return CeleryJobQueue(store, services)
    return JobExecutor(store, services)


@asynccontextmanager
async def opened(services: Services) -> AsyncIterator[None]:
    """Open the job store, the upload signer and the job executor (resuming interrupted jobs); close them
    in reverse order. A database that cannot be opened stops the start with its error."""
    settings = services.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await asyncio.to_thread(JobStore, settings.resolved_database_url())
    services.store = store
    services.vocabularies = store
    services.upload_signer = await asyncio.to_thread(UploadSigner.from_store, store)
    if "token_secret" not in settings.model_fields_set:  # not configured: the one every node on the store shares
        settings.token_secret = await asyncio.to_thread(store.shared_secret, temporary_keys.SIGNING_SECRET)
    executor = _job_backend(store, services)
    await asyncio.to_thread(executor.start)
    services.executor = executor
    sweeper = asyncio.create_task(_sweep_uploads_forever(settings))
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        executor.stop()
        in_process = isinstance(executor, JobExecutor)  # with celery, workers elsewhere hold the running files
        released = await asyncio.to_thread(store.release_running) if in_process else []
        if released:
            log.info("stopping: %d running file job(s) go back to the queue: %s", len(released), ", ".join(released))
        services.executor = None
        services.vocabularies = None
        services.store = None
        await asyncio.to_thread(store.close)


def _observe_queue_wait(work: WorkClass, waited_s: float) -> None:
    QUEUE_WAIT.labels(work.label).observe(waited_s)


@asynccontextmanager
async def _decoding(services: Services) -> AsyncIterator[None]:
    """The decode scheduler's workers run for the app's lifetime (stopped after the job executor)."""
    try:
        yield
    finally:
        await asyncio.to_thread(services.recognizer.stop)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the application. Models load once, in the lifespan, before ``/health`` reports ready."""
    settings = settings or Settings()
    services = services or build_services(settings)
    modules = _adapter_modules()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("voxgate settings: %s", json.dumps(settings.describe(), default=str))
        warmed = [settings.default_model, settings.english_model]
        await asyncio.to_thread(services.recognizer.warm_up, warmed)
        for name in warmed:
            MODEL_LOADED.labels(name).set(1)
        services.recognizer.scheduler.observer = _observe_queue_wait
        services.recognizer.start()
        async with opened(services), _decoding(services):
            for module in modules:
                if hasattr(module, "on_startup"):
                    await module.on_startup(services)
            app.state.ready = True
            try:
                yield
            finally:
                app.state.ready = False
                for module in reversed(modules):
                    if hasattr(module, "on_shutdown"):
                        await module.on_shutdown(services)

    app = FastAPI(title="voxgate", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    app.state.ready = False
    install_error_handlers(app)
    install_request_schemas(app)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(BrowserKeyMiddleware)

    @app.get("/health")
    async def health() -> JSONResponse:
        if not app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    for module in modules:
        app.include_router(module.router)
    return app
