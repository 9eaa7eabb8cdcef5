"""Run-task WebSocket protocol (``/api-ws/v1/inference``): Fun-ASR / Paraformer real-time recognition.

``run-task`` -> ``task-started``; binary audio frames; ``result-generated`` events (interim results with
``end_time: null``, finals with integer ``end_time``, words and ``usage``); ``continue-task`` updates the
decoding context; ``finish-task`` -> remaining finals -> ``task-finished``. Any error -> ``task-failed``,
then the server closes the connection. Several tasks may run one after another on one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from fastapi import APIRouter, WebSocket
from pydantic import Field, field_validator

from voxgate.api.body import websocket_message
from voxgate.api.client_events import ClientEventError, read_event
from voxgate.api.dashscope.ws_support import Outbox, Relay, authenticate, pump_frames, refused
from voxgate.audio.incremental import StreamDecoder, make_decoder
from voxgate.engine.live import Endpointing, LiveStream, open_stream
from voxgate.engine.stream import Final, Interim, StreamEvent
from voxgate.engine.types import RecognitionOptions, Sentence
from voxgate.errors import AudioError, InvalidParameter, Throttling, VoxgateError
from voxgate.jobs.store import owner_of
from voxgate.params import AudioFormat, Flag, LanguageHints, RequestModel, SampleRate, language_code, parse
from voxgate.services import Services

log = logging.getLogger("voxgate.inference_ws")
router = APIRouter()

MAX_FRAME_BYTES = 1024 * 1024  # one binary audio frame (the SDKs send 3.2-12.8 KB)
MAX_TEXT_BYTES = 256 * 1024
SILENCE_RANGE = (200, 6000)
DEFAULT_SILENCE_MS = 800
PROTOCOL = "run-task"  # metrics label
HEARTBEAT_EVERY_S = 10.0  # with heartbeat=true, one heartbeat packet per this much streamed audio without speech


class TaskFailed(Exception):
    """Ends the current task with ``task-failed`` and closes the connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _event(task_id: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"header": {"task_id": task_id, "event": name, "attributes": {}}, "payload": payload}


def _failed(task_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "header": {
            "task_id": task_id,
            "event": "task-failed",
            "error_code": code,
            "error_message": message,
            "attributes": {},
        },
        "payload": {},
    }


def context_text(payload_input: Any) -> str | None:
    """Plain text of a run-task / continue-task ``input`` context (messages or a string)."""
    if not isinstance(payload_input, dict):
        return None
    context = payload_input.get("context", payload_input.get("text"))
    if isinstance(context, str):
        return context.strip() or None
    texts: list[str] = []
    if isinstance(context, list):
        for message in context:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict))
    joined = " ".join(t.strip() for t in texts if t and t.strip())
    return joined or None


class RunTask:
    """One running task: decoder, engine stream (and the task relaying its events), event numbering."""

    def __init__(self, task_id: str, outbox: Outbox, decoder: StreamDecoder) -> None:
        self.task_id = task_id
        self.outbox = outbox
        self.decoder = decoder
        self.relay: Relay | None = None
        self.samples = 0
        self.quiet_from = 0  # samples: where the current stretch without speech (or the last heartbeat) began

    def heartbeat_due(self, in_speech: bool) -> bool:
        """True once per :data:`HEARTBEAT_EVERY_S` of streamed audio without speech."""
        if in_speech:
            self.quiet_from = self.samples
            return False
        if self.samples - self.quiet_from >= HEARTBEAT_EVERY_S * 16000:
            self.quiet_from = self.samples
            return True
        return False

    def send_heartbeat(self) -> None:
        """An empty, non-final sentence marked ``heartbeat`` (sentence_id 0): clients skip it."""
        sentence: dict[str, Any] = {
            "begin_time": round(self.samples / 16),
            "end_time": None,
            "text": "",
            "heartbeat": True,
            "sentence_end": False,
            "sentence_id": 0,
            "words": [],
        }
        self.outbox.put(_event(self.task_id, "result-generated", {"output": {"sentence": sentence}, "usage": None}))

    @staticmethod
    def sentence_id(utterance: int) -> int:
        """The stream numbers its sentences 1, 2, ... in audio order; ids follow that order even when a
        later sentence's interim is sent before an earlier sentence's final."""
        return utterance

    @property
    def stream(self) -> LiveStream | None:
        return self.relay.stream if self.relay is not None else None

    def start(self, stream: LiveStream) -> None:
        self.relay = Relay(stream, self.on_event, PROTOCOL)

    async def drain(self) -> None:
        """Wait until every event of the finished stream has been sent on."""
        if self.relay is not None:
            await self.relay.drain()

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.close()

    def on_event(self, event: StreamEvent) -> None:
        if isinstance(event, Interim):
            if not event.text:
                return
            sentence: dict[str, Any] = {
                "begin_time": event.begin_ms,
                "end_time": None,
                "text": event.text,
                "heartbeat": False,
                "sentence_end": False,
                "sentence_id": self.sentence_id(event.utterance),
                "words": [],
            }
            self.outbox.put(_event(self.task_id, "result-generated", {"output": {"sentence": sentence}, "usage": None}))
        elif isinstance(event, Final):
            if event.sentence is None:
                return
            self.outbox.put(
                _event(
                    self.task_id,
                    "result-generated",
                    {
                        "output": self.final_output(event.sentence, event.utterance),
                        "usage": {"duration": max(1, math.ceil(self.samples / 16000))},
                    },
                )
            )

    def final_output(self, sentence: Sentence, utterance: int) -> dict[str, Any]:
        """``output`` of a final: the sentence, and its English translation when translation is enabled."""
        output: dict[str, Any] = {"sentence": self.final_sentence(sentence, utterance)}
        if sentence.translation is not None:
            output["translations"] = [
                {
                    "sentence_id": self.sentence_id(utterance),
                    "lang": "en",
                    "begin_time": int(sentence.begin_time),
                    "end_time": int(sentence.end_time),
                    "text": sentence.translation,
                    "sentence_end": True,
                }
            ]
        return output

    def final_sentence(self, sentence: Sentence, utterance: int) -> dict[str, Any]:
        out = {
            "begin_time": int(sentence.begin_time),
            "end_time": int(sentence.end_time),
            "text": sentence.text,
            "heartbeat": False,
            "sentence_end": True,
            "sentence_id": self.sentence_id(utterance),
            "words": [
                {
                    "begin_time": int(w.begin_time),
                    "end_time": int(w.end_time),
                    "text": w.text.strip() if sentence.language not in ("zh", "ja", "yue", "ko") else w.text,
                    "punctuation": w.punctuation,
                }
                for w in sentence.words
            ],
        }
        if sentence.speaker_id is not None:
            out["speaker_id"] = sentence.speaker_id
        return out


@websocket_message
class RunTaskParameters(RequestModel):
    """``payload.parameters`` of ``run-task`` (unknown fields ignored, null is absent)."""

    format: AudioFormat = "pcm"
    sample_rate: SampleRate = 16000
    language_hints: LanguageHints = Field(default_factory=list)
    max_sentence_silence: int = Field(DEFAULT_SILENCE_MS, ge=SILENCE_RANGE[0], le=SILENCE_RANGE[1])
    vocabulary_id: str | None = None
    inverse_text_normalization_enabled: Flag = False
    disfluency_removal_enabled: Flag = False
    punctuation_prediction_enabled: Flag = True  # accepted; punctuation always comes from the decoder
    diarization_enabled: Flag = False
    speaker_count: int | None = Field(None, ge=1, le=100, strict=True)
    heartbeat: Flag = False
    multi_threshold_mode_enabled: Flag = False
    translation_enabled: Flag = False
    translation_target_languages: list[str] = Field(default_factory=lambda: ["en"])

    @field_validator("translation_target_languages")
    @classmethod
    def _english_only(cls, value: list[str]) -> list[str]:
        if any(language_code(v) != "en" for v in value):
            raise ValueError("only English ['en'] is available as a translation target")
        return value


def _options(services: Services, params: RunTaskParameters, payload_input: Any, owner: str) -> RecognitionOptions:
    """The engine's options for a run-task (blocking: resolves the caller's vocabulary in the store)."""
    hints = params.language_hints
    return RecognitionOptions(
        language=hints[0] if hints else None,
        language_hints=hints,
        hotwords=services.hotwords_for(params.vocabulary_id, owner),
        context=context_text(payload_input),
        itn=params.inverse_text_normalization_enabled,
        disfluency_removal=params.disfluency_removal_enabled,
        max_sentence_silence_ms=params.max_sentence_silence,
        diarization=params.diarization_enabled,
        speaker_count=params.speaker_count,
        translate_finals=params.translation_enabled,
    )


class Connection:
    """One WebSocket connection: reads frames, runs tasks one after another."""

    def __init__(self, websocket: WebSocket, services: Services, owner: str) -> None:
        self.websocket = websocket
        self.services = services
        self.owner = owner  # vocabularies of other keys are not visible
        self.outbox = Outbox(websocket)
        self.task: RunTask | None = None
        self.last_task_id = ""
        self.silent_since: float | None = None
        self.heartbeat = False

    async def serve(self) -> None:
        idle = self.services.settings.realtime_idle_timeout_s

        async def on_idle() -> None:
            if self.task is not None:
                raise TaskFailed("CLIENT_ERROR", f"request timeout after {idle:g} seconds.")
            await self.outbox.close(1000, "idle timeout")

        try:
            await pump_frames(
                self.websocket, self.outbox, idle, on_text=self.on_text, on_bytes=self.on_audio, on_idle=on_idle
            )
        except TaskFailed as exc:
            task_id = self.task.task_id if self.task else self.last_task_id
            self.outbox.put(_failed(task_id, exc.code, exc.message))
            self.end_task()
            await self.outbox.close(1000, exc.message)
        except VoxgateError as exc:
            task_id = self.task.task_id if self.task else self.last_task_id
            self.outbox.put(_failed(task_id, exc.code, exc.message))
            self.end_task()
            await self.outbox.close(1000, exc.message)
        finally:
            self.end_task()
            self.outbox.cancel()

    def end_task(self) -> None:
        task = self.task
        self.task = None
        if task is not None:
            task.stop()

    # -- text frames --------------------------------------------------------------------------------
    async def on_text(self, text: str) -> None:
        try:
            message, _ = read_event(text, MAX_TEXT_BYTES)
        except ClientEventError as exc:
            raise TaskFailed("InvalidParameter", exc.message) from None
        if not isinstance(message.get("header"), dict):
            raise TaskFailed("InvalidParameter", "the message must be a JSON object with a 'header'")
        header = message["header"]
        payload: dict[str, Any] = message["payload"] if isinstance(message.get("payload"), dict) else {}
        action = header.get("action")
        task_id = header.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise TaskFailed("InvalidParameter", "header.task_id is required")
        if action == "run-task":
            await self.run_task(task_id, payload)
        elif action in ("finish-task", "continue-task"):
            if self.task is None:
                self.last_task_id = task_id
                raise TaskFailed("InvalidParameter", f"{action} received but no task is running")
            if task_id != self.task.task_id:
                raise TaskFailed(
                    "InvalidParameter", f"{action} names task {task_id}, the running task is {self.task.task_id}"
                )
            if action == "finish-task":
                await self.finish_task()
            else:
                self.continue_task(payload)
        else:
            if self.task is None:
                self.last_task_id = task_id
            raise TaskFailed("InvalidParameter", f"unknown action '{action}'")

    async def run_task(self, task_id: str, payload: dict[str, Any]) -> None:
        if self.task is not None:
            raise TaskFailed("InvalidParameter", "a task is already running on this connection; send finish-task first")
        self.last_task_id = task_id
        services = self.services
        kind = payload.get("task")
        if kind not in (None, "", "asr"):
            raise InvalidParameter(f"task '{kind}' is not served here: only speech recognition ('asr')", param="task")
        params = parse(RunTaskParameters, payload.get("parameters"), prefix="parameters")
        profile = services.catalog.resolve(payload.get("model"), mode="realtime")
        fmt, rate = params.format or "pcm", params.sample_rate or 16000
        if profile.sample_rates is not None and rate not in profile.sample_rates:
            allowed = ", ".join(str(r) for r in profile.sample_rates)
            raise InvalidParameter(
                f"model {profile.name} accepts sample_rate {allowed} (got {rate})", param="sample_rate"
            )
        decoder = make_decoder(fmt, rate)
        options = await asyncio.to_thread(_options, services, params, payload.get("input"), self.owner)
        endpointing = Endpointing(
            silence_ms=params.max_sentence_silence,
            max_sentence_ms=10_000 if params.multi_threshold_mode_enabled else 15_000,
        )
        try:
            stream = await open_stream(services.recognizer, profile, options, endpointing)
        except Throttling:
            refused(PROTOCOL)
            raise
        task = RunTask(task_id, self.outbox, decoder)
        task.start(stream)
        self.task = task
        self.heartbeat = params.heartbeat
        self.silent_since = asyncio.get_running_loop().time()
        self.outbox.put(_event(task_id, "task-started", {}))

    def continue_task(self, payload: dict[str, Any]) -> None:
        assert self.task is not None
        text = context_text(payload.get("input"))
        if text and self.task.stream is not None:
            self.task.stream.update_context(text)

    async def finish_task(self) -> None:
        task = self.task
        assert task is not None and task.stream is not None
        try:
            tail = task.decoder.flush()
        except AudioError as exc:
            raise TaskFailed("InvalidParameter", exc.message) from None
        if tail.size:
            task.samples += tail.size
            await task.stream.push(tail)
        try:
            await task.stream.finish()
        except VoxgateError:
            raise
        except Exception as exc:
            log.exception("recognition failed")
            raise TaskFailed("InternalError", f"recognition failed: {exc}") from None
        await task.drain()
        self.outbox.put(_event(task.task_id, "task-finished", {"output": {}}))
        self.end_task()

    # -- binary frames ------------------------------------------------------------------------------
    async def on_audio(self, data: bytes) -> None:
        task = self.task
        if task is None or task.stream is None:
            raise TaskFailed(
                "InvalidParameter",
                "audio received while no task is running: send run-task and wait for task-started first",
            )
        if len(data) > MAX_FRAME_BYTES:
            raise TaskFailed(
                "InvalidParameter",
                f"audio frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES // 1024} KB limit; "
                "send about 100 ms of audio per frame",
            )
        try:
            samples = task.decoder.feed(data)
        except AudioError as exc:
            raise TaskFailed("InvalidParameter", exc.message) from None
        if samples.size:
            task.samples += samples.size
            try:
                await task.stream.push(samples)
            except Exception as exc:
                log.exception("recognition failed")
                raise TaskFailed("InternalError", f"recognition failed: {exc}") from None
            self._check_silence(task)

    def _check_silence(self, task: RunTask) -> None:
        loop = asyncio.get_running_loop()
        assert task.stream is not None
        if self.heartbeat and task.heartbeat_due(task.stream.in_speech):
            task.send_heartbeat()
        if task.stream.in_speech:
            self.silent_since = loop.time()
            return
        idle = self.services.settings.realtime_idle_timeout_s
        if not self.heartbeat and self.silent_since is not None and loop.time() - self.silent_since > idle:
            raise TaskFailed(
                "CLIENT_ERROR",
                f"no speech for {idle:g} seconds (set heartbeat=true to keep the connection through silence)",
            )


async def _serve(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    identity = await authenticate(websocket, services)
    if identity is None:
        return
    await websocket.accept()
    connection = Connection(websocket, services, owner_of(identity))
    try:
        await connection.serve()
    except Exception:  # a bug must not take the server down; the client sees the socket close
        log.exception("run-task connection failed")
        with contextlib.suppress(Exception):
            await websocket.close(code=1011)


@router.websocket("/api-ws/v1/inference")
async def inference(websocket: WebSocket) -> None:
    await _serve(websocket)


@router.websocket("/api-ws/v1/inference/")
async def inference_slash(websocket: WebSocket) -> None:
    await _serve(websocket)
