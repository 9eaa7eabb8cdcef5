"""Chat-style ``messages`` carrying one audio reference and optional context text.

Shared by the DashScope generation endpoint (``input.messages``) and the OpenAI-compatible chat endpoint
(``messages``). Two part shapes name audio: ``{"audio": <ref>}`` (qwen3-asr-flash) and
``{"type": "input_audio", "input_audio": {"data": <ref>, "format": ...}}``; text parts give context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from voxgate.errors import InvalidParameter
from voxgate.params import AudioFormat, RequestModel


class InputAudio(RequestModel):
    data: str | None = None
    url: str | None = None
    format: AudioFormat = None


def _input_audio(value: Any) -> Any:
    return {"data": value} if isinstance(value, str) else value


def _content(value: Any) -> Any:
    return [{"text": value}] if isinstance(value, str) else value


class ContentPart(RequestModel):
    type: str | None = None
    text: str | None = None
    audio: str | None = None
    input_audio: Annotated[InputAudio, BeforeValidator(_input_audio)] | None = None

    def audio_ref(self, path: str) -> tuple[str | None, str, str | None] | None:
        """(reference, its field path, format) when this part names audio, else None."""
        if self.audio is not None and self.type in (None, "audio"):
            return self.audio, f"{path}.audio", None
        if self.type == "input_audio" or self.input_audio is not None:
            if self.input_audio is None:
                raise InvalidParameter(f"{path}.input_audio must be an object with 'data'", param=path)
            inner = self.input_audio
            return inner.data if inner.data is not None else inner.url, f"{path}.input_audio.data", inner.format
        return None


class Message(RequestModel):
    role: str | None = None
    content: Annotated[list[ContentPart], BeforeValidator(_content)] = Field(default_factory=list)


Messages = Annotated[list[Message], Field(min_length=1)]


@dataclass(slots=True)
class AudioMessage:
    """The one audio reference of a request, where it was, and the context text around it."""

    audio: str
    param: str
    audio_format: str | None
    context: str | None


def audio_message(messages: list[Message], where: str) -> AudioMessage:
    """The single audio reference and the context texts of ``messages`` (field path ``where``)."""
    audios: list[tuple[str | None, str, str | None]] = []
    texts: list[str] = []
    for i, message in enumerate(messages):
        for j, part in enumerate(message.content):
            found = part.audio_ref(f"{where}[{i}].content[{j}]")
            if found is not None:
                audios.append(found)
            elif part.text and part.text.strip():
                texts.append(part.text)
    if not audios:
        raise InvalidParameter(
            f'no audio in {where}: add a user content part {{"audio": <url or data URI>}} or '
            '{"type": "input_audio", "input_audio": {"data": ...}}',
            param=where,
        )
    if len(audios) > 1:
        raise InvalidParameter("only one audio per request is supported", param=audios[1][1])
    audio, param, audio_format = audios[0]
    if not isinstance(audio, str) or not audio.strip():
        raise InvalidParameter(f"{param} must be a URL or a data URI", param=param)
    return AudioMessage(audio, param, audio_format, "\n".join(texts) or None)
