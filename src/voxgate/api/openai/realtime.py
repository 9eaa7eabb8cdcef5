"""OpenAI Realtime transcription WebSocket (``/v1/realtime?intent=transcription``).

Both session shapes clients send: beta ``transcription_session.update`` (``input_audio_format``,
``input_audio_transcription``, ``turn_detection``, ``input_audio_noise_reduction``) answered with
``transcription_session.updated``, and GA ``session.update`` with ``session.type: "transcription"`` and
``audio.input {format, transcription, turn_detection, noise_reduction}`` answered with ``session.updated``.
Unknown fields are ignored. Audio: base64 pcm16 in ``input_audio_buffer.append``, 24 kHz (resampled) or the
rate the GA format names. Server VAD (``turn_detection.type: server_vad``) or manual turns
(``turn_detection: null`` + ``input_audio_buffer.commit``); ``input_audio_buffer.clear``.

Out: ``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed`` (``item_id``,
``previous_item_id``), ``conversation.item.input_audio_transcription.delta`` (append-only: only words the
interim decoder has confirmed, never taken back) and ``.completed`` (the final transcript, ``usage``), and
``error`` events in OpenAI's shape; a client mistake does not end the session. Keys: ``Authorization: Bearer``
or the ``openai-insecure-api-key.<key>`` subprotocol browsers use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from voxgate.api.auth import check_key
from voxgate.api.dashscope.ws_support import Outbox, record_stream_stats
from voxgate.audio.incremental import PcmDecoder
from voxgate.engine.live import Endpointing, LiveStream, open_stream
from voxgate.engine.stream import Final, Interim, SpeechStarted, SpeechStopped, StreamEvent
from voxgate.engine.types import RecognitionOptions
from voxgate.errors import AudioError, InvalidApiKey, Throttling, VoxgateError
from voxgate.metrics import FINAL_LAG, FIRST_PARTIAL, SESSIONS_OPEN, SESSIONS_REFUSED
from voxgate.services import Services

log = logging.getLogger("voxgate.openai_realtime")
router = APIRouter()

PROTOCOL = "openai-realtime"  # metrics label
KEY_SUBPROTOCOL = "openai-insecure-api-key."
MAX_EVENT_BYTES = 16 * 1024 * 1024
MAX_APPEND_BYTES = 15 * 1024 * 1024
DEFAULT_RATE = 24_000
RATES = (8000, 16000, 24000, 48000)
DEFAULT_TURN: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}
SILENCE_RANGE = (200, 6000)
MANUAL_MAX_MS = 60_000
DEFAULT_MODEL = "gpt-4o-transcribe"


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


class ClientError(Exception):
    """A client mistake: an ``error`` event; the session continues."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _key_headers(websocket: WebSocket) -> dict[str, str]:
    """Handshake headers, with a key from the ``openai-insecure-api-key.<key>`` subprotocol if sent."""
    headers = {k.lower(): v for k, v in websocket.headers.items()}
    for offered in websocket.scope.get("subprotocols", []):
        if str(offered).startswith(KEY_SUBPROTOCOL) and "authorization" not in headers:
            headers["authorization"] = "Bearer " + str(offered)[len(KEY_SUBPROTOCOL) :]
    return headers


def _accepted_subprotocol(websocket: WebSocket) -> str | None:
    offered = [str(p) for p in websocket.scope.get("subprotocols", [])]
    return "realtime" if "realtime" in offered else None


class TranscriptionSession:
    """One transcription session (one socket)."""

    def __init__(self, websocket: WebSocket, services: Services, beta: bool) -> None:
        self.websocket = websocket
        self.services = services
        self.outbox = Outbox(websocket)
        self.id = _id("sess")
        self.beta = beta
        self.rate = DEFAULT_RATE
        self.model = DEFAULT_MODEL
        self.language: str | None = None
        self.prompt: str | None = None
        self.turn: dict[str, Any] | None = dict(DEFAULT_TURN)
        self.noise_reduction: Any = None
        self.stream: LiveStream | None = None
        self.relay: asyncio.Task[None] | None = None
        self.decoder: PcmDecoder | None = None
        self.items: dict[int, str] = {}
        self.committed: set[int] = set()
        self.last_item: str | None = None
        self.sent: dict[int, str] = {}  # per utterance: the confirmed text already sent as deltas
        self.samples = 0
        self.uncommitted = 0  # samples appended since the last commit (manual mode)

    # -- output ---------------------------------------------------------------------------------------
    def send(self, kind: str, **fields: Any) -> None:
        self.outbox.put({"event_id": _id("event"), "type": kind, **fields})

    def error(self, message: str, param: str | None = None, code: str = "invalid_value", **extra: Any) -> None:
        body = {"type": "invalid_request_error", "code": code, "message": message, "param": param, **extra}
        self.send("error", error=body)

    def session_object(self) -> dict[str, Any]:
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt or ""}
        if self.beta:
            return {
                "id": self.id,
                "object": "realtime.transcription_session",
                "input_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": self.turn,
                "input_audio_noise_reduction": self.noise_reduction,
                "include": None,
            }
        return {
            "type": "transcription",
            "id": self.id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.rate},
                    "transcription": transcription,
                    "turn_detection": self.turn,
                    "noise_reduction": self.noise_reduction,
                }
            },
            "include": None,
        }

    def item_id(self, utterance: int) -> str:
        return self.items.setdefault(utterance, _id("item"))

    def commit_events(self, utterance: int) -> None:
        if utterance in self.committed:
            return
        self.committed.add(utterance)
        item = self.item_id(utterance)
        self.send("input_audio_buffer.committed", previous_item_id=self.last_item, item_id=item)
        self.last_item = item

    # -- engine events ----------------------------------------------------------------------------------
    async def _relay(self, stream: LiveStream) -> None:
        async for event in stream.events():
            self.on_event(event)

    def on_event(self, event: StreamEvent) -> None:
        if isinstance(event, SpeechStarted):
            item = self.item_id(event.utterance)
            self.send("input_audio_buffer.speech_started", audio_start_ms=event.begin_ms, item_id=item)
        elif isinstance(event, SpeechStopped):
            self.send(
                "input_audio_buffer.speech_stopped", audio_end_ms=event.end_ms, item_id=self.item_id(event.utterance)
            )
            self.commit_events(event.utterance)
        elif isinstance(event, Interim):
            if event.latency_s is not None:
                FIRST_PARTIAL.labels(PROTOCOL).observe(event.latency_s)
            self._delta(event.utterance, event.stable.strip())
        elif isinstance(event, Final):
            if event.lag_s is not None:
                FINAL_LAG.labels(PROTOCOL).observe(event.lag_s)
            self.commit_events(event.utterance)
            transcript = event.sentence.text if event.sentence is not None else ""
            seconds = max(0.0, (event.end_ms - event.begin_ms) / 1000)
            self.send(
                "conversation.item.input_audio_transcription.completed",
                item_id=self.item_id(event.utterance),
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": math.ceil(seconds)},
            )
            self.sent.pop(event.utterance, None)

    def _delta(self, utterance: int, confirmed: str) -> None:
        """Send the part of the confirmed prefix not sent yet (it only ever grows)."""
        sent = self.sent.get(utterance, "")
        if not confirmed.startswith(sent) or len(confirmed) <= len(sent):
            return
        piece = confirmed[len(sent) :]
        if sent and not piece.startswith(" "):
            piece = " " + piece.lstrip()
        self.sent[utterance] = confirmed
        self.send(
            "conversation.item.input_audio_transcription.delta",
            item_id=self.item_id(utterance),
            content_index=0,
            delta=piece,
        )

    # -- main loop ------------------------------------------------------------------------------------
    async def serve(self) -> None:
        self.send("transcription_session.created" if self.beta else "session.created", session=self.session_object())
        idle = self.services.settings.realtime_idle_timeout_s
        try:
            while True:
                try:
                    message = await asyncio.wait_for(self.websocket.receive(), idle)
                except TimeoutError:
                    self.error(f"no client event for {idle:g} seconds; closing", code="session_expired")
                    await self.outbox.close(1000, "idle timeout")
                    return
                if message["type"] == "websocket.disconnect" or self.outbox.overflowed or self.outbox.broken:
                    return
                if message.get("text") is not None:
                    await self.on_text(message["text"])
                elif message.get("bytes") is not None:
                    self.error("binary frames are not accepted: send audio as base64 in input_audio_buffer.append")
        finally:
            if self.relay is not None:
                self.relay.cancel()
            if self.stream is not None:
                self.stream.close()
                record_stream_stats(self.stream)
                SESSIONS_OPEN.labels(PROTOCOL).dec()
            self.outbox.cancel()

    async def on_text(self, text: str) -> None:
        event_id: str | None = None
        try:
            if len(text) > MAX_EVENT_BYTES:
                raise ClientError("event too large")
            try:
                message = json.loads(text)
            except json.JSONDecodeError:
                raise ClientError("the event is not valid JSON", code="invalid_json") from None
            if not isinstance(message, dict):
                raise ClientError("the event must be a JSON object", code="invalid_event")
            event_id = message.get("event_id") if isinstance(message.get("event_id"), str) else None
            kind = message.get("type")
            if kind == "transcription_session.update":
                self.beta = True
                self.update_beta(message.get("session"))
            elif kind == "session.update":
                self.beta = False
                self.update_ga(message.get("session"))
            elif kind == "input_audio_buffer.append":
                await self.append(message.get("audio"))
            elif kind == "input_audio_buffer.commit":
                await self.commit()
            elif kind == "input_audio_buffer.clear":
                if self.stream is not None:
                    self.stream.clear()
                self.uncommitted = 0
                self.send("input_audio_buffer.cleared")
            else:
                raise ClientError(f"unknown or unsupported event type '{kind}'", "type", "invalid_event_type")
        except ClientError as exc:
            self.error(exc.message, exc.param, exc.code, event_id=event_id)
        except AudioError as exc:
            self.error(exc.message, "audio", "invalid_audio", event_id=event_id)
        except Throttling as exc:
            SESSIONS_REFUSED.labels(PROTOCOL, "capacity").inc()
            self.send("error", error={"type": "server_error", "code": "rate_limit_exceeded", "message": exc.message})
            await self.outbox.close(1013, "capacity full")
        except VoxgateError as exc:
            self.error(exc.message, exc.param, exc.code, event_id=event_id)

    # -- session updates --------------------------------------------------------------------------------
    def update_beta(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise ClientError("session must be an object", "session")
        fmt = session.get("input_audio_format", "pcm16")
        if fmt != "pcm16":
            raise ClientError("input_audio_format must be 'pcm16'", "session.input_audio_format")
        self._apply(
            session.get("input_audio_transcription"),
            session.get("turn_detection", self.turn) if "turn_detection" in session else self.turn,
            "session",
            rate=DEFAULT_RATE,
        )
        if "input_audio_noise_reduction" in session:
            self.noise_reduction = session["input_audio_noise_reduction"]
        self.send("transcription_session.updated", session=self.session_object())

    def update_ga(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise ClientError("session must be an object", "session")
        if session.get("type", "transcription") != "transcription":
            raise ClientError("only transcription sessions are served here: session.type must be 'transcription'")
        audio: dict[str, Any] = session["audio"] if isinstance(session.get("audio"), dict) else {}
        source: dict[str, Any] = audio["input"] if isinstance(audio.get("input"), dict) else {}
        rate = self.rate
        fmt = source.get("format")
        if isinstance(fmt, dict):
            if fmt.get("type", "audio/pcm") != "audio/pcm":
                raise ClientError("audio.input.format.type must be 'audio/pcm'", "session.audio.input.format.type")
            rate = fmt.get("rate", DEFAULT_RATE)
            if rate not in RATES:
                rates = ", ".join(str(r) for r in RATES)
                raise ClientError(f"audio.input.format.rate must be one of {rates}", "session.audio.input.format.rate")
        turn = source.get("turn_detection", self.turn) if "turn_detection" in source else self.turn
        self._apply(source.get("transcription"), turn, "session.audio.input", rate=rate)
        if "noise_reduction" in source:
            self.noise_reduction = source["noise_reduction"]
        self.send("session.updated", session=self.session_object())

    def _apply(self, transcription: Any, turn: Any, where: str, *, rate: int) -> None:
        language, prompt, model = self.language, self.prompt, self.model
        if transcription is not None:
            if not isinstance(transcription, dict):
                raise ClientError("transcription must be an object", f"{where}.transcription")
            if transcription.get("language") is not None:
                value = transcription["language"]
                if not isinstance(value, str) or not 2 <= len(value.strip()) <= 3:
                    raise ClientError("language must be an ISO-639-1 code such as 'en'", f"{where}.transcription")
                language = value.strip().lower()
            if isinstance(transcription.get("prompt"), str):
                prompt = transcription["prompt"].strip() or None
            if isinstance(transcription.get("model"), str):
                model = transcription["model"]
        turn = self._turn(turn, f"{where}.turn_detection")
        if self.stream is not None and ((turn is None) != (self.turn is None) or rate != self.rate):
            raise ClientError("turn_detection on/off and the audio rate cannot change after audio was sent", where)
        self.language, self.prompt, self.model, self.turn, self.rate = language, prompt, model, turn, rate
        if self.stream is not None:
            self.stream.update_context(prompt)

    def _turn(self, turn: Any, where: str) -> dict[str, Any] | None:
        if turn is None:
            return None
        if not isinstance(turn, dict):
            raise ClientError("turn_detection must be an object or null", where)
        kind = turn.get("type", "server_vad")
        if kind not in ("server_vad", "semantic_vad"):
            raise ClientError("turn_detection.type must be 'server_vad' or 'semantic_vad'", f"{where}.type")
        merged = {**DEFAULT_TURN, **{k: v for k, v in turn.items() if k in DEFAULT_TURN and v is not None}}
        merged["type"] = "server_vad"
        threshold, silence = merged["threshold"], merged["silence_duration_ms"]
        if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
            raise ClientError("turn_detection.threshold must be between 0 and 1", f"{where}.threshold")
        if not isinstance(silence, int) or not SILENCE_RANGE[0] <= silence <= SILENCE_RANGE[1]:
            raise ClientError(
                f"turn_detection.silence_duration_ms must be an integer from {SILENCE_RANGE[0]} to {SILENCE_RANGE[1]}",
                f"{where}.silence_duration_ms",
            )
        return merged

    # -- audio ----------------------------------------------------------------------------------------
    async def _ensure_stream(self) -> LiveStream:
        if self.stream is not None:
            return self.stream
        turn = self.turn
        endpointing = Endpointing(
            manual=turn is None,
            threshold=min(0.9, max(0.1, float(turn["threshold"]))) if turn else 0.5,
            silence_ms=int(turn["silence_duration_ms"]) if turn else DEFAULT_TURN["silence_duration_ms"],
            max_sentence_ms=15_000 if turn else MANUAL_MAX_MS,
        )
        options = RecognitionOptions(
            language=self.language,
            language_hints=[self.language] if self.language else [],
            context=self.prompt,
            max_sentence_silence_ms=endpointing.silence_ms,
        )
        profile = self.services.catalog.resolve("qwen3-asr-flash-realtime", mode="realtime")
        stream = await open_stream(self.services.recognizer, profile, options, endpointing)
        SESSIONS_OPEN.labels(PROTOCOL).inc()
        self.decoder = PcmDecoder(self.rate)
        self.stream = stream
        self.relay = asyncio.ensure_future(self._relay(stream))
        return stream

    async def append(self, audio: Any) -> None:
        if not isinstance(audio, str):
            raise ClientError("audio must be a base64 string", "audio")
        if len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
            raise ClientError("one append may carry at most 15 MiB of audio", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("audio is not valid base64", "audio") from None
        stream = await self._ensure_stream()
        assert self.decoder is not None
        samples = self.decoder.feed(data)
        if samples.size:
            self.samples += samples.size
            self.uncommitted += samples.size
            await stream.push(samples)

    async def commit(self) -> None:
        if self.turn is not None:
            raise ClientError(
                "input_audio_buffer.commit is for manual turns (turn_detection: null); server VAD commits by itself",
                code="invalid_request",
            )
        if self.stream is None or self.uncommitted < 1600:
            raise ClientError(
                "buffer too small: commit needs at least 100 ms of appended audio",
                code="input_audio_buffer_commit_empty",
            )
        if not await self.stream.commit():
            raise ClientError("the input audio buffer holds too little audio", code="input_audio_buffer_commit_empty")
        self.uncommitted = 0


async def _refuse_handshake(websocket: WebSocket, exc: InvalidApiKey) -> None:
    body = {"error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": exc.message}}
    try:
        await websocket.send_denial_response(JSONResponse(body, status_code=401))
    except RuntimeError:  # the server has no denial-response extension: plain refusal
        await websocket.close(code=1008, reason=exc.message)


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    try:
        check_key(services.settings, _key_headers(websocket))
    except InvalidApiKey as exc:
        await _refuse_handshake(websocket, exc)
        return
    await websocket.accept(subprotocol=_accepted_subprotocol(websocket))
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "")
    session = TranscriptionSession(websocket, services, beta)
    if websocket.query_params.get("intent") != "transcription":
        message = "only transcription sessions are served here: connect with ?intent=transcription"
        session.error(message, "intent", "invalid_intent")
        await session.outbox.close(1008, "transcription only")
        return
    try:
        await session.serve()
    except Exception:  # a bug must not take the server down; the client sees the socket close
        log.exception("realtime transcription session failed")
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(code=1011)
