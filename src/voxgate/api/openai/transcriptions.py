"""OpenAI audio API: ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` (multipart), ``GET /v1/models``.

Also served under ``/compatible-mode/v1`` so an OpenAI client configured for the chat endpoint can use it.
``model`` accepts the OpenAI names (``whisper-1``, ``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``) and every
catalog name. ``response_format``: json, text, srt, vtt, verbose_json (segments; words with
``timestamp_granularities[]=word``). ``stream=true`` answers with ``transcript.text.delta`` events (one per
sentence) and a final ``transcript.text.done``.

Translations (speech in any language to English text, Whisper's translate task) take ``file``, ``model``,
``prompt`` and ``response_format`` (the same five formats); they need a multilingual engine model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from voxgate.api.audio_source import MultipartForm, read_multipart, temp_destination
from voxgate.api.auth import require_key
from voxgate.api.body import form_body
from voxgate.api.errors import openai_error_body
from voxgate.api.sse import SSE_HEADERS, data_event
from voxgate.api.sync_recognition import (
    ClipResult,
    decode_for_sync,
    recognize_samples,
    stream_steps,
)
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.models import BUNDLED
from voxgate.engine.types import RecognitionOptions, Sentence
from voxgate.errors import InvalidParameter, VoxgateError
from voxgate.output.subtitles import to_srt, to_vtt
from voxgate.params import Flag, LanguageCode, NonEmptyStr, RequestModel, parse
from voxgate.services import Services

logger = logging.getLogger("voxgate.api.transcriptions")
F = TypeVar("F", bound=RequestModel)
router = APIRouter()

PREFIXES = ("/v1", "/compatible-mode/v1")
OPENAI_MODELS = {
    "whisper-1": "qwen3-asr-flash",
    "gpt-4o-transcribe": "qwen3-asr-flash",
    "gpt-4o-mini-transcribe": "qwen3-asr-flash",
}
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = frozenset({"word", "segment"})

# verbose_json reports the language by name, as the OpenAI API does.
LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "yue": "cantonese", "ja": "japanese", "ko": "korean", "de": "german",
    "fr": "french", "es": "spanish", "it": "italian", "pt": "portuguese", "ru": "russian", "ar": "arabic",
    "nl": "dutch", "pl": "polish", "tr": "turkish", "sv": "swedish", "id": "indonesian", "vi": "vietnamese",
    "th": "thai", "hi": "hindi", "uk": "ukrainian", "cs": "czech", "el": "greek", "fi": "finnish",
    "da": "danish", "no": "norwegian", "he": "hebrew", "hu": "hungarian", "ro": "romanian", "ms": "malay",
    "tl": "tagalog", "fa": "persian", "ca": "catalan",
}  # fmt: skip


def resolve_model(services: Services, name: str) -> EngineProfile:
    """An OpenAI model name or a catalog name; unknown names are ``ModelNotFound`` (404)."""
    return services.catalog.resolve(OPENAI_MODELS.get(name, name))


def _response_format(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower() or "json"
    return value


def _granularities(value: Any) -> Any:
    """Repeated ``timestamp_granularities[]`` fields (or comma-separated values): word and/or segment."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        chosen = {v.strip() for item in value for v in item.split(",") if v.strip()}
        unknown = chosen - GRANULARITIES
        if unknown:
            raise PydanticCustomError(
                "granularity", "unknown value '{value}' (use word or segment)", {"value": sorted(unknown)[0]}
            )
        return chosen or {"segment"}
    return value


ResponseFormat = Annotated[Literal["json", "text", "srt", "vtt", "verbose_json"], BeforeValidator(_response_format)]
AudioFile = Annotated[Path, WithJsonSchema({"type": "string", "format": "binary"})]


class TranslationForm(RequestModel):
    """``multipart/form-data`` of ``POST /v1/audio/translations``."""

    file: AudioFile
    model: NonEmptyStr
    prompt: str | None = None
    response_format: ResponseFormat = "json"

    @property
    def context(self) -> str | None:
        return (self.prompt or "").strip() or None


class TranscriptionForm(TranslationForm):
    """``multipart/form-data`` of ``POST /v1/audio/transcriptions``."""

    language: LanguageCode = None
    stream: Flag = False
    timestamp_granularities: Annotated[
        set[str],
        BeforeValidator(_granularities),
        WithJsonSchema({"type": "array", "items": {"enum": ["word", "segment"]}}),
    ] = Field(default_factory=lambda: {"segment"}, alias="timestamp_granularities[]")


def _form_fields(form: MultipartForm) -> dict[str, Any]:
    """The form's text fields (last value wins) plus the stored file, ready for a form model."""
    fields: dict[str, Any] = {name: values[-1] for name, values in form.fields.items() if values}
    granularities = form.all("timestamp_granularities[]") + form.all("timestamp_granularities")
    fields.pop("timestamp_granularities", None)
    if granularities:
        fields["timestamp_granularities[]"] = granularities
    if form.file_path is not None:
        fields["file"] = form.file_path
    return fields


# -- rendering ------------------------------------------------------------------------------------
def _seconds(ms: int) -> float:
    return round(ms / 1000, 3)


def _segment(index: int, sentence: Sentence) -> dict[str, Any]:
    probs = [max(w.probability, 1e-6) for w in sentence.words] or [1.0]
    encoded = sentence.text.encode()
    return {
        "id": index,
        "seek": 0,
        "start": _seconds(sentence.begin_time),
        "end": _seconds(sentence.end_time),
        "text": " " + sentence.text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": round(float(np.mean([math.log(p) for p in probs])), 4),
        "compression_ratio": round(len(encoded) / max(1, len(zlib.compress(encoded))), 4),
        "no_speech_prob": 0.0,
    }


def verbose_json(result: ClipResult, granularities: set[str], task: str = "transcribe") -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": task,
        "language": LANGUAGE_NAMES.get(result.language or "", result.language or "unknown"),
        "duration": _seconds(result.duration_ms),
        "text": result.text,
        "usage": {"type": "duration", "seconds": result.seconds},
    }
    body["segments"] = [_segment(i, s) for i, s in enumerate(result.sentences)]
    if "word" in granularities:
        body["words"] = [
            {"word": w.text.strip(), "start": _seconds(w.begin_time), "end": _seconds(w.end_time)}
            for s in result.sentences
            for w in s.words
        ]
    return body


def render(result: ClipResult, response_format: str, granularities: set[str], task: str = "transcribe") -> Response:
    if response_format == "json":
        return JSONResponse({"text": result.text, "usage": {"type": "duration", "seconds": result.seconds}})
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(result, granularities, task))
    if response_format == "srt":
        return PlainTextResponse(to_srt(result.sentences))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(result.sentences), media_type="text/vtt")
    return PlainTextResponse(result.text + "\n")


async def _stream(
    services: Services, audio: np.ndarray, options: RecognitionOptions, profile: EngineProfile
) -> AsyncIterator[str]:
    """``transcript.text.delta`` per sentence as its block is recognized, then ``transcript.text.done``."""
    try:
        async for step in stream_steps(services, audio, options, profile, incremental=True):
            if step.piece:
                yield data_event({"type": "transcript.text.delta", "delta": step.piece})
            if step.final:
                yield data_event({"type": "transcript.text.done", "text": step.result.text})
    except VoxgateError as exc:
        yield data_event(openai_error_body(exc.code, exc.message, exc.param))
    except Exception:
        logger.exception("streamed transcription failed")
        yield data_event(openai_error_body("InternalError", "internal error; the request was not completed"))


# -- routes ---------------------------------------------------------------------------------------
@asynccontextmanager
async def _read_form(request: Request, model: type[F], prefix: str) -> AsyncIterator[F]:
    """The multipart form as ``model``; the uploaded file is removed when the block ends."""
    settings = request.app.state.services.settings
    form = await read_multipart(
        request, destination=temp_destination(settings, prefix=prefix), max_file_bytes=settings.sync_max_bytes
    )
    try:
        yield parse(model, _form_fields(form))
    finally:
        if form.file_path is not None:
            form.file_path.unlink(missing_ok=True)


async def transcriptions(request: Request) -> Response:
    services: Services = request.app.state.services
    async with _read_form(request, TranscriptionForm, "transcribe-") as fields:
        profile = resolve_model(services, fields.model)
        options = RecognitionOptions(language=fields.language, context=fields.context)
        services.sync_gate.check()
        audio = await _decode(fields.file, services)
    if fields.stream:
        return StreamingResponse(
            _stream(services, audio, options, profile), media_type="text/event-stream", headers=SSE_HEADERS
        )
    result = await recognize_samples(services, audio, options, profile)
    return render(result, fields.response_format, fields.timestamp_granularities)


async def translations(request: Request) -> Response:
    """English text of speech in any language (Whisper's translate task)."""
    services: Services = request.app.state.services
    async with _read_form(request, TranslationForm, "translate-") as fields:
        profile = resolve_model(services, fields.model)
        bundled = BUNDLED.get(profile.model)
        if bundled is not None and not bundled.multilingual:
            raise InvalidParameter(
                f"model '{fields.model}' is English-only and cannot translate; use whisper-1", param="model"
            )
        options = RecognitionOptions(context=fields.context, task="translate")
        services.sync_gate.check()
        audio = await _decode(fields.file, services)
    spoken = await recognize_samples(services, audio, options, profile)
    result = ClipResult(sentences=spoken.sentences, language="en", duration_ms=spoken.duration_ms)
    return render(result, fields.response_format, {"segment"}, task="translate")


async def _decode(path: Path, services: Services) -> np.ndarray:
    return await asyncio.to_thread(decode_for_sync, path, services.settings)


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "voxgate"}


async def list_models(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    names = [*OPENAI_MODELS, *services.catalog.names()]
    return JSONResponse({"object": "list", "data": [_model_entry(n) for n in names]})


async def get_model(request: Request, model: str) -> JSONResponse:
    services: Services = request.app.state.services
    if model not in OPENAI_MODELS:
        services.catalog.resolve(model)
    return JSONResponse(_model_entry(model))


for _prefix in PREFIXES:
    _auth = [Depends(require_key())]
    router.add_api_route(
        f"{_prefix}/audio/transcriptions",
        transcriptions,
        methods=["POST"],
        dependencies=_auth,
        openapi_extra=form_body(TranscriptionForm),
    )
    router.add_api_route(
        f"{_prefix}/audio/translations",
        translations,
        methods=["POST"],
        dependencies=_auth,
        openapi_extra=form_body(TranslationForm),
    )
    router.add_api_route(f"{_prefix}/models", list_models, methods=["GET"], dependencies=_auth)
    router.add_api_route(f"{_prefix}/models/{{model:path}}", get_model, methods=["GET"], dependencies=_auth)
