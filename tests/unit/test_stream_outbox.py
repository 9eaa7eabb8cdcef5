"""The bounded outbox of the WebSocket adapters: a client that stops reading is cut off, not buffered."""

from __future__ import annotations

import asyncio
import json

from starlette.websockets import WebSocketState

from voxgate.api.dashscope.ws_support import Outbox


class StuckSocket:
    """A WebSocket whose peer never reads: sends block after the first few."""

    def __init__(self, accepted: int) -> None:
        self.accepted = accepted
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.client_state = WebSocketState.CONNECTED
        self._never = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if len(self.sent) >= self.accepted:
            await self._never.wait()
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.client_state = WebSocketState.DISCONNECTED


async def test_outbox_keeps_order_and_drains() -> None:
    socket = StuckSocket(accepted=100)
    outbox = Outbox(socket, limit=16)  # type: ignore[arg-type]
    for index in range(10):
        outbox.put({"n": index})
    await outbox.close(1000, "done")
    assert [json.loads(t)["n"] for t in socket.sent] == list(range(10))
    assert socket.closed == (1000, "done") and not outbox.overflowed


async def test_outbox_closes_a_connection_that_stops_reading() -> None:
    socket = StuckSocket(accepted=3)
    outbox = Outbox(socket, limit=8)  # type: ignore[arg-type]
    for index in range(50):
        outbox.put({"n": index})
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert outbox.overflowed
    assert socket.closed is not None and socket.closed[0] == 1008
    assert len(socket.sent) == 3  # nothing piled up beyond the limit
    outbox.put({"n": "late"})  # ignored once cut off
    outbox.cancel()
