"""Request context: a request id for every HTTP request and WebSocket, and HTTP request counts.

The id is the client's ``X-Request-Id`` when it sends a sane one, else a new UUID. It is set in
:data:`voxgate.logs.REQUEST_ID` for the log lines of the request and returned as the ``X-Request-Id``
response header (also on WebSocket handshakes, accepted or refused). HTTP requests are counted by route
template (``unmatched`` for paths no route serves), method and status in :data:`voxgate.metrics.HTTP_REQUESTS`.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxgate.logs import REQUEST_ID
from voxgate.metrics import HTTP_REQUESTS

HEADER = "X-Request-Id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(headers: Headers) -> str:
    """The client's request id if it is 1-128 plain characters, else a new one."""
    given = headers.get(HEADER, "")
    return given if _CLIENT_ID.fullmatch(given) else str(uuid.uuid4())


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    """Pure ASGI middleware (streaming responses and WebSockets pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                if HEADER not in headers:
                    headers.append(HEADER, request_id)
            await send(message)

        reset = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(reset)
            if scope["type"] == "http":
                HTTP_REQUESTS.labels(route_template(scope), scope["method"], str(status)).inc()
