"""Real-time streams beside other work: admission by headroom, a file job during a live stream (the dashscope
SDK for both), context updates reaching full-window finals and translations (raw run-task client)."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashscope
import httpx
import pytest
import websocket
from dashscope.audio.asr import Recognition, RecognitionCallback, RecognitionResult, Transcription

from tests.conftest import API_KEY, REFERENCES, RunningServer, audio_file, start_server, stop_server, synth, wer
from tests.integration.test_realtime_runtask import run_task_message

AUTH = {"Authorization": f"Bearer {API_KEY}"}
GO_SOMETHING = REFERENCES["goforward.wav"] + " " + REFERENCES["something.wav"]
BECKETT = REFERENCES["beckett_16k.wav"]
TWO_CITIES = REFERENCES["two_cities_16k.wav"]


def pcm_of(path: Path) -> bytes:
    with wave.open(str(path), "rb") as handle:
        return handle.readframes(handle.getnframes())


def action(name: str, task_id: str, payload_input: dict[str, Any] | None = None) -> str:
    header = {"action": name, "task_id": task_id, "streaming": "duplex"}
    return json.dumps({"header": header, "payload": {"input": payload_input or {}}})


class LiveClient:
    """One run-task session streaming PCM in 100 ms frames at real-time pace; collects finals."""

    def __init__(self, server: RunningServer, pcm: bytes, **parameters: Any) -> None:
        self.ws = websocket.create_connection(
            server.ws_url + "/api-ws/v1/inference", header=[f"Authorization: Bearer {API_KEY}"], timeout=60
        )
        self.task_id = uuid.uuid4().hex
        self.pcm = pcm
        self.finals: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.failure: dict[str, Any] | None = None
        self.ws.send(run_task_message(self.task_id, **parameters))
        self.started = json.loads(self.ws.recv())["header"]

    def stream(self, context: str | None = None) -> None:
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        if context is not None:
            self.ws.send(action("continue-task", self.task_id, {"context": context}))
        for i in range(0, len(self.pcm), 3200):
            self.ws.send_binary(self.pcm[i : i + 3200])
            time.sleep(0.1)
        self.ws.send(action("finish-task", self.task_id))
        reader.join(120)
        self.ws.close()

    def _read(self) -> None:
        while True:
            event = json.loads(self.ws.recv())
            self.events.append(event)
            header = event["header"]
            if header["event"] == "result-generated":
                sentence = event["payload"]["output"]["sentence"]
                if sentence.get("sentence_end"):
                    self.finals.append(sentence["text"])
            elif header["event"] == "task-failed":
                self.failure = header
                return
            elif header["event"] == "task-finished":
                return

    @property
    def text(self) -> str:
        return " ".join(self.finals)


class SdkStream:
    """One stream through the official dashscope SDK (``Recognition`` with a callback), at real-time pace."""

    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm
        self.finals: list[str] = []
        self.errors: list[str] = []
        self.complete = False
        outer = self

        class Callback(RecognitionCallback):
            def on_event(self, result: RecognitionResult) -> None:
                sentence = result.get_sentence()
                if RecognitionResult.is_sentence_end(sentence):
                    outer.finals.append(sentence["text"])

            def on_complete(self) -> None:
                outer.complete = True

            def on_error(self, result: RecognitionResult) -> None:
                outer.errors.append(f"{result.code}: {result.message}")

        self.recognition = Recognition(
            model="fun-asr-realtime",
            format="pcm",
            sample_rate=16000,
            callback=Callback(),
            language_hints=["en"],
            max_sentence_silence=500,
        )

    def start(self) -> bool:
        try:
            self.recognition.start()
        except Exception as exc:  # the SDK raises when the task fails to start
            self.errors.append(str(exc))
            return False
        return not self.errors

    def stream(self) -> None:
        for i in range(0, len(self.pcm), 3200):
            self.recognition.send_audio_frame(self.pcm[i : i + 3200])
            time.sleep(0.1)
        self.recognition.stop()

    @property
    def text(self) -> str:
        return " ".join(self.finals)


def wait_for_open_sessions(server: RunningServer, count: int, *, at_most: bool = False) -> None:
    """Until the server's /metrics shows at least (``at_most``: at most) ``count`` open run-task sessions."""
    pattern = re.compile(r'^voxgate_realtime_sessions_open\{protocol="run-task"\} (\S+)$', re.M)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = pattern.search(httpx.get(server.url + "/metrics", headers=AUTH, timeout=10).text)
        open_now = float(found.group(1)) if found else 0.0
        if (open_now <= count) if at_most else (open_now >= count):
            return
        time.sleep(0.1)
    raise AssertionError(f"{count} sessions did not open")


def use_sdk(server: RunningServer) -> None:
    dashscope.base_websocket_api_url = server.ws_url + "/api-ws/v1/inference"
    dashscope.base_http_api_url = server.url + "/api/v1"
    dashscope.api_key = API_KEY


@pytest.fixture(scope="module")
def four_stream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Headroom for four English streams (priced 0.3 core-s/s each until measured): a fifth is refused."""
    running = start_server(tmp_path_factory.mktemp("four"), {"VOXGATE_REALTIME_CAPACITY": "1.3"})
    yield running
    stop_server(running)


def test_fifth_stream_is_refused_cleanly_and_the_four_are_unharmed(four_stream_server: RunningServer) -> None:
    use_sdk(four_stream_server)
    pcm = pcm_of(audio_file("goforward.wav")) + bytes(16000) + pcm_of(audio_file("something.wav")) + bytes(32000)
    streams = [SdkStream(pcm) for _ in range(4)]
    assert all(s.start() for s in streams)
    wait_for_open_sessions(four_stream_server, 4)  # the SDK's start() may return before task-started
    refused = LiveClient(four_stream_server, pcm, language_hints=["en"])  # a fifth (raw run-task client)
    refused.ws.close()
    threads = [threading.Thread(target=s.stream) for s in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert refused.started["event"] == "task-failed", refused.started
    assert refused.started["error_code"] == "Throttling" and "capacity" in refused.started["error_message"]
    for stream in streams:
        assert stream.complete and not stream.errors, stream.errors
        assert wer(GO_SOMETHING, stream.text) <= 0.25, stream.text
    wait_for_open_sessions(four_stream_server, 0, at_most=True)
    again = LiveClient(four_stream_server, pcm, language_hints=["en"])  # the capacity comes back
    again.ws.close()
    assert again.started["event"] == "task-started", again.started


def test_file_job_and_live_stream_run_side_by_side(four_stream_server: RunningServer) -> None:
    use_sdk(four_stream_server)
    job = Transcription.async_call(model="fun-asr", file_urls=[audio_file("two_cities_16k.wav").as_uri()])
    assert job.status_code == 200, job
    task_id = job.output.task_id
    status = ""
    deadline = time.monotonic() + 30
    while status != "RUNNING" and time.monotonic() < deadline:
        status = Transcription.fetch(task=task_id).output.task_status
    assert status == "RUNNING"
    live = SdkStream(pcm_of(audio_file("beckett_16k.wav")) + bytes(32000))
    assert live.start()
    live.stream()
    assert live.complete and not live.errors, live.errors
    assert wer(BECKETT, live.text) <= 0.35, live.text
    done = Transcription.wait(task=task_id)
    assert done.output.task_status == "SUCCEEDED", done
    result = httpx.get(done.output.results[0]["transcription_url"], timeout=10).json()
    text = " ".join(s["text"] for s in result["transcripts"][0]["sentences"])
    assert wer(TWO_CITIES, text) <= 0.08, text


@pytest.fixture(scope="module")
def full_window_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("fullwindow"), {"VOXGATE_REALTIME_FAST_FINALS": "0"})
    yield running
    stop_server(running)


def test_continue_task_context_reaches_full_window_finals(full_window_server: RunningServer, tmp_path: Path) -> None:
    audio = synth("We deployed the Xylantrix cluster in the Tolkarov region.", tmp_path / "names.wav")
    pcm = bytes(16000) + pcm_of(audio) + bytes(32000)
    plain = LiveClient(full_window_server, pcm, language_hints=["en"])
    plain.stream()
    informed = LiveClient(full_window_server, pcm, language_hints=["en"])
    informed.stream(context="Xylantrix clusters run in the Tolkarov region.")
    assert plain.failure is None and informed.failure is None
    terms = ("xylantrix", "tolkarov")
    found_plain = [t for t in terms if t in plain.text.lower()]
    found_informed = [t for t in terms if t in informed.text.lower()]
    assert len(found_informed) > len(found_plain), (plain.text, informed.text)


GERMAN = "Guten Morgen. Ich trinke jeden Tag eine Tasse Kaffee mit Milch."  # synthetic speech (espeak-ng, de)


def test_run_task_translation_gives_english_beside_the_transcription(server: RunningServer, tmp_path: Path) -> None:
    audio = synth(GERMAN, tmp_path / "german_espeak.wav", voice="de", speed=120)
    pcm = bytes(16000) + pcm_of(audio) + bytes(32000)
    client = LiveClient(server, pcm, translation_enabled=True, translation_target_languages=["en"])
    assert client.started["event"] == "task-started"
    client.stream()
    translations = []
    for event in client.events:
        for item in (event["payload"].get("output") or {}).get("translations", []):
            assert item["lang"] == "en" and item["sentence_end"] is True
            translations.append(item["text"])
    assert client.failure is None
    english = set(normalize_words(" ".join(translations)))
    german = set(normalize_words(client.text))
    assert len(english & {"good", "morning", "drink", "every", "day", "cup", "coffee", "milk"}) >= 3, translations
    assert len(german & {"guten", "morgen", "trinke", "jeden", "tag", "tasse", "kaffee", "milch"}) >= 3, client.text


def normalize_words(text: str) -> list[str]:
    return [w.strip(".,!?;:").lower() for w in text.split()]


def test_translation_to_other_languages_is_refused_clearly(server: RunningServer) -> None:
    client = LiveClient(server, b"", translation_enabled=True, translation_target_languages=["fr"])
    assert client.started["event"] == "task-failed" and client.started["error_code"] == "InvalidParameter"
    assert "translation_target_languages" in client.started["error_message"]
    client.ws.close()
