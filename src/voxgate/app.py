"""``create_app(settings)``: the FastAPI application with every protocol adapter mounted."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from voxgate.api.errors import install_error_handlers
from voxgate.config import Settings
from voxgate.services import Services

log = logging.getLogger("voxgate")

# Protocol adapters: each module exposes ``router`` (an APIRouter) and may define
# ``async def on_startup(services)`` / ``async def on_shutdown(services)``.
ROUTER_MODULES = (
    "voxgate.api.dashscope.transcription",
    "voxgate.api.dashscope.vocabulary",
    "voxgate.api.dashscope.generation",
    "voxgate.api.dashscope.uploads",
    "voxgate.api.dashscope.inference_ws",
    "voxgate.api.dashscope.realtime_ws",
    "voxgate.api.openai.chat",
    "voxgate.api.openai.transcriptions",
)


def _adapter_modules() -> list[ModuleType]:
    found = []
    for name in ROUTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        found.append(module)
    return found


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the application. Models load once, in the lifespan, before ``/health`` reports ready."""
    settings = settings or Settings()
    services = services or Services.build(settings)
    modules = _adapter_modules()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("voxgate settings: %s", json.dumps(settings.describe(), default=str))
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(services.recognizer.warm_up, [settings.default_model])
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

    @app.get("/health")
    async def health() -> JSONResponse:
        if not app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    for module in modules:
        app.include_router(module.router)
    return app
