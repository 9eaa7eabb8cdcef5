"""JSON client events of the realtime WebSocket protocols (DashScope ``session.update`` sessions and the OpenAI
Realtime transcription endpoint): one reader of an event frame and of its base64 audio, one client-error type.
Each adapter renders :class:`ClientEventError` as its own ``error`` event; the session goes on."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

MAX_APPEND_AUDIO = 15 * 1024 * 1024  # decoded bytes one input_audio_buffer.append may carry
MAX_EVENT_BYTES = MAX_APPEND_AUDIO * 4 // 3 + 1024 * 1024  # the largest append, base64, with room for its JSON
# Frames up to this size reach the adapters (and get their protocol's error event when over the limits above);
# the WebSocket layer closes the connection with 1009 (message too big) beyond it.
WEBSOCKET_MAX_FRAME_BYTES = 32 * 1024 * 1024


class ClientEventError(Exception):
    """A client mistake in one event: ``code`` and ``param`` as the protocol's error event names them."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def read_event(text: str, max_bytes: int = MAX_EVENT_BYTES) -> tuple[dict[str, Any], str | None]:
    """One text frame as (event object, its ``event_id`` if a string)."""
    if len(text) > max_bytes:
        raise ClientEventError("invalid_value", f"event too large ({len(text)} bytes; the limit is {max_bytes})")
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        raise ClientEventError("invalid_json", "the event is not valid JSON") from None
    if not isinstance(event, dict):
        raise ClientEventError("invalid_event", "the event must be a JSON object")
    event_id = event.get("event_id")
    return event, event_id if isinstance(event_id, str) else None


def audio_bytes(audio: Any) -> bytes:
    """The bytes of an append event's base64 ``audio`` field."""
    if not isinstance(audio, str):
        raise ClientEventError("invalid_value", "audio must be a base64 string", "audio")
    if len(audio) > MAX_APPEND_AUDIO * 4 // 3 + 4:
        raise ClientEventError("invalid_value", "one append may carry at most 15 MiB of audio", "audio")
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ClientEventError("invalid_value", "audio is not valid base64", "audio") from None


BINARY_FRAME_MESSAGE = "binary frames are not accepted: send audio as base64 in input_audio_buffer.append"


def new_id(prefix: str, digits: int = 24) -> str:
    """A fresh event, item or session id such as ``item_3f2a…``."""
    return f"{prefix}_{uuid.uuid4().hex[:digits]}"


class ConversationItems:
    """The conversation items of a realtime session: one item id per utterance, and the order in which they
    were committed (each commit names the item before it)."""

    def __init__(self, digits: int = 24, first_previous: str | None = None) -> None:
        self._digits = digits
        self._ids: dict[int, str] = {}
        self._committed: set[int] = set()
        self.last: str | None = first_previous

    def item_id(self, utterance: int) -> str:
        if utterance not in self._ids:
            self._ids[utterance] = new_id("item", self._digits)
        return self._ids[utterance]

    def commit(self, utterance: int) -> tuple[str | None, str] | None:
        """(previous item id, this item id) the first time ``utterance`` is committed; None after that."""
        if utterance in self._committed:
            return None
        self._committed.add(utterance)
        previous, self.last = self.last, self.item_id(utterance)
        return previous, self.last
