"""Run-task WebSocket protocol (/api-ws/v1/inference) against a real server, real engine and real clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashscope
import jiwer
import pytest
import websocket
from dashscope.audio.asr import Recognition, RecognitionCallback, RecognitionResult

from tests.conftest import API_KEY, RunningServer, audio_file, start_server, stop_server

GO = "go forward ten meters"
SOMETHING = "go somewhere and do something"


def wer(reference: str, hypothesis: str) -> float:
    clean = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    hyp = hypothesis.replace("10", "ten")
    return float(jiwer.wer(reference, hyp, reference_transform=clean, hypothesis_transform=clean))


def pcm_of(name: str) -> bytes:
    with wave.open(str(audio_file(name)), "rb") as handle:
        return handle.readframes(handle.getnframes())


def speech_pcm() -> bytes:
    """goforward + 1 s pause + something + 1 s silence, 16 kHz 16-bit mono."""
    return pcm_of("goforward.wav") + bytes(32000) + pcm_of("something.wav") + bytes(32000)


def inference_url(server: RunningServer) -> str:
    return server.ws_url + "/api-ws/v1/inference"


def run_task_message(task_id: str, model: str = "fun-asr-realtime", **parameters: Any) -> str:
    params = {"format": "pcm", "sample_rate": 16000, **parameters}
    return json.dumps(
        {
            "header": {"action": "run-task", "task_id": task_id, "streaming": "duplex"},
            "payload": {
                "task_group": "audio",
                "task": "asr",
                "function": "recognition",
                "model": model,
                "parameters": params,
                "input": {},
            },
        }
    )


def finish_message(task_id: str) -> str:
    return json.dumps(
        {"header": {"action": "finish-task", "task_id": task_id, "streaming": "duplex"}, "payload": {"input": {}}}
    )


def connect(server: RunningServer, key: str = API_KEY, timeout: float = 60) -> websocket.WebSocket:
    return websocket.create_connection(inference_url(server), header=[f"Authorization: Bearer {key}"], timeout=timeout)


def events_until(ws: websocket.WebSocket, *names: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        event = json.loads(ws.recv())
        out.append(event)
        if event["header"]["event"] in names:
            return out


def expect_failed(ws: websocket.WebSocket, words: str) -> dict[str, Any]:
    event = events_until(ws, "task-failed")[-1]
    header = event["header"]
    assert header["error_code"]
    assert words.lower() in header["error_message"].lower(), header
    ws.settimeout(10)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:  # the server closes the connection after task-failed
            if ws.recv() in ("", b""):
                raise websocket.WebSocketConnectionClosedException("closed")
    return header


def run_task(
    ws: websocket.WebSocket, task_id: str, pcm: bytes, *, pace: float = 0.0, chunk: int = 3200, **parameters: Any
) -> list[dict[str, Any]]:
    ws.send(run_task_message(task_id, **parameters))
    started = json.loads(ws.recv())
    assert started["header"]["event"] == "task-started", started
    assert started["header"]["task_id"] == task_id
    for i in range(0, len(pcm), chunk):
        ws.send_binary(pcm[i : i + chunk])
        if pace:
            time.sleep(pace)
    ws.send(finish_message(task_id))
    return events_until(ws, "task-finished", "task-failed")


def finals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e["payload"]["output"]["sentence"]
        for e in events
        if e["header"]["event"] == "result-generated" and e["payload"]["output"]["sentence"]["end_time"] is not None
    ]


# -- official SDK -----------------------------------------------------------------------------------
def test_legacy_recognition_streaming_with_callbacks(server: RunningServer) -> None:
    dashscope.base_websocket_api_url = inference_url(server)
    dashscope.api_key = API_KEY
    seen: dict[str, list[Any]] = {"interim": [], "final": [], "complete": [], "error": []}

    class Callback(RecognitionCallback):
        def on_event(self, result: RecognitionResult) -> None:
            sentence = result.get_sentence()
            kind = "final" if RecognitionResult.is_sentence_end(sentence) else "interim"
            seen[kind].append((sentence, result.get_usage(sentence)))

        def on_complete(self) -> None:
            seen["complete"].append(True)

        def on_error(self, result: RecognitionResult) -> None:
            seen["error"].append(result.message)

    recognition = Recognition(
        model="fun-asr-realtime",
        format="pcm",
        sample_rate=16000,
        callback=Callback(),
        language_hints=["en"],
        max_sentence_silence=500,
        some_future_option=True,
    )
    recognition.start()
    pcm = speech_pcm()
    for i in range(0, len(pcm), 3200):  # 100 ms frames at twice real time
        recognition.send_audio_frame(pcm[i : i + 3200])
        time.sleep(0.05)
    recognition.stop()
    assert seen["complete"] == [True] and not seen["error"]
    texts = [s["text"] for s, _ in seen["final"]]
    assert len(texts) == 2, texts
    assert wer(GO, texts[0]) <= 0.25 and wer(SOMETHING, texts[1]) <= 0.25, texts
    assert [s["sentence_id"] for s, _ in seen["final"]] == [1, 2]
    first, usage = seen["final"][0]
    assert isinstance(first["end_time"], int) and first["end_time"] > first["begin_time"]
    assert usage and usage["duration"] >= 1
    assert first["words"] and all(isinstance(w["begin_time"], int) for w in first["words"])
    assert all(s["end_time"] is None for s, _ in seen["interim"])
    assert seen["interim"], "no interim results"
    assert recognition.get_first_package_delay() is not None


def test_legacy_call_file_burst(server: RunningServer) -> None:
    dashscope.base_websocket_api_url = inference_url(server)
    dashscope.api_key = API_KEY
    recognition = Recognition(model="paraformer-realtime-v2", format="wav", sample_rate=16000, callback=None)
    result = recognition.call(str(audio_file("goforward.wav")))
    assert result.status_code == 200, result.message
    sentences = result.get_sentence()
    assert sentences and wer(GO, " ".join(s["text"] for s in sentences)) <= 0.25


def test_v2_recognize_file_and_recognize(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_WEBSOCKET_BASE_URL", inference_url(server))
    from dashscope import Client

    with Client(api_key=API_KEY, base_url=server.url + "/api/v1") as client:
        events = list(
            client.audio.asr.recognize_file(str(audio_file("something.wav")), model="fun-asr-realtime", format="wav")
        )
        texts = [
            e["payload"]["output"]["sentence"]["text"]
            for e in events
            if e["header"].get("event") == "result-generated"
            and e["payload"]["output"]["sentence"]["end_time"] is not None
        ]
        assert texts and wer(SOMETHING, " ".join(texts)) <= 0.25

        with client.audio.asr.recognize(model="fun-asr-realtime", parameters={"language_hints": ["en"]}) as rec:
            pcm = pcm_of("goforward.wav") + bytes(16000)

            def send() -> None:
                for i in range(0, len(pcm), 6400):
                    rec.send_audio_frame(pcm[i : i + 6400])
                    time.sleep(0.02)
                rec.stop()

            sender = threading.Thread(target=send)
            sender.start()
            finals_v2 = [r.get_sentence()["text"] for r in rec.results() if r.is_sentence_end()]
            sender.join()
        assert finals_v2 and wer(GO, " ".join(finals_v2)) <= 0.25


def test_v2_ws_connection_reuse_runs_tasks_in_sequence(server: RunningServer) -> None:
    from dashscope import Client

    pcm = pcm_of("goforward.wav")
    with Client(api_key=API_KEY, base_url=server.url + "/api/v1") as client:
        connection = client.ws_connection(url=inference_url(server))
        try:
            task_ids = []
            for _ in range(2):
                with client.audio.asr.recognize(model="fun-asr-realtime", connection=connection) as rec:
                    task_ids.append(rec.session.task_id)
                    for i in range(0, len(pcm), 12800):
                        rec.send_audio_frame(pcm[i : i + 12800])
                    rec.stop()
                    texts = [r.get_sentence()["text"] for r in rec.results() if r.is_sentence_end()]
                    assert rec.last_response["header"]["event"] == "task-finished"
                assert wer(GO, " ".join(texts)) <= 0.25, texts
            assert len(set(task_ids)) == 2 and not connection.closed
        finally:
            connection.close()


def _sdk_env(server: RunningServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DASHSCOPE_API_KEY=API_KEY,
        DASHSCOPE_BASE_URL=server.url + "/api/v1",
        DASHSCOPE_WEBSOCKET_BASE_URL=inference_url(server),
    )
    return env


def test_sdk_example_asr_websocket_runs_as_shipped(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "transcript.txt"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dashscope.examples.01_atomic_capabilities.audio.asr_websocket",
            str(audio_file("something.wav")),
            "--model",
            "fun-asr-realtime",
            "--transcript",
            str(out),
            "--partials",
        ],
        env=_sdk_env(server),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert wer(SOMETHING, out.read_text()) <= 0.25, out.read_text()


def test_sdk_example_connection_reuse_runs_as_shipped(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "reuse"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dashscope.examples.01_atomic_capabilities.audio.connection_reuse",
            "asr",
            str(audio_file("goforward.wav")),
            "--output-dir",
            str(out),
        ],
        env=_sdk_env(server),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["runs"]) == 5
    for run in summary["runs"]:
        assert wer(GO, run["text"]) <= 0.25, run


# -- raw websocket-client: protocol details and bad input -------------------------------------------
def test_raw_client_formats_reuse_and_trailing_slash(server: RunningServer, tmp_path: Path) -> None:
    mp3 = tmp_path / "something.mp3"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(audio_file("something.wav")), str(mp3)], check=True)
    ws = websocket.create_connection(
        inference_url(server) + "/", header=[f"Authorization: bearer {API_KEY}"], timeout=60
    )
    try:
        task_id = str(uuid.uuid4())
        events = run_task(ws, task_id, mp3.read_bytes(), chunk=2000, format="mp3", language_hints=["en"])
        assert events[-1] == {
            "header": {"task_id": task_id, "event": "task-finished", "attributes": {}},
            "payload": {"output": {}},
        }
        assert all(e["header"]["task_id"] == task_id for e in events)
        assert wer(SOMETHING, " ".join(s["text"] for s in finals(events))) <= 0.25
        # second task on the same connection: 8 kHz PCM resampled server-side
        pcm8 = subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-i", str(audio_file("goforward.wav")), "-ar", "8000", "-f", "s16le", "-"],
            check=True,
            capture_output=True,
        ).stdout
        events = run_task(ws, "second", pcm8 + bytes(8000), model="paraformer-realtime-8k-v2", sample_rate=8000)
        assert events[-1]["header"]["event"] == "task-finished"
        assert wer(GO, " ".join(s["text"] for s in finals(events))) <= 0.25
    finally:
        ws.close()
    # the same task_id again on a new connection is fine
    ws = connect(server)
    try:
        ws.send(run_task_message(task_id))
        assert json.loads(ws.recv())["header"]["event"] == "task-started"
        pcm = pcm_of("goforward.wav") + bytes(16000)
        ws.send_binary(pcm[: len(pcm) // 2])
        context = {"context": [{"role": "user", "content": [{"type": "input_text", "text": "robot directions"}]}]}
        ws.send(
            json.dumps(
                {
                    "header": {"action": "continue-task", "task_id": task_id, "streaming": "duplex"},
                    "payload": {"input": context},
                }
            )
        )
        ws.send_binary(pcm[len(pcm) // 2 :])
        ws.send(finish_message(task_id))
        events = events_until(ws, "task-finished", "task-failed")
        assert events[-1]["header"]["event"] == "task-finished"
        assert wer(GO, " ".join(s["text"] for s in finals(events))) <= 0.25
    finally:
        ws.close()


def test_invalid_key_rejects_handshake_with_401(server: RunningServer) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(server, key="sk-wrong")
    assert info.value.status_code == 401


@pytest.mark.parametrize(
    ("action", "words"),
    [
        ("audio-first", "no task is running"),
        ("bad-json", "not valid json"),
        ("unknown-action", "unknown action"),
        ("bad-silence", "max_sentence_silence"),
        ("unknown-model", "model not exist"),
        ("format-mismatch", "wav data"),
        ("oversized-frame", "exceeds"),
        ("unknown-vocabulary", "vocabulary_id"),
        ("wrong-rate", "sample_rate"),
    ],
)
def test_bad_input_fails_the_task_clearly(server: RunningServer, action: str, words: str) -> None:
    ws = connect(server)
    try:
        if action == "audio-first":
            ws.send_binary(bytes(3200))
        elif action == "bad-json":
            ws.send("{not json")
        elif action == "unknown-action":
            ws.send(json.dumps({"header": {"action": "pause-task", "task_id": "t1"}, "payload": {}}))
        elif action == "bad-silence":
            ws.send(run_task_message("t1", max_sentence_silence=100))
        elif action == "unknown-model":
            ws.send(run_task_message("t1", model="no-such-model"))
        elif action == "unknown-vocabulary":
            ws.send(run_task_message("t1", vocabulary_id="vocab-missing-0001"))
        elif action == "wrong-rate":
            ws.send(run_task_message("t1", model="fun-asr-realtime", sample_rate=8000))
        else:
            fmt = "mp3" if action == "format-mismatch" else "pcm"
            ws.send(run_task_message("t1", format=fmt))
            assert json.loads(ws.recv())["header"]["event"] == "task-started"
            if action == "format-mismatch":
                wav = audio_file("goforward.wav").read_bytes()
                for i in range(0, len(wav), 12800):
                    ws.send_binary(wav[i : i + 12800])
            else:
                ws.send_binary(bytes(2 * 1024 * 1024))
        expect_failed(ws, words)
    finally:
        ws.close()


def test_audio_after_finish_task_is_an_error(server: RunningServer) -> None:
    ws = connect(server)
    try:
        events = run_task(ws, "t-after", pcm_of("goforward.wav"))
        assert events[-1]["header"]["event"] == "task-finished"
        ws.send_binary(bytes(3200))
        expect_failed(ws, "no task is running")
    finally:
        ws.close()


def test_client_that_stops_reading_does_not_hurt_others(server: RunningServer) -> None:
    silent = connect(server)
    try:
        silent.send(run_task_message("greedy"))
        pcm = speech_pcm() * 4
        for i in range(0, len(pcm), 12800):
            silent.send_binary(pcm[i : i + 12800])  # and never reads a result
        silent.send(finish_message("greedy"))
        ws = connect(server)
        try:
            started = time.monotonic()
            ws.ping("still there?")  # the event loop answers while the other stream's work is queued
            assert ws.recv_data_frame(True)[1].data == b"still there?"
            assert time.monotonic() - started < 2
            events = run_task(ws, "polite", pcm_of("something.wav") + bytes(16000))
            assert events[-1]["header"]["event"] == "task-finished"
            assert wer(SOMETHING, " ".join(s["text"] for s in finals(events))) <= 0.25
            assert time.monotonic() - started < 30
        finally:
            ws.close()
    finally:
        silent.close()


# -- capacity: a server with room for one stream ------------------------------------------------------
@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("small"),
        {"VOXGATE_REALTIME_MAX_SESSIONS": "1", "VOXGATE_REALTIME_IDLE_TIMEOUT_S": "3"},
    )
    yield running
    stop_server(running)


def test_admission_refuses_beyond_capacity_and_frees_on_disconnect(small_server: RunningServer) -> None:
    first = connect(small_server)
    first.send(run_task_message("holder"))
    assert json.loads(first.recv())["header"]["event"] == "task-started"
    pcm = pcm_of("something.wav")
    for i in range(0, len(pcm) // 2, 3200):  # mid-sentence ...
        first.send_binary(pcm[i : i + 3200])
    second = connect(small_server)
    try:
        second.send(run_task_message("refused"))
        header = expect_failed(second, "capacity")
        assert header["error_code"] == "Throttling" and header["task_id"] == "refused"
    finally:
        second.close()
    session = websocket.create_connection(
        small_server.ws_url + "/api-ws/v1/realtime?model=qwen3-asr-flash-realtime",
        header=[f"Authorization: Bearer {API_KEY}"],
        timeout=30,
    )
    try:
        error = json.loads(session.recv())
        assert error["type"] == "error" and error["error"]["code"] == "Throttling"
        assert error["error"]["type"] == "server_error"
    finally:
        session.close()
    # ... the first client vanishes without finish-task: its capacity comes back
    first.sock.shutdown(socket.SHUT_RDWR)
    first.sock.close()
    deadline = time.monotonic() + 10
    while True:
        third = connect(small_server)
        third.send(run_task_message("after"))
        event = json.loads(third.recv())
        if event["header"]["event"] == "task-started":
            break
        third.close()
        assert time.monotonic() < deadline, "capacity was not released after the client disconnected"
        time.sleep(0.5)
    try:
        for i in range(0, len(pcm), 3200):
            third.send_binary(pcm[i : i + 3200])
        third.send(finish_message("after"))
        events = events_until(third, "task-finished")
        assert wer(SOMETHING, " ".join(s["text"] for s in finals(events))) <= 0.25
    finally:
        third.close()


def test_idle_connections_and_silent_tasks_time_out(small_server: RunningServer) -> None:
    idle = connect(small_server)
    started = time.monotonic()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:
            if idle.recv() in ("", b""):
                raise websocket.WebSocketConnectionClosedException("closed")
    assert 2.5 < time.monotonic() - started < 10
    idle.close()
    waiting = connect(small_server)
    try:
        waiting.send(run_task_message("quiet"))
        assert json.loads(waiting.recv())["header"]["event"] == "task-started"
        header = expect_failed(waiting, "timeout")  # no audio at all
        assert header["error_code"] == "CLIENT_ERROR"
    finally:
        waiting.close()
    silent = connect(small_server)
    try:
        silent.send(run_task_message("silence", heartbeat=False))
        assert json.loads(silent.recv())["header"]["event"] == "task-started"
        for _ in range(12):  # silence for longer than the timeout: the task fails (heartbeat=false)
            try:
                silent.send_binary(bytes(3200))
            except (websocket.WebSocketException, OSError):
                break
            time.sleep(0.4)
        expect_failed(silent, "no speech")
    finally:
        silent.close()


def test_heartbeat_packets_keep_a_silent_task_alive(small_server: RunningServer) -> None:
    ws = connect(small_server)
    try:
        silence = bytes(32000 * 12)  # 12 s of silence, longer than the server's idle timeout
        events = run_task(
            ws, "beat", silence + pcm_of("goforward.wav") + bytes(32000), chunk=16000, pace=0.05, heartbeat=True
        )
    finally:
        ws.close()
    assert events[-1]["header"]["event"] == "task-finished", events[-1]
    beats = [
        e["payload"]["output"]["sentence"]
        for e in events
        if e["header"]["event"] == "result-generated" and e["payload"]["output"]["sentence"]["heartbeat"]
    ]
    assert beats and all(b["text"] == "" and b["end_time"] is None and b["sentence_id"] == 0 for b in beats)
    assert 9000 <= beats[0]["begin_time"] <= 12000  # after ~10 s of streamed silence
    assert wer(GO, " ".join(s["text"] for s in finals(events))) <= 0.25


def test_sdk_call_skips_heartbeat_packets(small_server: RunningServer, tmp_path: Path) -> None:
    dashscope.base_websocket_api_url = inference_url(small_server)
    dashscope.api_key = API_KEY
    path = tmp_path / "quiet_then_speech.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(bytes(32000 * 12) + pcm_of("goforward.wav") + bytes(32000))
    recognition = Recognition(
        model="paraformer-realtime-v2", format="wav", sample_rate=16000, callback=None, heartbeat=True
    )
    result = recognition.call(str(path))
    assert result.status_code == 200, result.message
    sentences = result.get_sentence()
    assert sentences and all(s["text"] for s in sentences), sentences  # no empty heartbeat sentence
    assert wer(GO, " ".join(s["text"] for s in sentences)) <= 0.25
