"""Speech recognition through the OpenAI-compatible chat endpoint ``POST /compatible-mode/v1/chat/completions``.

The user message carries ``{"type": "input_audio", "input_audio": {"data": <URL or data URI>}}``; a system
message gives context text; ``asr_options`` (a top-level body field, ``extra_body`` in the OpenAI SDK)
sets ``language`` / ``enable_itn``. ``stream: true`` answers with ``chat.completion.chunk`` events, one per
recognized sentence, ending with ``data: [DONE]``. Errors use the OpenAI shape ``{"error": {...}}``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from voxgate.api.auth import require_key
from voxgate.api.body import json_body, read_json_object
from voxgate.api.errors import openai_error_body
from voxgate.api.messages import Messages, audio_message
from voxgate.api.sse import DONE, SSE_HEADERS, data_event
from voxgate.api.sync_recognition import (
    ClipResult,
    load_samples,
    recognize_samples,
    stream_steps,
)
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.types import RecognitionOptions
from voxgate.errors import VoxgateError
from voxgate.jobs.store import owner_of
from voxgate.output.dashscope_json import audio_info_annotations
from voxgate.params import Flag, LanguageCode, NonEmptyStr, RequestModel, parse
from voxgate.services import Services

logger = logging.getLogger("voxgate.api.chat")
router = APIRouter()

CHAT_PATH = "/compatible-mode/v1/chat/completions"


class ChatAsrOptions(RequestModel):
    language: LanguageCode = None
    enable_itn: Flag = False


class StreamOptions(RequestModel):
    include_usage: Flag = False


class ChatRequest(RequestModel):
    """``POST /compatible-mode/v1/chat/completions`` (``asr_options``: ``extra_body`` in the OpenAI SDK)."""

    model: NonEmptyStr
    messages: Messages
    stream: Flag = False
    stream_options: StreamOptions = Field(default_factory=StreamOptions)
    asr_options: ChatAsrOptions = Field(default_factory=ChatAsrOptions)


@dataclass(slots=True)
class ChatCall:
    """A parsed chat-completions recognition request."""

    model: str
    profile: EngineProfile
    audio: str
    audio_param: str
    audio_format: str | None
    options: RecognitionOptions
    stream: bool
    include_usage: bool


def parse_chat(body: dict[str, Any], services: Services) -> ChatCall:
    request = parse(ChatRequest, body)
    profile = services.catalog.resolve(request.model, mode="sync")
    found = audio_message(request.messages, "messages")
    options = RecognitionOptions(
        language=request.asr_options.language, context=found.context, itn=request.asr_options.enable_itn
    )
    return ChatCall(
        model=request.model,
        profile=profile,
        audio=found.audio,
        audio_param=found.param,
        audio_format=found.audio_format,
        options=options,
        stream=request.stream,
        include_usage=request.stream and request.stream_options.include_usage,
    )


def _usage(result: ClipResult) -> dict[str, Any]:
    completion = result.token_estimate()
    return {
        "prompt_tokens": 0,
        "completion_tokens": completion,
        "total_tokens": completion,
        "seconds": result.seconds,
    }


def render(call: ChatCall, result: ClipResult, completion_id: str, created: int) -> dict[str, Any]:
    message = {"role": "assistant", "content": result.text, "annotations": audio_info_annotations(result.language)}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": call.model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": message, "logprobs": None}],
        "usage": _usage(result),
    }


@dataclass(slots=True)
class ChunkWriter:
    """Builds the ``chat.completion.chunk`` payloads of one streamed answer."""

    call: ChatCall
    completion_id: str
    created: int

    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.call.model,
            "choices": choices,
        }

    def closing(self, result: ClipResult) -> list[dict[str, Any]]:
        """The stop chunk (with the annotation) and, if asked for, the usage chunk."""
        chunks = [self.chunk({"annotations": audio_info_annotations(result.language)}, "stop")]
        if self.call.include_usage:
            chunks.append(self.chunk(None) | {"usage": _usage(result)})
        return chunks


async def _stream(
    call: ChatCall, services: Services, audio: np.ndarray, completion_id: str, created: int
) -> AsyncIterator[str]:
    """A role chunk at once, a content chunk per sentence as its block is recognized, stop, usage, [DONE]."""
    writer = ChunkWriter(call, completion_id, created)
    yield data_event(writer.chunk({"role": "assistant", "content": ""}))
    try:
        async for step in stream_steps(services, audio, call.options, call.profile, incremental=True):
            if step.piece:
                yield data_event(writer.chunk({"content": step.piece}))
            if step.final:
                for payload in writer.closing(step.result):
                    yield data_event(payload)
    except VoxgateError as exc:
        yield data_event(openai_error_body(exc.code, exc.message, exc.param))
        return
    except Exception:
        logger.exception("streamed recognition failed")
        yield data_event(openai_error_body("InternalError", "internal error; the request was not completed"))
        return
    yield DONE


@router.post(CHAT_PATH, openapi_extra=json_body(ChatRequest))
async def chat_completions(request: Request, api_key: str = Depends(require_key())) -> Response:
    services: Services = request.app.state.services
    body = await read_json_object(request, services.settings.max_request_bytes)
    call = parse_chat(body, services)
    services.sync_gate.check()
    # Audio problems are answered as HTTP errors, before any stream starts.
    audio = await load_samples(
        services, call.audio, param=call.audio_param, audio_format=call.audio_format, owner=owner_of(api_key)
    )
    completion_id = f"chatcmpl-{uuid.uuid4()}"
    created = int(time.time())
    if call.stream:
        return StreamingResponse(
            _stream(call, services, audio, completion_id, created),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    result = await recognize_samples(services, audio, call.options, call.profile)
    return JSONResponse(render(call, result, completion_id, created))
