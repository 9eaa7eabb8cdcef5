"""Speech recognition through the OpenAI-compatible chat endpoint ``POST /compatible-mode/v1/chat/completions``.

The user message carries ``{"type": "input_audio", "input_audio": {"data": <URL or data URI>}}``; a system
message gives context text; ``asr_options`` (a top-level body field, ``extra_body`` in the OpenAI SDK)
sets ``language`` / ``enable_itn``. ``stream: true`` answers with ``chat.completion.chunk`` events, one per
recognized sentence, ending with ``data: [DONE]``. Errors use the OpenAI shape ``{"error": {...}}``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from voxgate.api.auth import require_key
from voxgate.api.errors import SSE_HEADERS, openai_error_body
from voxgate.api.sync_recognition import (
    ClipResult,
    as_object,
    load_samples,
    parse_bool,
    parse_format,
    parse_language,
    read_json_object,
    recognize_samples,
    require_model,
    stream_steps,
    sync_gate,
    text_of,
)
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.types import RecognitionOptions
from voxgate.errors import InvalidParameter, VoxgateError
from voxgate.jobs.store import owner_of
from voxgate.services import Services

logger = logging.getLogger("voxgate.api.chat")
router = APIRouter()

CHAT_PATH = "/compatible-mode/v1/chat/completions"


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


def _audio_part(part: dict[str, Any], param: str) -> tuple[Any, str, Any] | None:
    """(reference, parameter path, format) of an ``input_audio`` part, or None for other parts."""
    if part.get("type") != "input_audio" and "input_audio" not in part:
        return None
    inner = part.get("input_audio")
    if isinstance(inner, str):
        return inner, f"{param}.input_audio", None
    if not isinstance(inner, dict):
        raise InvalidParameter(f"{param}.input_audio must be an object with 'data'", param=param)
    return inner.get("data", inner.get("url")), f"{param}.input_audio.data", inner.get("format")


def parse_chat(body: dict[str, Any], services: Services) -> ChatCall:
    model = require_model(body.get("model"))
    profile = services.catalog.resolve(model, mode="sync")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidParameter("messages must be a non-empty array", param="messages")
    audios: list[tuple[Any, str, Any]] = []
    context: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidParameter(f"messages[{i}] must be an object", param=f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                found = _audio_part(part, f"messages[{i}].content[{j}]") if isinstance(part, dict) else None
                if found is not None:
                    audios.append(found)
        context.extend(text_of(content, f"messages[{i}].content"))
    if not audios:
        raise InvalidParameter(
            'no audio in messages: add a user content part {"type": "input_audio", "input_audio": {"data": ...}}',
            param="messages",
        )
    if len(audios) > 1:
        raise InvalidParameter("only one audio per request is supported", param=audios[1][1])
    audio, audio_param, audio_format = audios[0]
    if not isinstance(audio, str) or not audio.strip():
        raise InvalidParameter(f"{audio_param} must be a URL or a data URI", param=audio_param)
    asr = as_object(body.get("asr_options"), "asr_options")
    stream_options = as_object(body.get("stream_options"), "stream_options")
    stream = parse_bool(body.get("stream"), "stream")
    options = RecognitionOptions(
        language=parse_language(asr.get("language"), "asr_options.language"),
        context="\n".join(context) or None,
        itn=parse_bool(asr.get("enable_itn"), "asr_options.enable_itn"),
    )
    return ChatCall(
        model=model,
        profile=profile,
        audio=audio,
        audio_param=audio_param,
        audio_format=parse_format(audio_format, "input_audio.format"),
        options=options,
        stream=stream,
        include_usage=stream and parse_bool(stream_options.get("include_usage"), "stream_options.include_usage"),
    )


def _usage(result: ClipResult) -> dict[str, Any]:
    completion = result.token_estimate()
    return {
        "prompt_tokens": 0,
        "completion_tokens": completion,
        "total_tokens": completion,
        "seconds": result.seconds,
    }


def _annotations(result: ClipResult) -> list[dict[str, Any]]:
    info: dict[str, Any] = {"type": "audio_info"}
    if result.language:
        info["language"] = result.language
    return [info]


def render(call: ChatCall, result: ClipResult, completion_id: str, created: int) -> dict[str, Any]:
    message = {"role": "assistant", "content": result.text, "annotations": _annotations(result)}
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
        chunks = [self.chunk({"annotations": _annotations(result)}, "stop")]
        if self.call.include_usage:
            chunks.append(self.chunk(None) | {"usage": _usage(result)})
        return chunks


def _data(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _stream(
    call: ChatCall, services: Services, audio: np.ndarray, completion_id: str, created: int
) -> AsyncIterator[str]:
    """A role chunk at once, a content chunk per sentence as its block is recognized, stop, usage, [DONE]."""
    writer = ChunkWriter(call, completion_id, created)
    yield _data(writer.chunk({"role": "assistant", "content": ""}))
    try:
        async for step in stream_steps(services, audio, call.options, call.profile, incremental=True):
            if step.piece:
                yield _data(writer.chunk({"content": step.piece}))
            if step.final:
                for payload in writer.closing(step.result):
                    yield _data(payload)
    except VoxgateError as exc:
        yield _data(openai_error_body(exc.code, exc.message, exc.param))
        return
    except Exception:
        logger.exception("streamed recognition failed")
        yield _data(openai_error_body("InternalError", "internal error; the request was not completed"))
        return
    yield "data: [DONE]\n\n"


@router.post(CHAT_PATH)
async def chat_completions(request: Request, api_key: str = Depends(require_key())) -> Response:
    services: Services = request.app.state.services
    body = await read_json_object(request, services.settings.max_request_bytes)
    call = parse_chat(body, services)
    sync_gate(services).check()
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
