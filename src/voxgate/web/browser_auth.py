"""WebSocket keys from browsers, which cannot set an ``Authorization`` header on a handshake.

The page offers two subprotocols: ``voxgate`` and ``voxgate.key.<hex of the key>``. This ASGI middleware turns
the second into ``Authorization: Bearer <key>`` (unless the request already has one) and, when the
application accepts without choosing a subprotocol, accepts with ``voxgate`` (a browser drops a connection
whose offered subprotocols were all ignored). The key never appears in URLs or access logs.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SUBPROTOCOL = "voxgate"
KEY_PREFIX = "voxgate.key."


def key_from_subprotocols(offered: list[str]) -> str | None:
    """The key carried by a ``voxgate.key.<hex>`` subprotocol, or None."""
    for item in offered:
        if item.startswith(KEY_PREFIX):
            try:
                return bytes.fromhex(item[len(KEY_PREFIX) :]).decode()
            except (ValueError, UnicodeDecodeError):
                return None
    return None


class BrowserKeyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        offered = [str(p) for p in scope.get("subprotocols", [])] if scope["type"] == "websocket" else []
        if SUBPROTOCOL not in offered:
            await self.app(scope, receive, send)
            return
        key = key_from_subprotocols(offered)
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        if key and not any(name.lower() == b"authorization" for name, _ in headers):
            headers.append((b"authorization", f"Bearer {key}".encode()))
        inner: dict[str, Any] = {**scope, "headers": headers}

        async def send_with_subprotocol(message: Message) -> None:
            if message["type"] == "websocket.accept" and not message.get("subprotocol"):
                message = {**message, "subprotocol": SUBPROTOCOL}
            await send(message)

        await self.app(inner, receive, send_with_subprotocol)
