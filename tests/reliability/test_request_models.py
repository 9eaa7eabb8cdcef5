"""Property tests of every HTTP request model: any JSON gives either a parsed request or an
``InvalidParameter`` naming a field; a valid request with one value replaced by arbitrary JSON is either
still valid or refused with an error naming that value's field (or one of its parents)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxgate.api.dashscope.generation import GenerationRequest
from voxgate.api.dashscope.transcription import ListTasksQuery, TranscriptionRequest
from voxgate.api.dashscope.vocabulary import parse_customization
from voxgate.api.messages import audio_message
from voxgate.api.openai.chat import ChatRequest
from voxgate.api.openai.transcriptions import TranscriptionForm, TranslationForm
from voxgate.errors import InvalidParameter
from voxgate.jobs.params import parse_job_parameters
from voxgate.params import field_path, parse

AUDIO = "data:audio/wav;base64,UklGRg=="
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _generation(body: Any) -> None:
    request = parse(GenerationRequest, body)
    audio_message(request.input.messages, "input.messages")


def _chat(body: Any) -> None:
    request = parse(ChatRequest, body)
    audio_message(request.messages, "messages")


def _transcription(body: Any) -> None:
    parse(TranscriptionRequest, body).input.urls()


def _customization(body: Any) -> None:
    parse_customization(body)


def _job_parameters(body: Any) -> None:
    parse_job_parameters(body.get("parameters") if isinstance(body, dict) else body)


def _list_query(body: Any) -> None:
    parse(ListTasksQuery, body)


def _transcription_form(body: Any) -> None:
    parse(TranscriptionForm, body)


def _translation_form(body: Any) -> None:
    parse(TranslationForm, body)


# (name, parser, a valid request)
MODELS: list[tuple[str, Callable[[Any], None], dict[str, Any]]] = [
    (
        "generation",
        _generation,
        {
            "model": "qwen3-asr-flash",
            "input": {"messages": [{"role": "user", "content": [{"audio": AUDIO}, {"text": "context"}]}]},
            "parameters": {
                "asr_options": {"language": "en", "enable_itn": False, "enable_lid": True},
                "language_hints": ["en"],
                "vocabulary": {"Xylantrix": 4},
                "format": "wav",
                "sample_rate": 16000,
                "incremental_output": True,
            },
        },
    ),
    (
        "chat",
        _chat,
        {
            "model": "qwen3-asr-flash",
            "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": AUDIO}}]}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "asr_options": {"language": "zh", "enable_itn": True},
        },
    ),
    (
        "transcription",
        _transcription,
        {
            "model": "fun-asr",
            "input": {"file_urls": ["https://example.com/a.wav", "oss://dashscope-instant/o/x/a.wav"]},
            "parameters": {
                "channel_id": [0, 1],
                "language_hints": ["en"],
                "diarization_enabled": True,
                "speaker_count": 2,
                "special_word_filter": {"filter_with_signed": {"word_list": ["darn"]}},
                "enable_words": False,
                "asr_options": {"enable_itn": True},
            },
        },
    ),
    ("job parameters", _job_parameters, {"parameters": {"channel_id": 0, "vocabulary_id": "vocab-a-1"}}),
    (
        "customization",
        _customization,
        {
            "model": "speech-biasing",
            "input": {
                "action": "create_vocabulary",
                "target_model": "fun-asr",
                "prefix": "abc",
                "vocabulary": [{"text": "Xylantrix", "weight": 5, "lang": "en"}],
            },
        },
    ),
    ("list tasks", _list_query, {"page_no": "2", "page_size": "20", "status": "SUCCEEDED"}),
    (
        "openai transcription form",
        _transcription_form,
        {
            "file": "/tmp/upload.wav",
            "model": "whisper-1",
            "language": "en",
            "prompt": "names",
            "response_format": "verbose_json",
            "stream": "false",
            "timestamp_granularities[]": ["word", "segment"],
        },
    ),
    ("openai translation form", _translation_form, {"file": "/tmp/upload.wav", "model": "whisper-1"}),
]
IDS = [name for name, _parser, _valid in MODELS]


def _outcome(parser: Callable[[Any], None], body: Any) -> InvalidParameter | None:
    """None when the body parses; the error otherwise. Anything but InvalidParameter fails the test."""
    try:
        parser(body)
    except InvalidParameter as exc:
        assert exc.status in (400, 413)
        if exc.param:
            assert exc.param in exc.message, (exc.param, exc.message)
        return exc
    return None


def _leaves(value: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a JSON value (containers and leaves)."""
    found = [loc]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _leaves(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _leaves(item, (*loc, index))
    return found


def _replace(body: dict[str, Any], loc: tuple[Any, ...], new: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    target: Any = out
    for part in loc[:-1]:
        target = target[part]
    target[loc[-1]] = new
    return out


@pytest.mark.parametrize(("name", "parser", "valid"), MODELS, ids=IDS)
def test_valid_request_parses(name: str, parser: Callable[[Any], None], valid: dict[str, Any]) -> None:
    assert _outcome(parser, valid) is None


@pytest.mark.parametrize(("name", "parser", "valid"), MODELS, ids=IDS)
@FAST
@given(body=JSON)
def test_any_json_is_parsed_or_refused_naming_a_field(
    name: str, parser: Callable[[Any], None], valid: dict[str, Any], body: Any
) -> None:
    _outcome(parser, body if isinstance(body, dict) else {"model": body})


@pytest.mark.parametrize(("name", "parser", "valid"), MODELS, ids=IDS)
@FAST
@given(data=st.data(), value=JSON)
def test_one_bad_value_is_named(
    name: str, parser: Callable[[Any], None], valid: dict[str, Any], data: st.DataObject, value: Any
) -> None:
    locations = [loc for loc in _leaves(valid) if loc]
    loc = data.draw(st.sampled_from(locations))
    error = _outcome(parser, _replace(valid, loc, value))
    if error is None or error.param is None:
        return
    changed = field_path(loc)
    related = error.param.startswith(changed) or changed.startswith(error.param)
    # fields read together (language from asr_options or parameters; file_urls or file_url) may be named
    # by their common parent
    assert related or error.param.rsplit(".", 1)[0] == changed.rsplit(".", 1)[0], (changed, error.param)
