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

import contextlib
import logging
import math
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketState

from voxgate.api.auth import check_key
from voxgate.api.body import websocket_message
from voxgate.api.client_events import (
    BINARY_FRAME_MESSAGE,
    ClientEventError,
    ConversationItems,
    audio_bytes,
    new_id,
    read_event,
)
from voxgate.api.dashscope.ws_support import Outbox, Relay, pump_frames, refused
from voxgate.audio.incremental import PcmDecoder
from voxgate.engine.live import Endpointing, LiveStream, open_stream
from voxgate.engine.stream import Final, Interim, SpeechStarted, SpeechStopped, StreamEvent
from voxgate.engine.types import RecognitionOptions
from voxgate.errors import AudioError, InvalidApiKey, InvalidParameter, Throttling, VoxgateError
from voxgate.params import LanguageCode, RequestModel, parse
from voxgate.services import Services

log = logging.getLogger("voxgate.openai_realtime")
M = TypeVar("M", bound=BaseModel)
router = APIRouter()

PROTOCOL = "openai-realtime"  # metrics label
KEY_SUBPROTOCOL = "openai-insecure-api-key."
DEFAULT_RATE: Literal[24000] = 24000
DEFAULT_TURN: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}
SILENCE_RANGE = (200, 6000)
MANUAL_MAX_MS = 60_000
DEFAULT_MODEL = "gpt-4o-transcribe"


class TranscriptionSettings(RequestModel):
    model: str | None = None
    language: LanguageCode = None
    prompt: str | None = None


class TurnDetection(RequestModel):
    """Server VAD; ``semantic_vad`` is served as server VAD. Null in an update means manual turns."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = Field(DEFAULT_TURN["threshold"], ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(DEFAULT_TURN["prefix_padding_ms"], ge=0, le=5000)
    silence_duration_ms: int = Field(
        DEFAULT_TURN["silence_duration_ms"], ge=SILENCE_RANGE[0], le=SILENCE_RANGE[1], strict=True
    )


@websocket_message
class BetaSessionUpdate(RequestModel):
    """``session`` of a beta ``transcription_session.update``."""

    input_audio_format: Literal["pcm16"] = "pcm16"
    input_audio_transcription: TranscriptionSettings | None = None
    turn_detection: TurnDetection | None = None


class AudioFormat(RequestModel):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[8000, 16000, 24000, 48000] = DEFAULT_RATE


class AudioInput(RequestModel):
    format: AudioFormat | None = None
    transcription: TranscriptionSettings | None = None
    turn_detection: TurnDetection | None = None


class AudioSettings(RequestModel):
    input: AudioInput | None = None


@websocket_message
class SessionUpdate(RequestModel):
    """``session`` of a GA ``session.update`` (transcription sessions only)."""

    type: Literal["transcription"] = "transcription"
    audio: AudioSettings | None = None


def _parse(model: type[M], session: Any) -> M:
    if not isinstance(session, dict):
        raise ClientEventError("invalid_value", "session must be an object", "session")
    try:
        return parse(model, session, prefix="session")
    except InvalidParameter as exc:
        raise ClientEventError("invalid_value", exc.message, exc.param) from None


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
        self.id = new_id("sess", 22)
        self.beta = beta
        self.rate: int = DEFAULT_RATE
        self.model = DEFAULT_MODEL
        self.language: str | None = None
        self.prompt: str | None = None
        self.turn: dict[str, Any] | None = dict(DEFAULT_TURN)
        self.noise_reduction: Any = None
        self.relay: Relay | None = None
        self.decoder: PcmDecoder | None = None
        self.items = ConversationItems(digits=22)
        self.sent: dict[int, str] = {}  # per utterance: the confirmed text already sent as deltas
        self.samples = 0
        self.uncommitted = 0  # samples appended since the last commit (manual mode)

    # -- output ---------------------------------------------------------------------------------------
    def send(self, kind: str, **fields: Any) -> None:
        self.outbox.put({"event_id": new_id("event", 22), "type": kind, **fields})

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
        return self.items.item_id(utterance)

    def commit_events(self, utterance: int) -> None:
        committed = self.items.commit(utterance)
        if committed is not None:
            previous, item = committed
            self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item)

    # -- engine events ----------------------------------------------------------------------------------
    @property
    def stream(self) -> LiveStream | None:
        return self.relay.stream if self.relay is not None else None

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
            self._delta(event.utterance, event.stable.strip())
        elif isinstance(event, Final):
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

        async def on_idle() -> None:
            self.error(f"no client event for {idle:g} seconds; closing", code="session_expired")
            await self.outbox.close(1000, "idle timeout")

        async def on_bytes(_data: bytes) -> None:
            self.error(BINARY_FRAME_MESSAGE, code="invalid_event")

        try:
            await pump_frames(
                self.websocket, self.outbox, idle, on_text=self.on_text, on_bytes=on_bytes, on_idle=on_idle
            )
        finally:
            if self.relay is not None:
                self.relay.close()
            self.outbox.cancel()

    async def on_text(self, text: str) -> None:
        event_id: str | None = None
        try:
            message, event_id = read_event(text)
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
                raise ClientEventError("invalid_event_type", f"unknown or unsupported event type '{kind}'", "type")
        except ClientEventError as exc:
            self.error(exc.message, exc.param, exc.code, event_id=event_id)
        except AudioError as exc:
            self.error(exc.message, "audio", "invalid_audio", event_id=event_id)
        except Throttling as exc:
            refused(PROTOCOL)
            self.send("error", error={"type": "server_error", "code": "rate_limit_exceeded", "message": exc.message})
            await self.outbox.close(1013, "capacity full")
        except VoxgateError as exc:
            self.error(exc.message, exc.param, exc.code, event_id=event_id)

    # -- session updates --------------------------------------------------------------------------------
    def update_beta(self, session: Any) -> None:
        update = _parse(BetaSessionUpdate, session)
        assert isinstance(session, dict)
        self._apply(update.input_audio_transcription, session, update.turn_detection, DEFAULT_RATE)
        if "input_audio_noise_reduction" in session:
            self.noise_reduction = session["input_audio_noise_reduction"]
        self.send("transcription_session.updated", session=self.session_object())

    def update_ga(self, session: Any) -> None:
        update = _parse(SessionUpdate, session)
        audio = update.audio.input if update.audio is not None and update.audio.input is not None else AudioInput()
        raw = session.get("audio", {}).get("input", {}) if isinstance(session, dict) else {}
        rate = audio.format.rate if audio.format is not None else self.rate
        self._apply(audio.transcription, raw if isinstance(raw, dict) else {}, audio.turn_detection, rate)
        if isinstance(raw, dict) and "noise_reduction" in raw:
            self.noise_reduction = raw["noise_reduction"]
        self.send("session.updated", session=self.session_object())

    def _apply(
        self, transcription: TranscriptionSettings | None, raw: dict[str, Any], turn: TurnDetection | None, rate: int
    ) -> None:
        """Apply a validated update; ``raw`` tells an explicit ``turn_detection: null`` (manual turns) apart."""
        turn_detection = self.turn
        if "turn_detection" in raw:
            turn_detection = None if turn is None else {**turn.model_dump(), "type": "server_vad"}
        if self.stream is not None and ((turn_detection is None) != (self.turn is None) or rate != self.rate):
            message = "turn_detection on/off and the audio rate cannot change after audio was sent"
            raise ClientEventError("invalid_value", message, "session")
        if transcription is not None:
            self.language = transcription.language or self.language
            self.prompt = transcription.prompt.strip() or None if transcription.prompt is not None else self.prompt
            self.model = transcription.model or self.model
        self.turn, self.rate = turn_detection, rate
        if self.stream is not None:
            self.stream.update_context(self.prompt)

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
        self.decoder = PcmDecoder(self.rate)
        self.relay = Relay(stream, self.on_event, PROTOCOL)
        return stream

    async def append(self, audio: Any) -> None:
        data = audio_bytes(audio)
        stream = await self._ensure_stream()
        assert self.decoder is not None
        samples = self.decoder.feed(data)
        if samples.size:
            self.samples += samples.size
            self.uncommitted += samples.size
            await stream.push(samples)

    async def commit(self) -> None:
        if self.turn is not None:
            raise ClientEventError(
                "invalid_request",
                "input_audio_buffer.commit is for manual turns (turn_detection: null); server VAD commits by itself",
            )
        if self.stream is None or self.uncommitted < 1600:
            raise ClientEventError(
                "input_audio_buffer_commit_empty", "buffer too small: commit needs at least 100 ms of appended audio"
            )
        if not await self.stream.commit():
            raise ClientEventError("input_audio_buffer_commit_empty", "the input audio buffer holds too little audio")
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
