"""DashScope file-transcription ``parameters`` as a typed model, mapped to :class:`RecognitionOptions`.

Every bad value raises :class:`InvalidParameter` naming the field (``parameters.<name>``); unknown
parameters are ignored, as the cloud service does. The same model reads the parameters stored with a job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from voxgate.engine.types import RecognitionOptions
from voxgate.params import Flag, LanguageCode, LanguageHints, NonEmptyStr, RequestModel, parse

MAX_CHANNELS = 16


@dataclass(slots=True)
class JobParameters:
    """What a file job needs besides its URLs: engine options, the vocabulary to load, output switches."""

    options: RecognitionOptions
    vocabulary_id: str | None
    enable_words: bool


def _channels(value: Any) -> list[int]:
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, list) or not items:
        raise PydanticCustomError("channels", "must be a non-empty array of integers")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < MAX_CHANNELS:
            raise PydanticCustomError("channels", "channels are integers from 0 to {top}", {"top": MAX_CHANNELS - 1})
    return list(dict.fromkeys(items))


def _word_list(group: Any, key: str) -> list[str]:
    listed = group.get("word_list") if isinstance(group, dict) else None
    if not isinstance(listed, list) or not all(isinstance(w, str) for w in listed):
        raise PydanticCustomError("word_filter", "{key}.word_list must be an array of strings", {"key": key})
    return listed


def _word_filter(value: Any) -> list[str] | None:
    """``special_word_filter``: a JSON string or object (``filter_with_signed``/``filter_with_empty`` word
    lists), a comma-separated string, a list of words, or a boolean switching the default filter on/off."""
    if value is None or value is False:
        return None
    if value is True:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text[0] not in "{[":
            return [w.strip() for w in text.split(",") if w.strip()]
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise PydanticCustomError("word_filter", "is not valid JSON") from None
    if isinstance(value, list):
        if not all(isinstance(w, str) for w in value):
            raise PydanticCustomError("word_filter", "must list strings")
        return [w for w in value if w]
    if isinstance(value, dict):
        return [
            w
            for key in ("filter_with_signed", "filter_with_empty")
            if key in value
            for w in _word_list(value[key], key)
        ]
    raise PydanticCustomError("word_filter", "must be a string, object, array or boolean")


Channels = Annotated[
    list[int],
    BeforeValidator(_channels),
    WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 15}}]}
    ),
]
WordFilter = Annotated[
    list[str] | None,
    BeforeValidator(_word_filter),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "array"}, {"type": "boolean"}]}),
]


class AsrOptions(RequestModel):
    language: LanguageCode = None
    enable_itn: Flag | None = None


class TranscriptionParameters(RequestModel):
    """``parameters`` of ``POST /api/v1/services/audio/asr/transcription`` (both model families)."""

    vocabulary_id: NonEmptyStr | None = None
    language: LanguageCode = None
    language_hints: LanguageHints = Field(default_factory=list)
    asr_options: AsrOptions = Field(default_factory=AsrOptions)
    channel_id: Channels = Field(default_factory=lambda: [0])
    enable_itn: Flag | None = None
    inverse_text_normalization_enabled: Flag | None = None
    disfluency_removal_enabled: Flag = False
    punctuation_prediction_enabled: Flag = True
    special_word_filter: WordFilter = None
    diarization_enabled: Flag = False
    speaker_count: Annotated[int, Field(strict=True, ge=1, le=100)] | None = None
    timestamp_alignment_enabled: Flag = False
    audio_event_detection_enabled: Flag = False
    enable_words: Flag = True

    def to_job(self, input_vocabulary_id: str | None = None) -> JobParameters:
        """The engine options (``input.vocabulary_id`` is the older place of ``vocabulary_id``)."""
        itn = False
        for value in (self.enable_itn, self.asr_options.enable_itn, self.inverse_text_normalization_enabled):
            if value is not None:
                itn = value
        options = RecognitionOptions(
            language=self.asr_options.language or self.language,
            language_hints=self.language_hints,
            channels=self.channel_id,
            itn=itn,
            disfluency_removal=self.disfluency_removal_enabled,
            special_word_filter=self.special_word_filter,
            diarization=self.diarization_enabled,
            speaker_count=self.speaker_count if self.diarization_enabled else None,
        )
        return JobParameters(options, self.vocabulary_id or input_vocabulary_id, self.enable_words)


def parse_job_parameters(parameters: Any, input_vocabulary_id: str | None = None) -> JobParameters:
    """Validate a request's (or a stored job's) ``parameters`` into :class:`JobParameters`."""
    return parse(TranscriptionParameters, parameters, prefix="parameters").to_job(input_vocabulary_id)
