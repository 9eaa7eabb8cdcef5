"""OpenAI-style endpoints (/v1/audio/transcriptions, /v1/models, /compatible-mode/v1/chat/completions)
driven by the real openai SDK."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningServer, audio_file, wer

GOFORWARD = "go forward ten meters"
SOMETHING = "go somewhere and do something"


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=server.url + "/v1", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def compat(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=server.url + "/compatible-mode/v1", max_retries=0, timeout=120)


def audio_message(data: str, fmt: str | None = "wav") -> list[dict[str, object]]:
    part: dict[str, object] = {"data": data}
    if fmt:
        part["format"] = fmt
    return [
        {"role": "system", "content": "Robot commands."},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": part}]},
    ]


def data_uri(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


# -- /v1/audio/transcriptions ---------------------------------------------------------------------------
def test_transcription_json(client: openai.OpenAI) -> None:
    with audio_file("goforward.wav").open("rb") as handle:
        result = client.audio.transcriptions.create(model="whisper-1", file=handle, temperature=0.2, language="en")
    assert wer(GOFORWARD, result.text) <= 0.25
    assert result.usage is not None and result.usage.type == "duration" and result.usage.seconds == 3


def test_transcription_text(client: openai.OpenAI) -> None:
    with audio_file("something.wav").open("rb") as handle:
        text = client.audio.transcriptions.create(
            model="qwen3-asr-flash", file=handle, response_format="text", language="en"
        )
    assert isinstance(text, str)
    assert wer(SOMETHING, text) <= 0.25


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_transcription_subtitles(client: openai.OpenAI, fmt: str) -> None:
    with audio_file("goforward.wav").open("rb") as handle:
        text = client.audio.transcriptions.create(model="whisper-1", file=handle, response_format=fmt, language="en")
    assert isinstance(text, str)
    sep = "," if fmt == "srt" else r"\."
    cues = re.findall(rf"(\d\d):(\d\d):(\d\d){sep}(\d\d\d) --> (\d\d):(\d\d):(\d\d){sep}(\d\d\d)", text)
    assert cues, text
    start = int(cues[0][2]) * 1000 + int(cues[0][3])
    end = int(cues[-1][6]) * 1000 + int(cues[-1][7])
    assert 0 <= start < end <= 2800
    if fmt == "vtt":
        assert text.startswith("WEBVTT")
    spoken = " ".join(line for line in text.splitlines() if line and "-->" not in line and not line.isdigit())
    assert wer(GOFORWARD, spoken.replace("WEBVTT", "")) <= 0.25


def test_transcription_verbose_json_with_words(client: openai.OpenAI) -> None:
    with audio_file("goforward.wav").open("rb") as handle:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=handle,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            prompt="Distances in meters.",
        )
    assert result.language == "english"
    assert 2.7 <= result.duration <= 2.9
    assert wer(GOFORWARD, result.text) <= 0.25
    assert result.segments and result.segments[0].start < result.segments[-1].end <= 2.8
    words = result.words or []
    assert wer(GOFORWARD, " ".join(w.word for w in words)) <= 0.25
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.start <= w.end for w in words)
    assert all(w.word == w.word.strip() and w.word[-1].isalnum() for w in words)


def test_transcription_stream(client: openai.OpenAI) -> None:
    with audio_file("something.wav").open("rb") as handle:
        stream = client.audio.transcriptions.create(model="whisper-1", file=handle, stream=True, language="en")
        events = list(stream)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    deltas = "".join(e.delta for e in events[:-1])  # type: ignore[union-attr]
    assert deltas == events[-1].text  # type: ignore[union-attr]
    assert wer(SOMETHING, deltas) <= 0.25


def test_transcription_errors(client: openai.OpenAI, server: RunningServer) -> None:
    wav = audio_file("goforward.wav").read_bytes()
    with pytest.raises(openai.NotFoundError) as not_found:
        client.audio.transcriptions.create(model="no-such-model", file=("a.wav", wav))
    assert not_found.value.status_code == 404 and "no-such-model" in not_found.value.message
    with pytest.raises(openai.BadRequestError) as bad_format:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="xml")  # type: ignore[arg-type]
    assert "response_format" in bad_format.value.message
    with pytest.raises(openai.BadRequestError) as not_audio:
        client.audio.transcriptions.create(model="whisper-1", file=("a.txt", b"just some text, no audio" * 10))
    assert "not a recognized audio" in not_audio.value.message
    missing = httpx.post(
        server.url + "/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"other": ("x", b"x")},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong", base_url=server.url + "/v1", max_retries=0).models.list()


def test_models_list(client: openai.OpenAI, compat: openai.OpenAI) -> None:
    names = {m.id for m in client.models.list()}
    assert {"whisper-1", "qwen3-asr-flash", "fun-asr-flash", "paraformer-v2"} <= names
    assert {m.id for m in compat.models.list()} == names
    assert client.models.retrieve("qwen3-asr-flash").id == "qwen3-asr-flash"


# -- /compatible-mode/v1/chat/completions -----------------------------------------------------------------
def test_chat_completion_with_input_audio(compat: openai.OpenAI) -> None:
    completion = compat.chat.completions.create(
        model="qwen3-asr-flash",
        messages=audio_message(data_uri(audio_file("goforward.wav"))),  # type: ignore[arg-type]
        extra_body={"asr_options": {"language": "en", "enable_itn": False}},
    )
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert wer(GOFORWARD, choice.message.content or "") <= 0.25
    annotation = completion.model_dump()["choices"][0]["message"]["annotations"][0]
    assert annotation["type"] == "audio_info" and annotation["language"] == "en"
    assert "emotion" not in annotation
    assert completion.usage is not None and completion.usage.model_extra["seconds"] == 3  # type: ignore[index]


def test_chat_completion_stream(compat: openai.OpenAI) -> None:
    stream = compat.chat.completions.create(
        model="qwen3-omni-flash",
        messages=audio_message(data_uri(audio_file("something.wav")), fmt=None),  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert wer(SOMETHING, text) <= 0.25
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_chat_completion_errors(compat: openai.OpenAI, server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError):
        compat.chat.completions.create(model="nope", messages=audio_message("data:audio/wav;base64,AAAA"))  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as no_audio:
        compat.chat.completions.create(model="qwen3-asr-flash", messages=[{"role": "user", "content": "hi"}])
    assert "no audio" in no_audio.value.message
    text_uri = "data:text/plain;base64," + base64.b64encode(b"hello").decode()
    with pytest.raises(openai.BadRequestError) as not_audio:
        compat.chat.completions.create(model="qwen3-asr-flash", messages=audio_message(text_uri), stream=True)  # type: ignore[arg-type]
    assert "not audio" in not_audio.value.message
    with pytest.raises(openai.BadRequestError) as private_url:
        compat.chat.completions.create(
            model="qwen3-asr-flash",
            messages=audio_message(server.url + "/health"),  # type: ignore[arg-type]
        )
    assert "loopback" in private_url.value.message
    malformed = httpx.post(
        server.url + "/compatible-mode/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400 and "JSON" in malformed.json()["error"]["message"]
