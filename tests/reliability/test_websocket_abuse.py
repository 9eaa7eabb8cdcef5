"""Malformed, oversized and out-of-order frames on the three real-time WebSockets while healthy streams run beside
them: every bad frame is answered in its protocol's error shape (``task-failed``, or an ``error`` event after
which the session goes on; a frame over the WebSocket limit closes only its own connection with 1009), and the
healthy streams' transcripts are unharmed."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import websocket

from tests.conftest import API_KEY, REFERENCES, RunningServer, wer
from tests.integration.test_realtime_runtask import (
    connect,
    events_until,
    finals,
    finish_message,
    pcm_of,
    run_task,
    run_task_message,
)

MIB = 1024 * 1024
OVER_WEBSOCKET_LIMIT = 33 * MIB  # above the server's WebSocket frame limit (32 MiB)
AUTH = [f"Authorization: Bearer {API_KEY}"]


# -- run-task (/api-ws/v1/inference): each mistake fails the task and closes that connection ----------------
def _header(action: str, task_id: str = "t1") -> str:
    return json.dumps({"header": {"action": action, "task_id": task_id, "streaming": "duplex"}, "payload": {}})


RUN_TASK_ABUSE: list[tuple[str, list[str | bytes], str]] = [
    ("audio before run-task", [bytes(3200)], "no task is running"),
    ("not JSON", ["{not json"], "not valid json"),
    ("a JSON list", ["[1, 2, 3]"], "must be a json object"),
    ("no header", [json.dumps({"payload": {}})], "json object with a 'header'"),
    ("no task_id", [json.dumps({"header": {"action": "run-task"}, "payload": {}})], "task_id"),
    ("finish before run", [_header("finish-task")], "no task is running"),
    ("continue before run", [_header("continue-task")], "no task is running"),
    ("unknown action", [_header("pause-task")], "unknown action"),
    ("text frame over 256 KB", ["x" * (300 * 1024)], "too large"),
    ("text frame of 20 MiB", ["x" * (20 * MIB)], "too large"),
    ("bad parameter type", [run_task_message("t1", sample_rate="fast")], "sample_rate"),
    ("run-task twice", [run_task_message("t1"), run_task_message("t2")], "already running"),
    ("finish names another task", [run_task_message("t1"), finish_message("t9")], "running task is t1"),
    ("audio frame of 2 MiB", [run_task_message("t1"), bytes(2 * MIB)], "exceeds"),
]


def _run_task_abuse(server: RunningServer, frames: list[str | bytes], words: str) -> None:
    ws = connect(server, timeout=30)
    try:
        for frame in frames:
            ws.send_binary(frame) if isinstance(frame, bytes) else ws.send(frame)
        events = events_until(ws, "task-failed")
        failed = events[-1]["header"]
        assert failed["error_code"] and words.lower() in failed["error_message"].lower(), failed
        assert all(e["header"]["event"] in ("task-started", "task-failed") for e in events), events
        assert _closed_with(ws) == 1000
    finally:
        ws.close()


def _closed_with(ws: websocket.WebSocket) -> int | None:
    """Read until the server's close frame; its status code (None if the connection just dropped)."""
    ws.settimeout(30)
    while True:
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketConnectionClosedException:
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else None


# -- session protocols: each mistake answers an error event and the session goes on ------------------------
def _append(pcm: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


BIG_APPEND = _append(bytes(16 * MIB))
SESSION_ABUSE: list[tuple[str, str | bytes, str, str | None]] = [
    ("not JSON", "{not json", "invalid_json", None),
    ("a JSON list", "[1]", "invalid_event", None),
    ("unknown type", json.dumps({"type": "no.such.event", "event_id": "e1"}), "invalid_event_type", "type"),
    ("audio not a string", json.dumps({"type": "input_audio_buffer.append", "audio": 7}), "invalid_value", "audio"),
    ("audio not base64", json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}), "invalid_value", "audio"),
    ("binary frame", bytes(3200), "invalid_event", None),
    ("text frame of 22 MiB", "x" * (22 * MIB), "invalid_value", None),
    ("16 MiB of audio in one append", BIG_APPEND, "invalid_value", None),
    ("commit in server-VAD mode", json.dumps({"type": "input_audio_buffer.commit"}), "invalid_request", None),
]


def _session_abuse(url: str, headers: list[str], created: str, subprotocols: list[str] | None = None) -> None:
    ws = websocket.create_connection(url, header=headers, subprotocols=subprotocols, timeout=30)
    try:
        assert json.loads(ws.recv())["type"] == created
        for name, frame, code, param in SESSION_ABUSE:
            ws.send_binary(frame) if isinstance(frame, bytes) else ws.send(frame)
            event = json.loads(ws.recv())
            assert event["type"] == "error", (name, event)
            assert event["error"]["code"] == code and event["error"]["message"], (name, event)
            if param:
                assert event["error"]["param"] == param, (name, event)
        ws.send(_append(bytes(3200)))
        ws.ping("after all that")
        ws.settimeout(10)
        assert ws.recv_data_frame(True)[1].data == b"after all that", "the session is still open and served"
    finally:
        ws.close()


def _oversized_frame_closes_only_its_connection(url: str, headers: list[str]) -> None:
    ws = websocket.create_connection(url, header=headers, timeout=60)
    try:
        try:
            ws.send("x" * OVER_WEBSOCKET_LIMIT)
        except (BrokenPipeError, ConnectionResetError, websocket.WebSocketConnectionClosedException):
            return  # closed while the frame was still being written
        assert _closed_with(ws) == 1009, "message too big"
    finally:
        ws.close()


# -- the healthy streams ---------------------------------------------------------------------------------
def _healthy_run_task(server: RunningServer, out: dict[str, Any]) -> None:
    ws = connect(server)
    try:
        events = run_task(ws, "healthy", pcm_of("two_cities_16k.wav") + bytes(32000), pace=0.05)
        out["run-task"] = events
    finally:
        ws.close()


def _healthy_session(server: RunningServer, out: dict[str, Any]) -> None:
    url = f"{server.ws_url}/api-ws/v1/realtime?model=qwen3-asr-flash-realtime"
    ws = websocket.create_connection(url, header=AUTH, timeout=120)
    try:
        assert json.loads(ws.recv())["type"] == "session.created"
        pcm = pcm_of("beckett_16k.wav") + bytes(32000)
        for i in range(0, len(pcm), 3200):
            ws.send(_append(pcm[i : i + 3200]))
            time.sleep(0.05)
        ws.send(json.dumps({"type": "session.finish"}))
        events = []
        while (event := json.loads(ws.recv()))["type"] != "session.finished":
            events.append(event)
        out["session"] = events
    finally:
        ws.close()


def _in_thread(target: Callable[..., None], *args: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


@pytest.mark.timeout(300)
def test_bad_frames_beside_healthy_streams(server: RunningServer) -> None:
    healthy: dict[str, Any] = {}
    streams = [_in_thread(_healthy_run_task, server, healthy), _in_thread(_healthy_session, server, healthy)]
    inference = f"{server.ws_url}/api-ws/v1/inference"
    realtime = f"{server.ws_url}/api-ws/v1/realtime?model=qwen3-asr-flash-realtime"
    openai = f"{server.ws_url}/v1/realtime?intent=transcription"
    for name, frames, words in RUN_TASK_ABUSE:
        try:
            _run_task_abuse(server, frames, words)
        except AssertionError as exc:
            raise AssertionError(f"run-task, {name}: {exc}") from exc
    _session_abuse(realtime, AUTH, "session.created")
    _session_abuse(openai, AUTH, "session.created")
    for url in (inference, realtime, openai):
        _oversized_frame_closes_only_its_connection(url, AUTH)
    for thread, errors in streams:
        thread.join(240)
        assert not thread.is_alive() and not errors, errors
    run_task_events = healthy["run-task"]
    assert run_task_events[-1]["header"]["event"] == "task-finished"
    sentences = finals(run_task_events)
    ids = [s["sentence_id"] for s in sentences]
    assert ids == sorted(set(ids)), f"sentences in order, none twice: {ids}"
    transcript = " ".join(s["text"] for s in sentences)
    assert wer(REFERENCES["two_cities_16k.wav"], transcript) <= 0.1, transcript
    completed = [e for e in healthy["session"] if e["type"].endswith("transcription.completed")]
    spoken = " ".join(e["transcript"] for e in completed)
    assert wer(REFERENCES["beckett_16k.wav"], spoken) <= 0.2, spoken
