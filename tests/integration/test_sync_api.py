"""Synchronous recognition on the DashScope native endpoint, driven by the real dashscope SDK and httpx."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashscope
import httpx
import pytest
from dashscope import MultiModalConversation
from dashscope.audio.asr import VocabularyService

from tests.conftest import API_KEY, RunningServer, audio_file, wer

GOFORWARD = "go forward ten meters"
SOMETHING = "go somewhere and do something"
GENERATION = "/api/v1/services/aigc/multimodal-generation/generation"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[None]:
    """The legacy SDK pointed at the test server."""
    saved = dashscope.base_http_api_url, dashscope.api_key
    dashscope.base_http_api_url = server.url + "/api/v1"
    dashscope.api_key = API_KEY
    yield
    dashscope.base_http_api_url, dashscope.api_key = saved


def _joined(out: Path, gap_s: float) -> Path:
    """goforward.wav, ``gap_s`` of silence, something.wav (16 kHz mono)."""
    frames = []
    for name in ("goforward.wav", "something.wav"):
        with wave.open(str(audio_file(name))) as src:
            frames.append(src.readframes(src.getnframes()))
    with wave.open(str(out), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(16000)
        dst.writeframes(frames[0] + b"\x00\x00" * int(16000 * gap_s) + frames[1])
    return out


@pytest.fixture(scope="module")
def two_sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _joined(tmp_path_factory.mktemp("sync") / "two.wav", 1.5)


@pytest.fixture(scope="module")
def long_two_sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """81 s: long enough to be recognized (and streamed) in two blocks."""
    return _joined(tmp_path_factory.mktemp("sync") / "long.wav", 75.0)


@pytest.fixture(scope="module")
def long_tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """301 s of a quiet tone as a small mp3: over the 5-minute synchronous limit."""
    out = tmp_path_factory.mktemp("sync") / "long.mp3"
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=301",
         "-ac", "1", "-ar", "8000", "-b:a", "8k", str(out)],
        check=True,
    )  # fmt: skip
    return out


def data_uri(path: Path, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event, checking the DashScope framing line by line."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert lines[0].startswith("id:"), block
        assert lines[1] in ("event:result", "event:error"), block
        data = [line for line in lines if line.startswith("data:")]
        assert len(data) == 1, block
        events.append((lines[1][len("event:") :], json.loads(data[0][len("data:") :])))
    return events


def user_audio(audio: str, system: str | None = None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"text": system}]})
    messages.append({"role": "user", "content": [{"audio": audio}]})
    return messages


# -- qwen3-asr-flash through MultiModalConversation ---------------------------------------------------
def test_qwen3_asr_flash_plain_call(sdk: None) -> None:
    response = MultiModalConversation.call(
        model="qwen3-asr-flash",
        messages=user_audio(data_uri(audio_file("goforward.wav")), system="Directions for a robot."),
        result_format="message",
        asr_options={"language": "en", "enable_itn": False, "enable_lid": True},
    )
    assert response.status_code == 200, response
    choice = response.output.choices[0]
    assert choice.finish_reason == "stop"
    assert wer(GOFORWARD, choice.message.content[0]["text"]) <= 0.25
    annotation = choice.message["annotations"][0]
    assert annotation["type"] == "audio_info"
    assert annotation["language"] == "en"
    assert "emotion" not in annotation
    assert response.usage["seconds"] == 3
    assert response.request_id


def test_qwen3_asr_flash_stream_incremental(sdk: None, two_sentences: Path) -> None:
    chunks = list(
        MultiModalConversation.call(
            model="qwen3-asr-flash",
            messages=user_audio(data_uri(two_sentences)),
            stream=True,
            incremental_output=True,
        )
    )
    assert all(c.status_code == 200 for c in chunks), chunks
    assert len(chunks) >= 2, "one chunk per recognized sentence"
    texts = [c.output.choices[0].message.content[0]["text"] for c in chunks]
    assert wer(f"{GOFORWARD} {SOMETHING}", "".join(texts)) <= 0.25
    assert wer(GOFORWARD, texts[0]) <= 0.25, "the first chunk holds only the first sentence"
    assert [c.output.choices[0].finish_reason for c in chunks] == ["null"] * (len(chunks) - 1) + ["stop"]
    assert chunks[-1].output.choices[0].message["annotations"][0]["language"] == "en"


def test_qwen3_asr_flash_local_file_goes_through_upload(sdk: None, server: RunningServer) -> None:
    local = audio_file("something.wav")
    response = MultiModalConversation.call(
        model="qwen3-asr-flash", messages=user_audio(f"file://{local}"), asr_options={"language": "en"}
    )
    assert response.status_code == 200, response
    assert wer(SOMETHING, response.output.choices[0].message.content[0]["text"]) <= 0.25
    stored = list((server.data_dir / "uploads").rglob("something.wav"))
    assert stored and stored[0].read_bytes() == local.read_bytes()


# -- the input_audio family (fun-asr-flash, qwen-audio-*-asr-flash) -----------------------------------
def test_input_audio_sse_cumulative_text(server: RunningServer, long_two_sentences: Path) -> None:
    body = {
        "model": "qwen-audio-3.1-asr-flash",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": data_uri(long_two_sentences)}}],
                }
            ]
        },
        "parameters": {"format": "wav", "sample_rate": "16000"},
    }
    headers = {**AUTH, "X-DashScope-SSE": "enable"}
    response = httpx.post(server.url + GENERATION, json=body, headers=headers, timeout=120)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert len(events) >= 2 and all(name == "result" for name, _ in events)
    texts = [data["output"]["text"] for _, data in events]
    for earlier, later in itertools.pairwise(texts):
        assert later.startswith(earlier), "output.text is cumulative"
    assert wer(f"{GOFORWARD} {SOMETHING}", texts[-1]) <= 0.25
    assert events[-1][1]["output"]["finished"] is True
    assert events[0][1]["output"]["finished"] is False
    first, last = events[0][1]["output"]["sentence"], events[-1][1]["output"]["sentence"]
    assert first["end_time"] <= 3000 and last["begin_time"] >= 77000, "times count from the start of the audio"
    assert events[-1][1]["usage"]["duration"] == 81
    assert all(data["request_id"] == events[0][1]["request_id"] for _, data in events)


def test_input_audio_raw_pcm_plain_with_vocabulary(server: RunningServer, sdk: None) -> None:
    vocabulary_id = VocabularyService().create_vocabulary(
        target_model="fun-asr-flash", prefix="sync", vocabulary=[{"text": "meters", "weight": 4}]
    )
    with wave.open(str(audio_file("goforward.wav"))) as src:
        pcm = src.readframes(src.getnframes())
    body = {
        "model": "fun-asr-flash-2026-06-15",
        "input": {
            "messages": [
                {"role": "user", "content": [{"type": "input_text", "text": "Robot commands."}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_audio",
                            "input_audio": {"data": "data:audio/pcm;base64," + base64.b64encode(pcm).decode()},
                        }
                    ],
                },
            ]
        },
        "parameters": {
            "format": "pcm",
            "sample_rate": 16000,
            "language_hints": ["en"],
            "vocabulary_id": vocabulary_id,
        },
    }
    response = httpx.post(server.url + GENERATION, json=body, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    assert "code" not in data
    assert wer(GOFORWARD, data["output"]["text"]) <= 0.25
    sentence = data["output"]["sentences"][0]
    assert 0 <= sentence["begin_time"] < sentence["end_time"] <= 2800
    assert data["usage"]["seconds"] == 3


# -- errors -------------------------------------------------------------------------------------------
def _post(server: RunningServer, content: bytes | dict[str, Any], sse: bool = False) -> httpx.Response:
    headers = {**AUTH, "Content-Type": "application/json"}
    if sse:
        headers["X-DashScope-SSE"] = "enable"
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    return httpx.post(server.url + GENERATION, content=raw, headers=headers, timeout=60)


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["request_id"], body
    return str(body["message"])


def _sse_error(response: httpx.Response, code: str) -> str:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["code"] == code
    return str(events[0][1]["message"])


def _body(audio: str, model: str = "qwen3-asr-flash") -> dict[str, Any]:
    return {"model": model, "input": {"messages": user_audio(audio)}}


def test_malformed_json(server: RunningServer) -> None:
    assert "JSON" in _error(_post(server, b'{"model": "qwen3-asr-flash", '), 400, "InvalidParameter")
    assert "JSON" in _sse_error(_post(server, b"not json", sse=True), "InvalidParameter")


def test_silence_gives_empty_text(server: RunningServer, tmp_path: Path) -> None:
    silence = tmp_path / "silence.wav"
    with wave.open(str(silence), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(16000)
        dst.writeframes(b"\x00\x00" * 32000)
    response = _post(server, _body(data_uri(silence), model="fun-asr-flash"))
    assert response.status_code == 200, response.text
    assert response.json()["output"]["text"] == ""
    events = sse_events(_post(server, _body(data_uri(silence)), sse=True).text)
    assert len(events) == 1 and events[0][0] == "result"
    choice = events[0][1]["output"]["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == [{"text": ""}]


def test_missing_audio(server: RunningServer) -> None:
    body = {"model": "qwen3-asr-flash", "input": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}}
    assert "audio" in _error(_post(server, body), 400, "InvalidParameter")
    assert "input.messages" in _error(_post(server, {"model": "qwen3-asr-flash", "input": {}}), 400, "InvalidParameter")
    assert "model" in _error(_post(server, {"input": {}}), 400, "InvalidParameter")


def test_non_audio_data_uri(server: RunningServer) -> None:
    text_uri = "data:text/plain;base64," + base64.b64encode(b"hello world").decode()
    assert "not audio" in _error(_post(server, _body(text_uri)), 400, "InvalidParameter")
    fake_wav = "data:audio/wav;base64," + base64.b64encode(b"this is not a wav file at all" * 20).decode()
    assert "not a recognized audio" in _error(_post(server, _body(fake_wav)), 400, "InvalidParameter")
    assert "base64" in _sse_error(_post(server, _body("data:audio/wav;base64,@@@"), sse=True), "InvalidParameter")


def test_audio_over_five_minutes_is_refused(server: RunningServer, sdk: None, long_tone: Path) -> None:
    body = _body(data_uri(long_tone, "audio/mpeg"), model="fun-asr-flash")
    message = _error(_post(server, body), 400, "InvalidParameter")
    assert "300 s" in message and "file transcription" in message
    chunks = list(
        MultiModalConversation.call(
            model="qwen3-asr-flash", messages=user_audio(data_uri(long_tone, "audio/mpeg")), stream=True
        )
    )
    assert len(chunks) == 1 and chunks[0].status_code == 400 and chunks[0].code == "InvalidParameter"
    assert "300 s" in chunks[0].message


def test_oversized_data_uri(server: RunningServer) -> None:
    big = "data:audio/wav;base64," + "A" * (10 * 1024 * 1024)
    assert "10 MB" in _error(_post(server, _body(big)), 413, "InvalidParameter")


def test_unknown_model_and_bad_key(server: RunningServer, sdk: None) -> None:
    uri = data_uri(audio_file("goforward.wav"))
    assert "no-such-model" in _error(_post(server, _body(uri, model="no-such-model")), 404, "Model.NotExist")
    assert _sse_error(_post(server, _body(uri, model="fun-asr"), sse=True), "Model.NotExist")
    response = MultiModalConversation.call(model="no-such-model", messages=user_audio(uri))
    assert response.status_code == 404 and response.code == "Model.NotExist"
    bad_key = httpx.post(server.url + GENERATION, json=_body(uri), headers={"Authorization": "Bearer wrong"})
    assert bad_key.status_code == 401 and bad_key.json()["code"] == "InvalidApiKey"


def test_bad_parameters(server: RunningServer) -> None:
    uri = "data:audio/wav;base64,AAAA"
    body = _body(uri) | {"parameters": {"asr_options": {"language": "klingon"}}}
    assert "language" in _error(_post(server, body), 400, "InvalidParameter")
    body = _body(uri, model="fun-asr-flash") | {"parameters": {"sample_rate": "fast"}}
    assert "sample_rate" in _error(_post(server, body), 400, "InvalidParameter")
    body = _body(uri, model="fun-asr-flash") | {"parameters": {"vocabulary_id": "vocab-missing-123"}}
    assert "vocabulary_id" in _error(_post(server, body), 400, "InvalidParameter")
    body = _body("ftp://example.com/a.wav")
    assert "unsupported audio reference" in _error(_post(server, body), 400, "InvalidParameter")


# -- uploads ------------------------------------------------------------------------------------------
def _policy(server: RunningServer) -> dict[str, Any]:
    response = httpx.get(
        server.url + "/api/v1/uploads", params={"action": "getPolicy", "model": "qwen3-asr-flash"}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    assert data["upload_host"] == server.url + "/api/v1/uploads"
    return data


def _upload(server: RunningServer, policy: dict[str, Any], key: str, signature: str | None = None) -> httpx.Response:
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": signature or policy["signature"],
        "policy": policy["policy"],
        "key": key,
        "x-oss-object-acl": "private",
        "x-oss-forbid-overwrite": "true",
        "success_action_status": "200",
    }
    return httpx.post(policy["upload_host"], data=form, files={"file": ("a.wav", b"RIFF0000WAVE")}, timeout=30)


def test_upload_policy_is_enforced(server: RunningServer) -> None:
    policy = _policy(server)
    assert _upload(server, policy, policy["upload_dir"] + "/a.wav").status_code == 200
    assert _upload(server, policy, policy["upload_dir"] + "/a.wav").status_code == 409
    assert _upload(server, policy, policy["upload_dir"] + "/b.wav", signature="AAAA").status_code == 403
    assert _upload(server, policy, "dashscope-instant/other/a.wav").status_code == 403
    traversal = _upload(server, policy, policy["upload_dir"] + "/../../../escape.wav")
    assert traversal.status_code == 400 and traversal.json()["code"] == "InvalidParameter"
    assert not list(server.data_dir.rglob("escape.wav"))
    missing = _post(server, _body("oss://dashscope-instant/nothing/here.wav"))
    assert "does not exist" in _error(missing, 400, "InvalidParameter")
    unsigned = httpx.post(policy["upload_host"], files={"file": ("a.wav", b"RIFF")})
    assert unsigned.status_code == 403 and unsigned.json()["code"] == "AccessDenied"
    no_key = httpx.get(server.url + "/api/v1/uploads", params={"action": "getPolicy"})
    assert no_key.status_code == 401
