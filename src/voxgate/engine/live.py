"""Opening real-time streams: the engine decides models, price and configuration; adapters only speak protocol.

:func:`open_stream` chooses the interim and final models for the session's options, prices the stream in
core-seconds per second of audio, admits it to the recognizer's scheduler (or raises
:class:`~voxgate.errors.Throttling`), builds its :class:`~voxgate.engine.stream.StreamConfig` and returns a
:class:`LiveStream`: ``push`` / ``commit`` / ``clear`` / ``finish`` / ``update_context`` / ``close`` and an
async iterator of typed events (:meth:`LiveStream.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import numpy as np

from voxgate.engine.catalog import EngineProfile
from voxgate.engine.partial import WhisperStreamEngine
from voxgate.engine.recognizer import Recognizer
from voxgate.engine.scheduler import Ticket
from voxgate.engine.stream import (
    HEAD_FINAL_MS,
    SAMPLE_RATE,
    SPLIT_FINAL_MS,
    Final,
    Interim,
    RecognitionStream,
    SpeechStarted,
    SpeechStopped,
    StreamConfig,
    StreamEvent,
)
from voxgate.engine.types import RecognitionOptions

# Expected cost of a stream before its own is measured, in core-seconds per second of audio (measured on
# real read speech, 2 cores, one thread per decode: base finals on a short window cost 0.11-0.15, one
# interim per second 0.1-0.15 with tiny.en and 0.3-0.4 with base).
ENGLISH_PRIOR = 0.3  # tiny.en interims
MULTILINGUAL_PRIOR = 0.55  # base interims
EVENT_QUEUE_LIMIT = 1024
NO_PARTIALS_MS = 10**9


@dataclass(frozen=True, slots=True)
class Endpointing:
    """How sentences end. ``manual``: only :meth:`LiveStream.commit` ends one; else silence of
    ``silence_ms`` (speech probability below ``threshold``) or ``max_sentence_ms`` of speech."""

    manual: bool = False
    silence_ms: int = 800
    threshold: float = 0.5
    max_sentence_ms: int = 15_000
    partials: bool = True


def partial_model_for(recognizer: Recognizer, profile: EngineProfile, options: RecognitionOptions) -> str:
    """English sessions get the small English model for interim results; others the profile's model."""
    if profile.partial_model:
        return profile.partial_model
    english = options.language == "en" or options.language_hints[:1] == ["en"]
    if english and recognizer.config.english_model:
        return recognizer.config.english_model
    return profile.model


def prior_cost(recognizer: Recognizer, partial_model: str) -> float:
    return ENGLISH_PRIOR if partial_model == recognizer.config.english_model else MULTILINGUAL_PRIOR


async def open_stream(
    recognizer: Recognizer,
    profile: EngineProfile,
    options: RecognitionOptions,
    endpointing: Endpointing | None = None,
) -> LiveStream:
    """Admit and build a real-time stream (raises ``Throttling`` when the machine has no headroom)."""
    endpointing = endpointing or Endpointing()
    partial_model = partial_model_for(recognizer, profile, options)
    scheduler = recognizer.scheduler
    ticket = scheduler.admit(prior_cost(recognizer, partial_model))
    try:
        engine = await asyncio.to_thread(
            WhisperStreamEngine,
            recognizer,
            profile,
            options,
            partial_model=partial_model,
            fast_finals=recognizer.config.fast_finals,
        )
    except BaseException:
        scheduler.release(ticket)
        raise
    known = options.language or ("en" if partial_model == recognizer.config.english_model else None)
    whole = options.diarization or options.translate_finals
    config = StreamConfig(
        threshold=endpointing.threshold,
        silence_ms=endpointing.silence_ms,
        manual=endpointing.manual,
        max_sentence_ms=endpointing.max_sentence_ms,
        language=known,
        # one utterance, one voice, one translation: labelled and translated whole
        split_final_ms=0 if whole else SPLIT_FINAL_MS,
        head_final_ms=0 if whole else HEAD_FINAL_MS,
    )
    if not endpointing.partials:
        config = replace(config, first_partial_ms=NO_PARTIALS_MS)
    return LiveStream(recognizer, engine, ticket, config)


class LiveStream:
    """One admitted real-time stream. Drive it from one coroutine; read its events from another."""

    def __init__(
        self, recognizer: Recognizer, engine: WhisperStreamEngine, ticket: Ticket, config: StreamConfig
    ) -> None:
        self._recognizer = recognizer
        self._engine = engine
        self._ticket = ticket
        self._events: asyncio.Queue[StreamEvent | None] = asyncio.Queue(EVENT_QUEUE_LIMIT)
        self._stream = RecognitionStream(engine, recognizer.scheduler, ticket.key, self._emit, config)
        self._stopped_at: dict[int, float] = {}
        self._started_at: dict[int, float] = {}
        self._closed = False

    # -- state ----------------------------------------------------------------------------------------
    @property
    def language(self) -> str | None:
        return self._stream.language

    @property
    def in_speech(self) -> bool:
        return self._stream.in_speech

    @property
    def position_ms(self) -> int:
        return self._stream.position_ms

    @property
    def options(self) -> RecognitionOptions:
        return self._engine.options

    @property
    def stats(self) -> dict[str, int]:
        """Final decodes by path (speculative ones included) and speculative finals abandoned."""
        return {**self._engine.stats, "speculative_abandoned": self._stream.speculative_abandoned}

    # -- input ----------------------------------------------------------------------------------------
    async def push(self, audio: np.ndarray) -> None:
        """Add 16 kHz float32 audio."""
        self._recognizer.scheduler.add_audio(self._ticket, audio.shape[0] / SAMPLE_RATE)
        await self._stream.push(audio)

    async def commit(self) -> bool:
        """Manual mode: end the sentence now. False when there is too little audio to commit."""
        return await self._stream.commit()

    def clear(self) -> None:
        """Drop the uncommitted audio without a final."""
        self._stream.clear()

    def update_context(self, text: str | None) -> None:
        """Context text (names, topic) for every later interim and final."""
        self._engine.update_context(text)

    async def finish(self) -> None:
        """End of input: every final is emitted, then the event iterator ends."""
        try:
            await self._stream.finish()
        finally:
            await self._events.put(None)

    def close(self) -> None:
        """Drop pending work and give the capacity back. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stream.close()
        self._recognizer.scheduler.release(self._ticket)
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Typed events in order, until :meth:`finish` completes or the stream is closed."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    # -- events ---------------------------------------------------------------------------------------
    async def _emit(self, event: StreamEvent) -> None:
        now = time.perf_counter()
        if isinstance(event, SpeechStarted):
            self._started_at[event.utterance] = now
        elif isinstance(event, SpeechStopped):
            self._stopped_at[event.utterance] = now
        elif isinstance(event, Interim):
            started = self._started_at.pop(event.utterance, None)
            if started is not None:
                event.latency_s = now - started
        elif isinstance(event, Final):
            stopped = self._stopped_at.pop(event.utterance, None)
            self._started_at.pop(event.utterance, None)
            if stopped is not None:
                event.lag_s = now - stopped
            self._learn_language(event.language)
        if not self._closed:
            await self._events.put(event)

    def _learn_language(self, language: str | None) -> None:
        """A multilingual stream that turns out to be English moves to the English interim model and price."""
        english = self._recognizer.config.english_model
        if language != "en" or not english or self._engine.partial_model == english:
            return
        if self._engine.profile.partial_model:
            return
        self._engine.use_partial_model(english)
        self._recognizer.scheduler.reprice(self._ticket, ENGLISH_PRIOR)
