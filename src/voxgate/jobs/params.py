"""DashScope file-transcription ``parameters`` mapped to :class:`RecognitionOptions`, with type checks.

Every bad value raises :class:`InvalidParameter` naming the field (``parameters.<name>``).
Unknown parameters are ignored, as the cloud service does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from voxgate.engine.types import RecognitionOptions
from voxgate.errors import InvalidParameter

MAX_CHANNELS = 16
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


@dataclass(slots=True)
class JobParameters:
    """What a file job needs besides its URLs: engine options, the vocabulary to load, output switches."""

    options: RecognitionOptions
    vocabulary_id: str | None
    enable_words: bool


def _bool(params: dict[str, Any], name: str, default: bool, where: str = "parameters") -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidParameter(f"{where}.{name} must be a boolean", param=f"{where}.{name}")
    return value


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"{field} must be an integer", param=field)
    if not low <= value <= high:
        raise InvalidParameter(f"{field} must be between {low} and {high}", param=field)
    return value


def _language(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _LANGUAGE.match(value):
        raise InvalidParameter(f"{field} must be a language code such as 'en' or 'zh'", param=field)
    return value.split("-")[0].split("_")[0].lower()


def _channels(value: Any) -> list[int]:
    field = "parameters.channel_id"
    if value is None:
        return [0]
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, list) or not items:
        raise InvalidParameter(f"{field} must be a non-empty array of integers", param=field)
    channels = [_int(v, field, 0, MAX_CHANNELS - 1) for v in items]
    return list(dict.fromkeys(channels))


def _word_filter(value: Any) -> list[str] | None:
    """``special_word_filter``: a JSON string or object (``filter_with_signed``/``filter_with_empty`` word
    lists), a list of words, or a boolean switching the default filter on/off."""
    field = "parameters.special_word_filter"
    if value is None or value is False:
        return None
    if value is True:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text[0] in "{[":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidParameter(f"{field} is not valid JSON", param=field) from exc
        else:
            return [w.strip() for w in text.split(",") if w.strip()]
    if isinstance(value, list):
        if not all(isinstance(w, str) for w in value):
            raise InvalidParameter(f"{field} must list strings", param=field)
        return [w for w in value if w]
    if isinstance(value, dict):
        words: list[str] = []
        for key in ("filter_with_signed", "filter_with_empty"):
            group = value.get(key)
            if group is None:
                continue
            listed = group.get("word_list") if isinstance(group, dict) else None
            if not isinstance(listed, list) or not all(isinstance(w, str) for w in listed):
                raise InvalidParameter(f"{field}.{key}.word_list must be an array of strings", param=field)
            words.extend(listed)
        return words
    raise InvalidParameter(f"{field} must be a string, object, array or boolean", param=field)


def parse_job_parameters(parameters: Any, input_: dict[str, Any] | None = None) -> JobParameters:
    """Validate the request's ``parameters`` (and ``input.vocabulary_id``) into :class:`JobParameters`."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise InvalidParameter("parameters must be an object", param="parameters")
    input_ = input_ or {}
    asr = parameters.get("asr_options")
    if asr is not None and not isinstance(asr, dict):
        raise InvalidParameter("parameters.asr_options must be an object", param="parameters.asr_options")
    asr = asr or {}

    vocabulary_id = parameters.get("vocabulary_id")
    field = "parameters.vocabulary_id"
    if vocabulary_id is None:
        vocabulary_id = input_.get("vocabulary_id")
        field = "input.vocabulary_id"
    if vocabulary_id is not None and (not isinstance(vocabulary_id, str) or not vocabulary_id.strip()):
        raise InvalidParameter(f"{field} must be a non-empty string", param=field)

    hints_raw = parameters.get("language_hints")
    hints: list[str] = []
    if hints_raw is not None:
        if not isinstance(hints_raw, list):
            raise InvalidParameter(
                "parameters.language_hints must be an array of strings", param="parameters.language_hints"
            )
        hints = [_language(h, "parameters.language_hints") for h in hints_raw]

    language: str | None = None
    for where, source in (("parameters", parameters), ("parameters.asr_options", asr)):
        if source.get("language") is not None:
            language = _language(source["language"], f"{where}.language")

    itn = _bool(parameters, "enable_itn", False)
    itn = _bool(asr, "enable_itn", itn, "parameters.asr_options")
    itn = _bool(parameters, "inverse_text_normalization_enabled", itn)

    speaker_count = parameters.get("speaker_count")
    if speaker_count is not None:
        speaker_count = _int(speaker_count, "parameters.speaker_count", 1, 100)
    diarization = _bool(parameters, "diarization_enabled", False)
    _bool(parameters, "timestamp_alignment_enabled", False)
    _bool(parameters, "audio_event_detection_enabled", False)

    options = RecognitionOptions(
        language=language,
        language_hints=hints,
        channels=_channels(parameters.get("channel_id")),
        itn=itn,
        disfluency_removal=_bool(parameters, "disfluency_removal_enabled", False),
        punctuation=_bool(parameters, "punctuation_prediction_enabled", True),
        special_word_filter=_word_filter(parameters.get("special_word_filter")),
        diarization=diarization,
        speaker_count=speaker_count if diarization else None,
    )
    return JobParameters(
        options=options,
        vocabulary_id=vocabulary_id.strip() if isinstance(vocabulary_id, str) else None,
        enable_words=_bool(parameters, "enable_words", True),
    )
