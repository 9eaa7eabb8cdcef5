"""Pieces shared by the real-time WebSocket adapters: handshake auth, a bounded outbox, the relay of an engine
stream's events (with the session metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.types import Message
from starlette.websockets import WebSocketState

from voxgate.api.auth import check_key
from voxgate.api.errors import dashscope_error_body
from voxgate.engine.live import LiveStream
from voxgate.engine.stream import Final, Interim, StreamEvent
from voxgate.errors import InvalidApiKey
from voxgate.metrics import (
    FINAL_DECODES,
    FINAL_LAG,
    FIRST_PARTIAL,
    SESSIONS_OPEN,
    SESSIONS_REFUSED,
    SPECULATIVE_ABANDONED,
)
from voxgate.services import Services

log = logging.getLogger("voxgate.realtime")

OUTBOX_LIMIT = 512  # queued server events beyond which the client is considered not reading


class Relay:
    """An open engine stream seen from a protocol adapter: a task hands each event to ``on_event`` in order, and
    the session metrics (open sessions, first-interim latency, final lag, decode paths) are kept here."""

    def __init__(self, stream: LiveStream, on_event: Callable[[StreamEvent], None], protocol: str) -> None:
        self.stream = stream
        self.protocol = protocol
        self._on_event = on_event
        self._closed = False
        SESSIONS_OPEN.labels(protocol).inc()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for event in self.stream.events():
            if isinstance(event, Interim) and event.latency_s is not None:
                FIRST_PARTIAL.labels(self.protocol).observe(event.latency_s)
            elif isinstance(event, Final) and event.lag_s is not None:
                FINAL_LAG.labels(self.protocol).observe(event.lag_s)
            self._on_event(event)

    async def drain(self) -> None:
        """Wait until every event of the finished stream has been handed on."""
        await self._task

    def close(self) -> None:
        """Stop relaying, close the stream (its capacity goes back) and count its decodes. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        self.stream.close()
        stats = self.stream.stats
        for path in ("fast_finals", "retried_finals", "full_finals"):
            FINAL_DECODES.labels(path.removesuffix("_finals")).inc(stats.get(path, 0))
        SPECULATIVE_ABANDONED.inc(stats.get("speculative_abandoned", 0))
        SESSIONS_OPEN.labels(self.protocol).dec()


def refused(protocol: str) -> None:
    """Count a stream refused for want of capacity."""
    SESSIONS_REFUSED.labels(protocol, "capacity").inc()


async def receive(websocket: WebSocket, outbox: Outbox, idle_s: float) -> Message | None:
    """The client's next message; None once the client is gone or has stopped reading its events.
    Raises ``TimeoutError`` after ``idle_s`` seconds without a message."""
    message = await asyncio.wait_for(websocket.receive(), idle_s)
    if message["type"] == "websocket.disconnect" or outbox.overflowed or outbox.broken:
        return None
    return message


async def pump_frames(
    websocket: WebSocket,
    outbox: Outbox,
    idle_s: float,
    *,
    on_text: Callable[[str], Awaitable[None]],
    on_bytes: Callable[[bytes], Awaitable[None]],
    on_idle: Callable[[], Awaitable[None]],
    done: Callable[[], bool] = lambda: False,
) -> bool:
    """Hand each client frame to ``on_text`` / ``on_bytes`` until ``done()`` (True), or until the client is gone
    or has stopped reading (False). After ``idle_s`` seconds without a frame, ``on_idle`` runs and False is
    returned."""
    while not done():
        try:
            message = await receive(websocket, outbox, idle_s)
        except TimeoutError:
            await on_idle()
            return False
        if message is None:
            return False
        if message.get("bytes") is not None:
            await on_bytes(message["bytes"])
        elif message.get("text") is not None:
            await on_text(message["text"])
    return True


async def authenticate(websocket: WebSocket, services: Services) -> str | None:
    """Check the API key at the handshake: the caller's identity, or None after answering HTTP 401."""
    try:
        return check_key(services.settings, websocket.headers)
    except InvalidApiKey as exc:
        body = dashscope_error_body(exc.code, exc.message)
        try:
            await websocket.send_denial_response(JSONResponse(body, status_code=401))
        except RuntimeError:  # the server has no denial-response extension: plain refusal
            await websocket.close(code=1008, reason=exc.message)
        return None


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
