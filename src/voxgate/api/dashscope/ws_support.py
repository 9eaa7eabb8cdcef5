"""Pieces shared by the two real-time WebSocket adapters: handshake auth, a bounded outbox, the
stream scheduler and per-stream engine set-up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from voxgate.api.auth import check_key
from voxgate.api.errors import dashscope_error_body
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.partial import WhisperStreamEngine
from voxgate.engine.scheduler import Scheduler, default_capacity
from voxgate.engine.types import RecognitionOptions
from voxgate.errors import InvalidApiKey
from voxgate.services import Services

log = logging.getLogger("voxgate.realtime")

SCHEDULER_KEY = "stream_scheduler"
OUTBOX_LIMIT = 512  # queued server events beyond which the client is considered not reading


def scheduler_of(services: Services) -> Scheduler:
    """The process-wide stream scheduler (created on first use)."""
    scheduler = services.extras.get(SCHEDULER_KEY)
    if scheduler is None:
        settings = services.settings
        limit = settings.realtime_max_sessions or None
        scheduler = Scheduler(default_capacity(), workers=1, max_sessions=limit)
        scheduler.start()
        services.extras[SCHEDULER_KEY] = scheduler
    assert isinstance(scheduler, Scheduler)
    return scheduler


async def start_streaming(services: Services) -> None:
    """Start the scheduler and load the partial model once, off the event loop."""
    scheduler_of(services)
    english = services.settings.english_model
    with contextlib.suppress(Exception):
        await asyncio.to_thread(services.recognizer.model, english)


async def stop_streaming(services: Services) -> None:
    scheduler = services.extras.pop(SCHEDULER_KEY, None)
    if isinstance(scheduler, Scheduler):
        await asyncio.to_thread(scheduler.stop)


def partial_model_for(services: Services, profile: EngineProfile, options: RecognitionOptions) -> str:
    """English sessions get the small English model for interim results; others the profile's model."""
    if profile.partial_model:
        return profile.partial_model
    english = options.language == "en" or options.language_hints[:1] == ["en"]
    if english and services.settings.english_model:
        return services.settings.english_model
    return profile.model


def stream_units(services: Services, profile: EngineProfile, partial_model: str) -> int:
    """Capacity units a stream holds: 1 with the small English partial model, 2 otherwise."""
    return 1 if partial_model == services.settings.english_model else 2


def build_engine(
    services: Services, profile: EngineProfile, options: RecognitionOptions, partial_model: str
) -> WhisperStreamEngine:
    return WhisperStreamEngine(
        services.recognizer,
        profile,
        options,
        partial_model=partial_model,
        fast_finals=services.settings.realtime_fast_finals,
    )


async def authenticate(websocket: WebSocket, services: Services) -> bool:
    """Check the API key at the handshake; on failure answer HTTP 401 and return False."""
    try:
        check_key(services.settings, websocket.headers)
    except InvalidApiKey as exc:
        body = dashscope_error_body(exc.code, exc.message)
        try:
            await websocket.send_denial_response(JSONResponse(body, status_code=401))
        except RuntimeError:  # the server has no denial-response extension: plain refusal
            await websocket.close(code=1008, reason=exc.message)
        return False
    return True


class Outbox:
    """Serialises outgoing events through one writer task. ``put`` never blocks: when the client stops
    reading and ``limit`` events pile up, the connection is closed instead of buffering without bound."""

    def __init__(self, websocket: WebSocket, limit: int = OUTBOX_LIMIT) -> None:
        self.websocket = websocket
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=limit)
        self._writer = asyncio.ensure_future(self._write())
        self.overflowed = False
        self._aborting: asyncio.Future[None] | None = None
        self.broken = False

    def put(self, event: dict[str, Any]) -> None:
        if self.overflowed or self.broken:
            return
        try:
            self._queue.put_nowait(json.dumps(event, ensure_ascii=False))
        except asyncio.QueueFull:
            self.overflowed = True
            log.warning("client is not reading its events: closing the connection")
            self._writer.cancel()
            self._aborting = asyncio.ensure_future(self._abort())

    async def _abort(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(code=1008, reason="client not reading"), 2)

    async def _write(self) -> None:
        try:
            while True:
                text = await self._queue.get()
                if text is None:
                    return
                await self.websocket.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:  # the peer is gone
            self.broken = True

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued event is written (or the writer died)."""
        if self._writer.done():
            return
        await self._queue.put(None)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.drain()
        self._writer.cancel()
        if self.websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.websocket.close(code=code, reason=reason[:120]), 2)

    def cancel(self) -> None:
        self._writer.cancel()
