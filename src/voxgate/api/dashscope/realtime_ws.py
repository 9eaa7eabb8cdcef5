"""Realtime session WebSocket protocol (``/api-ws/v1/realtime?model=...``): Qwen-ASR real-time.

JSON events in both directions, audio as base64 inside ``input_audio_buffer.append``. ``session.created``
on connect; ``session.update`` -> ``session.updated``; server VAD (default) or manual mode
(``turn_detection: null`` + ``input_audio_buffer.commit``); interim ``...transcription.text`` (``text`` =
confirmed prefix, ``stash`` = unconfirmed suffix) and final ``...transcription.completed``;
``session.finish`` -> pending completions -> ``session.finished``. Client mistakes produce an ``error``
event of type ``invalid_request_error`` and keep the socket open. No speech-emotion model is bundled, so
the ``emotion`` field is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BeforeValidator, Field

from voxgate.api.body import websocket_message
from voxgate.api.client_events import (
    BINARY_FRAME_MESSAGE,
    ClientEventError,
    ConversationItems,
    audio_bytes,
    new_id,
    read_event,
)
from voxgate.api.dashscope.ws_support import Outbox, Relay, authenticate, pump_frames, refused
from voxgate.audio.incremental import StreamDecoder, make_decoder
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.live import Endpointing, LiveStream, open_stream, partial_model_for, prior_cost
from voxgate.engine.stream import Final, Interim, SpeechStarted, SpeechStopped, StreamEvent
from voxgate.engine.types import RecognitionOptions
from voxgate.errors import AudioError, InvalidParameter, Throttling, VoxgateError
from voxgate.params import LanguageCode, RequestModel, parse
from voxgate.services import Services

log = logging.getLogger("voxgate.realtime_ws")
router = APIRouter()

DEFAULT_THRESHOLD = 0.2
DEFAULT_SILENCE_MS = 800
MANUAL_MAX_MS = 60_000
PROTOCOL = "realtime"  # metrics label
FINISH_GRACE_S = 3.0
OMNI_EVENTS = frozenset({"response.create", "response.cancel", "conversation.item.create", "input_image_buffer.append"})


def vad_threshold(threshold: float) -> float:
    """Map the service's threshold (-1..1, default 0.2) onto a Silero speech probability."""
    return min(0.9, max(0.1, 0.4 + 0.5 * threshold))


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class TurnDetection(RequestModel):
    """``session.turn_detection``: server VAD (null in the update means manual turns)."""

    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(DEFAULT_THRESHOLD, ge=-1, le=1)
    silence_duration_ms: int = Field(DEFAULT_SILENCE_MS, ge=200, le=6000, strict=True)


class Corpus(RequestModel):
    text: str | None = None


class Transcription(RequestModel):
    """``session.input_audio_transcription``: language (null: detect) and context text."""

    language: LanguageCode = None
    corpus: Corpus | None = None


@websocket_message
class SessionUpdate(RequestModel):
    """``session`` of a ``session.update`` event."""

    input_audio_format: Annotated[Literal["pcm", "pcm16", "opus"] | None, BeforeValidator(_lower)] = None
    sample_rate: Literal[8000, 16000] | None = None
    input_audio_transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None


class Session:
    """One realtime session (one socket)."""

    def __init__(self, websocket: WebSocket, services: Services, profile: EngineProfile, model: str) -> None:
        self.websocket = websocket
        self.services = services
        self.profile = profile
        self.model = model
        self.id = new_id("sess")
        self.outbox = Outbox(websocket)
        self.format = "pcm16"
        self.sample_rate = 16000
        self.language: str | None = None
        self.context: str | None = None
        self.turn_detection: dict[str, Any] | None = {
            "type": "server_vad",
            "threshold": DEFAULT_THRESHOLD,
            "silence_duration_ms": DEFAULT_SILENCE_MS,
        }
        self.relay: Relay | None = None
        self.decoder: StreamDecoder | None = None
        self.audio_started = False
        self.items = ConversationItems(first_previous="")
        self.pending_audio = False
        self.finished = False

    # -- events out ---------------------------------------------------------------------------------
    def send(self, kind: str, **fields: Any) -> None:
        self.outbox.put({"event_id": new_id("event"), "type": kind, **fields})

    def error(
        self,
        code: str,
        message: str,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        self.send("error", error={"type": kind, "code": code, "message": message, "param": param, "event_id": event_id})

    def session_object(self) -> dict[str, Any]:
        transcription: dict[str, Any] | None = None
        if self.language or self.context:
            transcription = {"language": self.language}
            if self.context:
                transcription["corpus"] = {"text": self.context}
        return {
            "id": self.id,
            "object": "realtime.session",
            "model": self.model,
            "modalities": ["text"],
            "input_audio_format": self.format,
            "sample_rate": self.sample_rate,
            "input_audio_transcription": transcription,
            "turn_detection": self.turn_detection,
        }

    def item_id(self, utterance: int) -> str:
        return self.items.item_id(utterance)

    def commit_events(self, utterance: int) -> None:
        committed = self.items.commit(utterance)
        if committed is None:
            return
        previous, item = committed
        self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item)
        self.send(
            "conversation.item.created",
            previous_item_id=previous,
            item={
                "id": item,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        )

    @property
    def stream(self) -> LiveStream | None:
        return self.relay.stream if self.relay is not None else None

    def on_event(self, event: StreamEvent) -> None:
        language = (self.stream.language if self.stream else None) or self.language
        if isinstance(event, SpeechStarted):
            self.send(
                "input_audio_buffer.speech_started",
                audio_start_ms=event.begin_ms,
                item_id=self.item_id(event.utterance),
            )
        elif isinstance(event, SpeechStopped):
            self.send(
                "input_audio_buffer.speech_stopped", audio_end_ms=event.end_ms, item_id=self.item_id(event.utterance)
            )
            self.commit_events(event.utterance)
        elif isinstance(event, Interim):
            if self.turn_detection is None:
                return
            self.send(
                "conversation.item.input_audio_transcription.text",
                item_id=self.item_id(event.utterance),
                content_index=0,
                language=language,
                text=event.stable,
                stash=event.unstable,
            )
        elif isinstance(event, Final):
            self.commit_events(event.utterance)
            transcript = event.sentence.text if event.sentence is not None else ""
            self.send(
                "conversation.item.input_audio_transcription.completed",
                item_id=self.item_id(event.utterance),
                content_index=0,
                language=event.language or language,
                transcript=transcript,
            )

    # -- main loop ----------------------------------------------------------------------------------
    async def serve(self) -> None:
        try:  # refused at connect when the machine has no headroom; admitted when the audio starts
            self.services.recognizer.scheduler.check(self._prior())
        except Throttling as exc:
            await self._refuse(exc)
            return
        self.send("session.created", session=self.session_object())
        idle = self.services.settings.realtime_idle_timeout_s

        async def on_idle() -> None:
            self.error("timeout", f"no client event for {idle:g} seconds; closing", kind="server_error")
            await self.outbox.close(1000, "idle timeout")

        async def on_bytes(_data: bytes) -> None:
            self.error("invalid_event", BINARY_FRAME_MESSAGE)

        try:
            finished = await pump_frames(
                self.websocket,
                self.outbox,
                idle,
                on_text=self.on_text,
                on_bytes=on_bytes,
                on_idle=on_idle,
                done=lambda: self.finished,
            )
            if not finished:
                return
            await self.outbox.drain(timeout=10)
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                while True:  # give the client a moment to close first, as the protocol expects
                    message = await asyncio.wait_for(self.websocket.receive(), FINISH_GRACE_S)
                    if message["type"] == "websocket.disconnect":
                        return
            await self.outbox.close(1000, "session finished")
        finally:
            if self.relay is not None:
                self.relay.close()
            self.outbox.cancel()

    def _prior(self) -> float:
        recognizer = self.services.recognizer
        return prior_cost(recognizer, partial_model_for(recognizer, self.profile, self._options()))

    def _options(self) -> RecognitionOptions:
        return RecognitionOptions(
            language=self.language, language_hints=[self.language] if self.language else [], context=self.context
        )

    async def _refuse(self, exc: Throttling) -> None:
        refused(PROTOCOL)
        self.error(exc.code, exc.message, kind="server_error")
        await self.outbox.close(1013, "capacity full")

    async def on_text(self, text: str) -> None:
        event_id: str | None = None
        try:
            message, event_id = read_event(text)
            kind = message.get("type")
            if kind == "session.update":
                await self.on_update(message.get("session"))
            elif kind == "input_audio_buffer.append":
                await self.on_append(message.get("audio"))
            elif kind == "input_audio_buffer.commit":
                await self.on_commit()
            elif kind == "input_audio_buffer.clear":
                await self.on_clear()
            elif kind == "session.finish":
                await self.on_finish()
            elif kind in OMNI_EVENTS:
                raise ClientEventError(
                    "unsupported_event", f"'{kind}' is not supported by {self.model} (speech recognition only)", "type"
                )
            else:
                raise ClientEventError("invalid_event_type", f"unknown event type '{kind}'", "type")
        except ClientEventError as exc:
            self.error(exc.code, exc.message, exc.param, event_id)
        except AudioError as exc:
            self.error("invalid_audio", exc.message, exc.param or "audio", event_id)
        except VoxgateError as exc:
            self.error(exc.code, exc.message, exc.param, event_id)

    async def on_update(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise ClientEventError("invalid_value", "session must be an object", "session")
        try:
            update = parse(SessionUpdate, session, prefix="session")
        except InvalidParameter as exc:
            raise ClientEventError("invalid_value", exc.message, exc.param) from None
        fmt = update.input_audio_format or self.format
        rate = update.sample_rate or self.sample_rate
        turn = self.turn_detection
        if "turn_detection" in session:  # null: manual turns
            detection = update.turn_detection
            turn = None if detection is None else detection.model_dump()
        language, context = self.language, self.context
        transcription = update.input_audio_transcription
        raw_transcription = session.get("input_audio_transcription")
        if transcription is not None and isinstance(raw_transcription, dict):
            if "language" in raw_transcription:
                language = transcription.language
            if transcription.corpus is not None and transcription.corpus.text is not None:
                context = transcription.corpus.text.strip() or None
        changes_stream = (fmt, rate, turn is None) != (self.format, self.sample_rate, self.turn_detection is None)
        if self.audio_started and changes_stream:
            raise ClientEventError(
                "invalid_value",
                "input_audio_format, sample_rate and turn_detection cannot change after audio has been sent",
                "session",
            )
        self.format, self.sample_rate, self.turn_detection = fmt, rate, turn
        self.language, self.context = language, context
        if self.stream is not None:
            self.stream.update_context(context)
        self.send("session.updated", session=self.session_object())

    async def _ensure_stream(self) -> LiveStream:
        if self.stream is not None:
            return self.stream
        turn = self.turn_detection
        endpointing = Endpointing(
            manual=turn is None,
            threshold=vad_threshold(turn["threshold"]) if turn else 0.5,
            silence_ms=turn["silence_duration_ms"] if turn else DEFAULT_SILENCE_MS,
            max_sentence_ms=15_000 if turn else MANUAL_MAX_MS,
            partials=turn is not None,  # manual mode: finals only
        )
        try:
            stream = await open_stream(self.services.recognizer, self.profile, self._options(), endpointing)
        except Throttling as exc:
            await self._refuse(exc)
            self.finished = True
            raise ClientEventError(exc.code, exc.message) from None
        self.decoder = make_decoder("opus" if self.format == "opus" else "pcm", self.sample_rate)
        self.relay = Relay(stream, self.on_event, PROTOCOL)
        return stream

    async def on_append(self, audio: Any) -> None:
        if self.finished:
            raise ClientEventError("session_finished", "the session is finishing; no more audio is accepted")
        data = audio_bytes(audio)
        stream = await self._ensure_stream()
        self.audio_started = True
        assert self.decoder is not None
        samples = self.decoder.feed(data)
        if samples.size:
            self.pending_audio = True
            await stream.push(samples)

    async def on_commit(self) -> None:
        if self.turn_detection is not None:
            raise ClientEventError(
                "invalid_request",
                "input_audio_buffer.commit is only allowed in manual mode "
                "(turn_detection: null); server VAD commits by itself",
            )
        if self.stream is None or not self.pending_audio:
            raise ClientEventError("input_audio_buffer_commit_empty", "the input audio buffer is empty")
        if not await self.stream.commit():
            raise ClientEventError("input_audio_buffer_commit_empty", "the input audio buffer holds too little audio")
        self.pending_audio = False

    async def on_clear(self) -> None:
        if self.stream is not None and self.turn_detection is None:
            self.stream.clear()
        self.pending_audio = False
        self.send("input_audio_buffer.cleared")

    async def on_finish(self) -> None:
        self.finished = True
        stream = self.stream
        if stream is not None:
            if self.decoder is not None:
                tail = self.decoder.flush()
                if tail.size:
                    await stream.push(tail)
            if self.turn_detection is None and self.pending_audio and stream.in_speech:
                await stream.commit()
            if self.turn_detection is None:
                stream.clear()
            await stream.finish()
            if self.relay is not None:
                await self.relay.drain()
        self.send("session.finished")


@router.websocket("/api-ws/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    if await authenticate(websocket, services) is None:
        return
    await websocket.accept()
    model = websocket.query_params.get("model") or ""
    try:
        profile = services.catalog.resolve(model, mode="realtime")
    except VoxgateError as exc:
        outbox = Outbox(websocket)
        outbox.put(
            {
                "event_id": new_id("event"),
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": exc.code,
                    "message": exc.message,
                    "param": "model",
                    "event_id": None,
                },
            }
        )
        await outbox.close(1008, "unknown model")
        return
    session = Session(websocket, services, profile, model)
    try:
        await session.serve()
    except Exception:
        log.exception("realtime session failed")
        with contextlib.suppress(Exception):
            await websocket.close(code=1011)
