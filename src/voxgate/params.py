"""Request parameters, typed once: shared field rules, the one body reader and errors that name the field.

Every HTTP endpoint and WebSocket message describes its request as a :class:`RequestModel` built from the
field types below, validates it with :func:`parse` (HTTP bodies: ``voxgate.api.body.read_request``) and gets
:class:`InvalidParameter` naming the offending field, e.g. ``parameters.asr_options.enable_itn``. Stored job
parameters are read back with the same models, so this module sits beside ``errors`` (no web imports).

The rules, one each for the whole service:

* **null is absent**: a field sent as JSON ``null`` takes its default.
* :data:`Flag`: JSON ``true``/``false``, or the strings ``"true"``/``"false"`` (any case; form fields and
  some SDKs send strings). Nothing else: ``1``, ``"yes"``, ``"on"`` are refused.
* :data:`LanguageCode`: a code the engine knows (``en``, ``zh``, ``yue``, ...); a region or script suffix
  is dropped (``en-US`` -> ``en``, ``zh_CN`` -> ``zh``); ``""``, ``"auto"`` and ``"multilingual"`` mean
  automatic detection (``None``).
* :data:`LanguageHints`: an array of :data:`LanguageCode` (a bare string is refused); entries meaning
  "auto" are dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from faster_whisper.tokenizer import _LANGUAGE_CODES
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from voxgate.engine.language import to_whisper_code
from voxgate.engine.types import Hotword
from voxgate.errors import InvalidParameter

M = TypeVar("M", bound=BaseModel)
_WHISPER_LANGUAGES = frozenset(_LANGUAGE_CODES)
_AUTO = frozenset({"", "auto", "multilingual"})


class RequestModel(BaseModel):
    """Base of every request model: unknown fields are ignored (as the cloud service does), null is absent."""

    model_config = ConfigDict(extra="ignore", frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# -- field rules ----------------------------------------------------------------------------------
def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise PydanticCustomError("flag", "must be true or false")


def language_code(value: Any) -> str | None:
    """The engine's code for ``value`` (None: detect automatically); ``ValueError``-style pydantic error."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _AUTO):
        return None
    if not isinstance(value, str):
        raise PydanticCustomError("language", "must be a language code such as 'en' or 'zh'")
    code = to_whisper_code(value.strip().lower().replace("_", "-").split("-")[0])
    if code not in _WHISPER_LANGUAGES:
        raise PydanticCustomError("language", "unsupported language '{value}'", {"value": value[:40]})
    return code


def _language_hints(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise PydanticCustomError("language_hints", "must be an array of language codes such as ['en']")
    return [code for item in value if (code := language_code(item)) is not None]


def _sample_rate(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise PydanticCustomError("sample_rate", "must be a number of samples per second")
    try:
        rate = int(value)
    except ValueError:
        raise PydanticCustomError("sample_rate", "must be a number of samples per second") from None
    if not 1000 <= rate <= 384_000 or (isinstance(value, float) and value != rate):
        raise PydanticCustomError("sample_rate", "{value} is out of range (1000-384000)", {"value": value})
    return rate


def _audio_format(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 16:
        raise PydanticCustomError("audio_format", "must be an audio format name such as 'wav' or 'mp3'")
    return value.lower()


def _hotwords(value: Any) -> list[Hotword]:
    """Inline hotwords: ``{"term": weight, ...}`` or ``[{"text": ..., "weight": ...}, ...]``."""
    items: list[tuple[Any, Any]]
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
        items = [(v.get("text"), v.get("weight", 4)) for v in value]
    else:
        raise PydanticCustomError("hotwords", "must map terms to weights")
    out = []
    for text, weight in items:
        if not isinstance(text, str) or not text.strip():
            raise PydanticCustomError("hotwords", "every term must be a non-empty string")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 5:
            raise PydanticCustomError("hotwords", "the weight of '{text}' must be an integer 1-5", {"text": text})
        out.append(Hotword(text=text.strip(), weight=weight))
    return out


def _non_empty(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise PydanticCustomError("non_empty", "must be a non-empty string")
        return value.strip()
    return value


_BOOL_SCHEMA = {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]}
_LANGUAGE_SCHEMA = {"type": "string", "description": "language code, e.g. en, zh, en-US; auto for detection"}

Flag = Annotated[bool, BeforeValidator(_flag), WithJsonSchema(_BOOL_SCHEMA)]
"""A boolean: JSON true/false or the strings "true"/"false" (any case)."""

LanguageCode = Annotated[str | None, BeforeValidator(language_code), WithJsonSchema(_LANGUAGE_SCHEMA)]
"""A language code normalised to the engine's (``en-US`` -> ``en``); None for automatic detection."""

LanguageHints = Annotated[
    list[str], BeforeValidator(_language_hints), WithJsonSchema({"type": "array", "items": _LANGUAGE_SCHEMA})
]
"""An array of language codes, each normalised as :data:`LanguageCode`; "auto" entries dropped."""

NonEmptyStr = Annotated[str, BeforeValidator(_non_empty), Field(min_length=1)]
"""A string with something besides white space (stripped)."""

SampleRate = Annotated[
    int | None,
    BeforeValidator(_sample_rate),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1000, "maximum": 384000}, {"type": "string"}]}),
]
"""Samples per second, an integer or a numeric string, 1000-384000."""

AudioFormat = Annotated[str | None, BeforeValidator(_audio_format), WithJsonSchema({"type": "string", "maxLength": 16})]
"""An audio format name (``wav``, ``mp3``, ``pcm``...), lower-cased."""

InstantHotwords = Annotated[
    list[Hotword],
    BeforeValidator(_hotwords),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 5}},
                {"type": "array", "items": {"type": "object"}},
            ]
        }
    ),
]
"""Inline hotwords, ``{"term": weight}`` or ``[{"text", "weight"}]``, weights 1-5."""


# -- errors ---------------------------------------------------------------------------------------
def field_path(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """``("input", "file_urls", 1)`` -> ``input.file_urls[1]``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part:
            out += f".{part}" if out else str(part)
    return out


def invalid_parameter(exc: ValidationError, prefix: str = "") -> InvalidParameter:
    """The first pydantic error as :class:`InvalidParameter` naming its field."""
    first = exc.errors(include_url=False)[0]
    path = field_path(first.get("loc", ()), prefix)
    message = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        message = "is required"
    elif first.get("type") == "model_type" or first.get("type") == "dict_type":
        message = "must be an object"
    elif first.get("type") == "list_type":
        message = "must be an array"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return InvalidParameter(f"{path}: {message}" if path else message, param=path or None)


def parse(model: type[M], data: Any, *, prefix: str = "") -> M:
    """``data`` validated as ``model``; errors are :class:`InvalidParameter` naming the field under ``prefix``."""
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_parameter(exc, prefix) from None
