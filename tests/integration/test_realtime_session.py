"""Realtime session protocol (/api-ws/v1/realtime) against a real server, real engine and real clients."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
from typing import Any

import dashscope
import pytest
import websocket
from dashscope.audio.qwen_omni import MultiModality, OmniRealtimeCallback, OmniRealtimeConversation
from dashscope.audio.qwen_omni.omni_realtime import TranscriptionParams

from tests.conftest import API_KEY, RunningServer, audio_file
from tests.integration.test_realtime_runtask import GO, SOMETHING, pcm_of, speech_pcm, wer

MODEL = "qwen3-asr-flash-realtime"


class Recorder(OmniRealtimeCallback):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_event(self, response: dict[str, Any]) -> None:
        self.events.append(response)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]


def realtime_url(server: RunningServer) -> str:
    return server.ws_url + "/api-ws/v1/realtime"


def send_paced(conversation: OmniRealtimeConversation, pcm: bytes, pause: float = 0.05) -> None:
    for i in range(0, len(pcm), 3200):
        conversation.append_audio(base64.b64encode(pcm[i : i + 3200]).decode())
        time.sleep(pause)


def test_legacy_sdk_vad_mode(server: RunningServer) -> None:
    dashscope.api_key = API_KEY
    recorder = Recorder()
    conversation = OmniRealtimeConversation(model=MODEL, callback=recorder, url=realtime_url(server))
    conversation.connect()
    try:
        assert conversation.get_session_id()
        conversation.update_session(
            output_modalities=[MultiModality.TEXT],
            enable_input_audio_transcription=True,
            transcription_params=TranscriptionParams(language="en", sample_rate=16000, input_audio_format="pcm"),
            turn_detection_silence_duration_ms=500,
        )
        send_paced(conversation, speech_pcm())
        conversation.end_session()
    finally:
        conversation.close()
    kinds = [e["type"] for e in recorder.events]
    assert kinds[0] == "session.created" and kinds[-1] == "session.finished"
    assert recorder.of("session.updated")[0]["session"]["turn_detection"]["silence_duration_ms"] == 500
    completed = recorder.of("conversation.item.input_audio_transcription.completed")
    assert [wer(GO, completed[0]["transcript"]), wer(SOMETHING, completed[1]["transcript"])] <= [0.25, 0.25], completed
    assert len(completed) == 2
    assert all("emotion" not in e and e["language"] == "en" for e in completed)
    assert len(recorder.of("input_audio_buffer.speech_started")) == 2
    # per utterance: speech_started < speech_stopped < committed < item.created < completed, same item id
    item = completed[0]["item_id"]
    order = [e["type"] for e in recorder.events if e.get("item_id") == item or e.get("item", {}).get("id") == item]
    assert order[0] == "input_audio_buffer.speech_started" and order[-1].endswith("transcription.completed")
    assert order.index("input_audio_buffer.speech_stopped") < order.index("input_audio_buffer.committed")
    assert order.index("input_audio_buffer.committed") < order.index("conversation.item.created")
    interims = [e for e in recorder.of("conversation.item.input_audio_transcription.text") if e["item_id"] == item]
    assert interims, "no interim text"
    stable = [e["text"] for e in interims]
    assert all(b.startswith(a) for a, b in itertools.pairwise(stable)), stable  # never taken back


def test_legacy_sdk_manual_mode(server: RunningServer) -> None:
    dashscope.api_key = API_KEY
    recorder = Recorder()
    conversation = OmniRealtimeConversation(model=MODEL, callback=recorder, url=realtime_url(server))
    conversation.connect()
    try:
        conversation.update_session(output_modalities=[MultiModality.TEXT], enable_turn_detection=False)
        send_paced(conversation, pcm_of("goforward.wav"), pause=0.01)
        conversation.commit()
        send_paced(conversation, pcm_of("something.wav"), pause=0.01)
        conversation.end_session()  # the uncommitted speech is recognized before session.finished
    finally:
        conversation.close()
    assert recorder.of("session.updated")[0]["session"]["turn_detection"] is None
    assert not recorder.of("input_audio_buffer.speech_started")
    committed = recorder.of("input_audio_buffer.committed")
    completed = recorder.of("conversation.item.input_audio_transcription.completed")
    assert len(committed) == 2 and len(completed) == 2, [e["type"] for e in recorder.events]
    assert wer(GO, completed[0]["transcript"]) <= 0.25 and wer(SOMETHING, completed[1]["transcript"]) <= 0.25
    assert recorder.events[-1]["type"] == "session.finished"


def connect(server: RunningServer, model: str = MODEL, key: str = API_KEY) -> websocket.WebSocket:
    return websocket.create_connection(
        f"{realtime_url(server)}?model={model}",
        header=[f"Authorization: Bearer {key}", "OpenAI-Beta: realtime=v1"],
        timeout=60,
    )


def recv_until(ws: websocket.WebSocket, kind: str) -> list[dict[str, Any]]:
    out = []
    while True:
        event = json.loads(ws.recv())
        out.append(event)
        if event["type"] == kind:
            return out


def test_raw_websocket_session_8khz(server: RunningServer) -> None:
    pcm8 = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(audio_file("something.wav")), "-ar", "8000", "-f", "s16le", "-"],
        check=True,
        capture_output=True,
    ).stdout + bytes(16000)
    ws = connect(server)
    try:
        created = json.loads(ws.recv())
        assert created["type"] == "session.created" and created["session"]["id"]
        ws.send(
            json.dumps(
                {
                    "event_id": "event_1",
                    "type": "session.update",
                    "session": {
                        "modalities": ["text"],
                        "input_audio_format": "pcm",
                        "sample_rate": 8000,
                        "input_audio_transcription": {"language": "en", "corpus": {"text": "navigation commands"}},
                        "turn_detection": {"type": "server_vad", "threshold": 0.0, "silence_duration_ms": 400},
                    },
                }
            )
        )
        updated = json.loads(ws.recv())
        assert updated["type"] == "session.updated" and updated["session"]["sample_rate"] == 8000
        for i in range(0, len(pcm8), 1600):
            ws.send(
                json.dumps(
                    {
                        "event_id": f"event_a{i}",
                        "type": "input_audio_buffer.append",
                        "audio": base64.b64encode(pcm8[i : i + 1600]).decode(),
                    }
                )
            )
        ws.send(json.dumps({"event_id": "event_f", "type": "session.finish"}))
        events = recv_until(ws, "session.finished")
        done = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
        assert len(done) == 1 and wer(SOMETHING, done[0]["transcript"]) <= 0.25, done
    finally:
        ws.close()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{oops", "invalid_json"),
        (json.dumps({"type": "input_audio_buffer.dance"}), "invalid_event_type"),
        (json.dumps({"type": "input_audio_buffer.commit"}), "invalid_request"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "***"}), "invalid_value"),
        (
            json.dumps({"type": "session.update", "session": {"turn_detection": {"silence_duration_ms": 50}}}),
            "invalid_value",
        ),
        (json.dumps({"type": "session.update", "session": {"input_audio_format": "flac"}}), "invalid_value"),
        (b"\x00\x01binary", "invalid_event"),
    ],
)
def test_invalid_requests_get_error_events_and_the_session_goes_on(
    server: RunningServer, payload: str | bytes, code: str
) -> None:
    ws = connect(server)
    try:
        assert json.loads(ws.recv())["type"] == "session.created"
        if isinstance(payload, bytes):
            ws.send_binary(payload)
        else:
            ws.send(payload)
        error = json.loads(ws.recv())
        assert error["type"] == "error", error
        assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == code
        assert error["error"]["message"]
        # still usable: recognize something and finish cleanly
        pcm = pcm_of("goforward.wav") + bytes(16000)
        for i in range(0, len(pcm), 6400):
            ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + 6400]).decode()})
            )
        ws.send(json.dumps({"type": "session.finish"}))
        events = recv_until(ws, "session.finished")
        done = [e for e in events if e["type"].endswith("transcription.completed")]
        assert done and wer(GO, done[0]["transcript"]) <= 0.25
    finally:
        ws.close()


def test_unknown_model_and_bad_key(server: RunningServer) -> None:
    ws = connect(server, model="no-such-asr")
    try:
        error = json.loads(ws.recv())
        assert error["type"] == "error" and error["error"]["code"] == "Model.NotExist"
    finally:
        ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(server, key="sk-nope")
    assert info.value.status_code == 401
