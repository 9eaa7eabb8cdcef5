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
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from voxgate.api.auth import require_key
from voxgate.api.errors import SSE_HEADERS, new_request_id, sse_error_event
from voxgate.api.sync_recognition import (
    ClipResult,
    StreamStep,
    as_object,
    instant_hotwords,
    load_samples,
    parse_bool,
    parse_format,
    parse_language,
    parse_language_hints,
    parse_sample_rate,
    read_json_object,
    recognize_samples,
    require_model,
    stream_steps,
    text_of,
)
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.types import RecognitionOptions
from voxgate.errors import InvalidParameter, VoxgateError
from voxgate.jobs.store import owner_of
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


# -- parsing --------------------------------------------------------------------------------------
def _audio_of(part: dict[str, Any], param: str) -> tuple[Any, str] | None:
    """The audio reference held by a content part (either dialect), with its parameter path."""
    if "audio" in part and part.get("type") in (None, "audio"):
        return part["audio"], f"{param}.audio"
    if part.get("type") == "input_audio" or "input_audio" in part:
        inner = part.get("input_audio")
        if isinstance(inner, str):
            return inner, f"{param}.input_audio"
        if not isinstance(inner, dict):
            raise InvalidParameter(f"{param}.input_audio must be an object with 'data'", param=param)
        return inner.get("data", inner.get("url")), f"{param}.input_audio.data"
    return None


def parse_messages(messages: Any) -> tuple[tuple[Any, str], list[str]]:
    """The single audio reference and the context texts of ``input.messages``."""
    if not isinstance(messages, list) or not messages:
        raise InvalidParameter("input.messages must be a non-empty array", param="input.messages")
    audios: list[tuple[Any, str]] = []
    context: list[str] = []
    for i, message in enumerate(messages):
        param = f"input.messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidParameter(f"{param} must be an object", param=param)
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and (found := _audio_of(part, f"{param}.content[{j}]")) is not None:
                    audios.append(found)
        context.extend(text_of(content, f"{param}.content"))
    if not audios:
        raise InvalidParameter(
            'no audio in input.messages: add a user content part {"audio": <url or data URI>}',
            param="input.messages",
        )
    if len(audios) > 1:
        raise InvalidParameter("only one audio per request is supported", param=audios[1][1])
    return audios[0], context


def parse_generation(body: dict[str, Any], services: Services) -> GenerationCall:
    profile = services.catalog.resolve(require_model(body.get("model")), mode="sync")
    input_ = as_object(body.get("input"), "input")
    params = as_object(body.get("parameters"), "parameters")
    asr = as_object(params.get("asr_options"), "parameters.asr_options")
    (audio, audio_param), context = parse_messages(input_.get("messages"))
    if not isinstance(audio, str) or not audio.strip():
        raise InvalidParameter(f"{audio_param} must be a URL or a data URI", param=audio_param)
    language = parse_language(asr.get("language"), "parameters.asr_options.language")
    if language is None:
        language = parse_language(params.get("language"), "parameters.language")
    itn_value = asr.get("enable_itn", params.get("enable_itn"))
    parse_bool(asr.get("enable_lid"), "parameters.asr_options.enable_lid", True)
    options = RecognitionOptions(
        language=language,
        language_hints=parse_language_hints(params.get("language_hints"), "parameters.language_hints"),
        hotwords=instant_hotwords(params.get("vocabulary"), "parameters.vocabulary"),
        context="\n".join(context) or None,
        itn=parse_bool(itn_value, "parameters.asr_options.enable_itn"),
    )
    return GenerationCall(
        profile=profile,
        audio=audio,
        audio_param=audio_param,
        options=options,
        audio_format=parse_format(params.get("format"), "parameters.format"),
        sample_rate=parse_sample_rate(params.get("sample_rate"), "parameters.sample_rate"),
        incremental=parse_bool(params.get("incremental_output"), "parameters.incremental_output"),
        vocabulary_id=_vocabulary_id(params),
    )


async def prepare_generation(body: dict[str, Any], services: Services, owner: str | None = None) -> GenerationCall:
    """Parse the request and look up its vocabulary (a store query: run in a worker thread)."""
    call = parse_generation(body, services)
    call.owner = owner
    if call.vocabulary_id:
        stored = await asyncio.to_thread(services.hotwords_for, call.vocabulary_id, owner)
        call.options.hotwords = [*stored, *call.options.hotwords]
    return call


def _vocabulary_id(params: dict[str, Any]) -> str | None:
    value = params.get("vocabulary_id")
    if value is not None and not isinstance(value, str):
        raise InvalidParameter("parameters.vocabulary_id must be a string", param="parameters.vocabulary_id")
    return value or None


# -- rendering ------------------------------------------------------------------------------------
def _usage(call: GenerationCall, result: ClipResult) -> dict[str, Any]:
    if call.choices_style:
        return {
            "input_tokens_details": {"text_tokens": 0},
            "output_tokens_details": {"text_tokens": result.token_estimate()},
            "seconds": result.seconds,
        }
    return {"duration": result.seconds, "seconds": result.seconds}


def _annotations(result: ClipResult) -> list[dict[str, Any]]:
    info: dict[str, Any] = {"type": "audio_info"}
    if result.language:
        info["language"] = result.language
    return [info]


def choices_output(text: str, result: ClipResult, *, final: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": [{"text": text}]}
    if final:
        message["annotations"] = _annotations(result)
    return {"choices": [{"finish_reason": "stop" if final else "null", "message": message}]}


def _sentence_json(result: ClipResult, index: int) -> dict[str, Any]:
    sentence = result.sentences[index]
    return {
        "sentence_id": index + 1,
        "begin_time": sentence.begin_time,
        "end_time": sentence.end_time,
        "text": sentence.text,
        "words": [
            {"begin_time": w.begin_time, "end_time": w.end_time, "text": w.text, "punctuation": w.punctuation}
            for w in sentence.words
        ],
    }


def text_output(text: str, result: ClipResult, *, sentence_index: int | None, final: bool) -> dict[str, Any]:
    """``output`` of the input_audio dialect: text so far, plus the latest sentence (streaming) or all."""
    output: dict[str, Any] = {"text": text, "finished": final}
    if result.language:
        output["language"] = result.language
    if sentence_index is not None:
        output["sentence"] = _sentence_json(result, sentence_index)
    else:
        output["sentences"] = [_sentence_json(result, i) for i in range(len(result.sentences))]
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
    """A DashScope SSE result event (``id:``, ``event:result``, ``data:``, blank line)."""
    return f"id:{event_id}\nevent:result\ndata:{json.dumps(payload, ensure_ascii=False)}\n\n"


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


@router.post(GENERATION_PATH)
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
