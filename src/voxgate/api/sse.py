"""Server-sent events: the response headers and the two framings every event stream uses."""

from __future__ import annotations

import json
from typing import Any

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Response headers for every server-sent-event stream (no caching, no proxy buffering)."""

DONE = "data: [DONE]\n\n"
"""The OpenAI stream terminator."""


def dashscope_event(event_id: int, payload: Any, *, event: str = "result", status: int | None = None) -> str:
    """A DashScope event: ``id:``, ``event:`` (no space after the colon), optional ``status:``, ``data:``."""
    status_line = f"status:{status}\n" if status is not None else ""
    return f"id:{event_id}\nevent:{event}\n{status_line}data:{json.dumps(payload, ensure_ascii=False)}\n\n"


def data_event(payload: Any) -> str:
    """An OpenAI-style event: one ``data:`` line of JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
