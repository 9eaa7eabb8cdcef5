"""Synchronous recognition on the DashScope native endpoint
``POST /api/v1/services/aigc/multimodal-generation/generation``.

Two request/response dialects share the path, chosen by the model's family:

* ``qwen3-asr-flash`` / ``qwen3-omni-flash``: ``{"audio": ...}`` content parts, ``parameters.asr_options``,
  answer in ``output.choices[0].message`` with an ``audio_info`` annotation;
* ``fun-asr-flash`` / ``qwen-audio-*-asr-flash``: ``{"type": "input_audio", ...}`` parts, ``format`` /
  ``sample_rate`` / ``language_hints`` / ``vocabulary_id`` parameters, answer in ``output.text``.

``X-DashScope-SSE: enable`` turns the answer into server-sent events, one per recognized sentence;
every error is then an ``event:error`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from voxgate.api.auth import require_key
from voxgate.api.body import json_body, read_json_object
from voxgate.api.errors import new_request_id, sse_error_event
from voxgate.api.messages import Messages, audio_message
from voxgate.api.sse import SSE_HEADERS, dashscope_event
from voxgate.api.sync_recognition import (
    ClipResult,
    StreamStep,
    load_samples,
    recognize_samples,
    stream_steps,
)
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.types import RecognitionOptions
from voxgate.errors import VoxgateError
from voxgate.jobs.store import owner_of
from voxgate.output.dashscope_json import audio_info_annotations, sentence_json
from voxgate.params import (
    AudioFormat,
    Flag,
    InstantHotwords,
    LanguageCode,
    LanguageHints,
    NonEmptyStr,
    RequestModel,
    SampleRate,
    parse,
)
from voxgate.services import Services

logger = logging.getLogger("voxgate.api.generation")
router = APIRouter()

GENERATION_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
CHOICES_FAMILIES = frozenset({"qwen-asr", "qwen-omni"})


@dataclass(slots=True)
class GenerationCall:
    """A parsed generation request."""

    profile: EngineProfile
    audio: str
    audio_param: str
    options: RecognitionOptions
    audio_format: str | None
    sample_rate: int | None
    incremental: bool
    vocabulary_id: str | None = None
    owner: str | None = None  # the caller's owner tag: its vocabularies and uploads only

    @property
    def choices_style(self) -> bool:
        return self.profile.family in CHOICES_FAMILIES


# -- requests -------------------------------------------------------------------------------------
class GenerationAsrOptions(RequestModel):
    language: LanguageCode = None
    enable_itn: Flag | None = None
    enable_lid: Flag = True


class GenerationParameters(RequestModel):
    asr_options: GenerationAsrOptions = Field(default_factory=GenerationAsrOptions)
    language: LanguageCode = None
    language_hints: LanguageHints = Field(default_factory=list)
    enable_itn: Flag | None = None
    vocabulary: InstantHotwords = Field(default_factory=list)
    vocabulary_id: str | None = None
    format: AudioFormat = None
    sample_rate: SampleRate = None
    incremental_output: Flag = False


class GenerationInput(RequestModel):
    messages: Messages


class GenerationRequest(RequestModel):
    """``POST /api/v1/services/aigc/multimodal-generation/generation`` (both dialects)."""

    model: NonEmptyStr
    input: GenerationInput
    parameters: GenerationParameters = Field(default_factory=GenerationParameters)


def parse_generation(body: dict[str, Any], services: Services) -> GenerationCall:
    request = parse(GenerationRequest, body)
    profile = services.catalog.resolve(request.model, mode="sync")
    params = request.parameters
    found = audio_message(request.input.messages, "input.messages")
    itn = params.asr_options.enable_itn if params.asr_options.enable_itn is not None else params.enable_itn
    options = RecognitionOptions(
        language=params.asr_options.language or params.language,
        language_hints=params.language_hints,
        hotwords=params.vocabulary,
        context=found.context,
        itn=bool(itn),
    )
    return GenerationCall(
        profile=profile,
        audio=found.audio,
        audio_param=found.param,
        options=options,
        audio_format=params.format or found.audio_format,
        sample_rate=params.sample_rate,
        incremental=params.incremental_output,
        vocabulary_id=params.vocabulary_id or None,
    )


async def prepare_generation(body: dict[str, Any], services: Services, owner: str | None = None) -> GenerationCall:
    """Parse the request and look up its vocabulary (a store query: run in a worker thread)."""
    call = parse_generation(body, services)
    call.owner = owner
    if call.vocabulary_id:
        stored = await asyncio.to_thread(services.hotwords_for, call.vocabulary_id, owner)
        call.options.hotwords = [*stored, *call.options.hotwords]
    return call


# -- rendering ------------------------------------------------------------------------------------
def _usage(call: GenerationCall, result: ClipResult) -> dict[str, Any]:
    if call.choices_style:
        return {
            "input_tokens_details": {"text_tokens": 0},
            "output_tokens_details": {"text_tokens": result.token_estimate()},
            "seconds": result.seconds,
        }
    return {"duration": result.seconds, "seconds": result.seconds}


def choices_output(text: str, result: ClipResult, *, final: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": [{"text": text}]}
    if final:
        message["annotations"] = audio_info_annotations(result.language)
    return {"choices": [{"finish_reason": "stop" if final else "null", "message": message}]}


def text_output(text: str, result: ClipResult, *, sentence_index: int | None, final: bool) -> dict[str, Any]:
    """``output`` of the input_audio dialect: text so far, plus the latest sentence (streaming) or all."""
    output: dict[str, Any] = {"text": text, "finished": final}
    if result.language:
        output["language"] = result.language
    if sentence_index is not None:
        output["sentence"] = sentence_json(result.sentences[sentence_index], sentence_index + 1)
    else:
        output["sentences"] = [sentence_json(s, i + 1) for i, s in enumerate(result.sentences)]
    return output


def render(call: GenerationCall, result: ClipResult, request_id: str) -> dict[str, Any]:
    """The non-streaming answer."""
    if call.choices_style:
        output = choices_output(result.text, result, final=True)
    else:
        output = text_output(result.text, result, sentence_index=None, final=True)
    return {"request_id": request_id, "output": output, "usage": _usage(call, result)}


def render_step(call: GenerationCall, step: StreamStep, request_id: str) -> dict[str, Any]:
    """One streamed event: a sentence as its new piece (incremental) or the text so far."""
    if call.choices_style:
        output = choices_output(step.piece, step.result, final=step.final)
    else:
        output = text_output(step.piece, step.result, sentence_index=step.index, final=step.final)
    return {"output": output, "usage": _usage(call, step.result), "request_id": request_id}


def sse_event(event_id: int, payload: dict[str, Any]) -> str:
    """A DashScope SSE result event."""
    return dashscope_event(event_id, payload)


# -- routes ---------------------------------------------------------------------------------------
async def _recognize(call: GenerationCall, services: Services) -> ClipResult:
    return await recognize_samples(services, await _samples(call, services), call.options, call.profile)


async def _samples(call: GenerationCall, services: Services) -> np.ndarray:
    return await load_samples(
        services,
        call.audio,
        param=call.audio_param,
        audio_format=call.audio_format,
        sample_rate=call.sample_rate,
        owner=call.owner,
    )


async def _stream(
    services: Services, request_id: str, call: GenerationCall | None, error: VoxgateError | None
) -> AsyncIterator[str]:
    """SSE events: one per sentence as soon as its block is recognized, or a single ``event:error``."""
    if error is None and call is not None:
        incremental = call.incremental and call.choices_style
        count = 0
        try:
            audio = await _samples(call, services)
            async for step in stream_steps(services, audio, call.options, call.profile, incremental=incremental):
                count += 1
                yield sse_event(count, render_step(call, step, request_id))
            return
        except VoxgateError as exc:
            error = exc
        except Exception:
            logger.exception("streamed recognition failed")
            error = VoxgateError("internal error; the request was not completed")
    assert error is not None
    yield sse_error_event(error.code, error.message, request_id, status=error.status)


@router.post(GENERATION_PATH, openapi_extra=json_body(GenerationRequest))
async def generation(request: Request, api_key: str = Depends(require_key())) -> Response:
    services: Services = request.app.state.services
    request_id = new_request_id()
    streaming = request.headers.get("x-dashscope-sse", "").strip().lower() == "enable"
    call: GenerationCall | None = None
    error: VoxgateError | None = None
    try:
        body = await read_json_object(request, services.settings.max_request_bytes)
        call = await prepare_generation(body, services, owner_of(api_key))
    except VoxgateError as exc:
        if not streaming:
            raise
        error = exc
    if streaming:
        return StreamingResponse(
            _stream(services, request_id, call, error),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, "X-Request-Id": request_id},
        )
    assert call is not None
    result = await _recognize(call, services)
    return JSONResponse(render(call, result, request_id), headers={"X-Request-Id": request_id})
