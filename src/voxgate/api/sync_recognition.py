"""The core shared by the synchronous endpoints: audio loading and recognition (requests: ``voxgate.params``).

Protocol adapters parse their own request shapes into :class:`RecognitionOptions` + an audio reference,
call :func:`recognize_reference` and render the :class:`ClipResult` in their own wire format.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from voxgate.api.audio_source import AudioSource, audio_reference, wrap_raw_pcm
from voxgate.audio.decode import SAMPLE_RATE, decode_channel
from voxgate.config import Settings
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.types import CJK_LANGUAGES, RecognitionOptions, Sentence, join_sentences
from voxgate.errors import AudioError
from voxgate.services import Services

T = TypeVar("T")
RAW_PCM_FORMATS = frozenset({"pcm", "raw", "s16le"})
SPLIT_ABOVE_S = 75.0  # longer audio is recognized (and streamed) in blocks
BLOCK_S = 60.0
SEARCH_S = 10.0


@dataclass(slots=True)
class ClipResult:
    """What one synchronous call recognized."""

    sentences: list[Sentence]
    language: str | None
    duration_ms: int

    @property
    def text(self) -> str:
        return join_sentences([s.text for s in self.sentences], self.language)

    @property
    def seconds(self) -> int:
        """Billed audio seconds (rounded up, at least 1 for non-empty audio)."""
        return max(1, math.ceil(self.duration_ms / 1000)) if self.duration_ms > 0 else 0

    def pieces(self, *, incremental: bool) -> list[str]:
        """Per-sentence text for streaming: the new piece each time, or the text so far."""
        out: list[str] = []
        texts: list[str] = []
        for sentence in self.sentences:
            if not sentence.text.strip():
                continue
            texts.append(sentence.text)
            joined = join_sentences(texts, self.language)
            out.append(joined[len(join_sentences(texts[:-1], self.language)) :] if incremental else joined)
        return out or [""]

    def token_estimate(self) -> int:
        """Words (CJK: characters) of the text: the unit the usage counts report."""
        if self.language in CJK_LANGUAGES:
            return sum(1 for ch in self.text if not ch.isspace())
        return len(self.text.split())


# -- recognition ----------------------------------------------------------------------------------
def decode_for_sync(
    source: AudioSource,
    settings: Settings,
    *,
    audio_format: str | None = None,
    sample_rate: int | None = None,
) -> np.ndarray:
    """16 kHz float32 mono samples of channel 0, refusing audio longer than the synchronous limit."""
    if audio_format in RAW_PCM_FORMATS:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        source = wrap_raw_pcm(data, sample_rate or SAMPLE_RATE)
    limit = settings.sync_max_duration_s
    try:
        return decode_channel(source, 0, max_duration_s=limit)
    except AudioError as exc:
        if exc.reason == "too_long":
            raise AudioError(
                f"the audio is longer than {limit:g} s, the limit for synchronous recognition; "
                "use the file transcription API (POST /api/v1/services/audio/asr/transcription) "
                "for longer audio",
                reason="too_long",
                param=exc.param or "audio",
            ) from exc
        raise


async def load_samples(
    services: Services,
    ref: Any,
    *,
    param: str,
    audio_format: str | None = None,
    sample_rate: int | None = None,
    owner: str | None = None,
) -> np.ndarray:
    """Fetch and decode the referenced audio (worker threads); temporary copies are removed afterwards.
    ``owner``: the caller's owner tag (``oss://`` uploads of other keys are refused)."""
    async with audio_reference(ref, services.settings, param=param, owner=owner) as source:
        return await asyncio.to_thread(
            decode_for_sync, source, services.settings, audio_format=audio_format, sample_rate=sample_rate
        )


def block_bounds(audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample ranges recognized one after another: the whole clip, or for long audio ~60 s blocks cut
    at the quietest 100 ms within 10 s of each boundary (so results can be sent while the rest runs)."""
    total = int(audio.shape[0])
    if total <= SPLIT_ABOVE_S * SAMPLE_RATE:
        return [(0, total)]
    frame = SAMPLE_RATE // 10
    usable = total - total % frame
    energy = np.sqrt(np.mean(np.square(audio[:usable].reshape(-1, frame), dtype=np.float64), axis=1))
    bounds = []
    start = 0
    while total - start > (BLOCK_S + SEARCH_S) * SAMPLE_RATE:
        lo = (start + int((BLOCK_S - SEARCH_S) * SAMPLE_RATE)) // frame
        hi = (start + int((BLOCK_S + SEARCH_S) * SAMPLE_RATE)) // frame
        cut = (lo + int(np.argmin(energy[lo:hi]))) * frame + frame // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, total))
    return bounds


@dataclass(slots=True)
class StreamStep:
    """One streamed sentence: its piece of text (new part or text so far) and the result so far.

    ``index`` is the sentence's position in ``result.sentences``; None for a closing step that adds no
    sentence (the audio ended in silence or held no speech).
    """

    result: ClipResult
    index: int | None
    piece: str
    final: bool


async def recognize_progressively(
    services: Services, audio: np.ndarray, options: RecognitionOptions, profile: EngineProfile
) -> AsyncIterator[tuple[ClipResult, bool]]:
    """Recognize block by block in worker threads (never on the event loop), through the gate.

    Yields ``(result so far, done)`` after each block; the language found in the first block with speech
    is kept for the rest.
    """
    gate = services.sync_gate
    duration_ms = round(audio.shape[0] * 1000 / SAMPLE_RATE)
    result = ClipResult(sentences=[], language=options.language, duration_ms=duration_ms)
    bounds = block_bounds(audio)
    for n, (start, end) in enumerate(bounds):
        sentences, language = await gate.run(
            partial(
                services.recognizer.transcribe_clip,
                audio[start:end],
                options,
                profile,
                offset_ms=round(start * 1000 / SAMPLE_RATE),
                language=result.language,
            ),
            admit=n == 0,
        )
        result.sentences.extend(sentences)
        result.language = result.language or language
        yield result, n == len(bounds) - 1


async def recognize_samples(
    services: Services, audio: np.ndarray, options: RecognitionOptions, profile: EngineProfile
) -> ClipResult:
    """The complete recognition of decoded samples."""
    final: ClipResult | None = None
    async for so_far, _done in recognize_progressively(services, audio, options, profile):
        final = so_far
    assert final is not None  # there is always at least one block
    return final


async def stream_steps(
    services: Services,
    audio: np.ndarray,
    options: RecognitionOptions,
    profile: EngineProfile,
    *,
    incremental: bool,
) -> AsyncIterator[StreamStep]:
    """One step per recognized sentence, sent as soon as its block is done; the last step is final."""
    emitted = 0
    async for result, done in recognize_progressively(services, audio, options, profile):
        spoken = [i for i, s in enumerate(result.sentences) if s.text.strip()]
        pieces = result.pieces(incremental=incremental) if spoken else []
        fresh = list(zip(spoken[emitted:], pieces[emitted:], strict=True))
        for k, (index, piece) in enumerate(fresh):
            yield StreamStep(result, index, piece, final=done and k == len(fresh) - 1)
        emitted = len(spoken)
        if done and not fresh:
            yield StreamStep(result, None, "" if incremental or not spoken else result.text, final=True)


async def recognize_reference(
    services: Services,
    ref: Any,
    options: RecognitionOptions,
    profile: EngineProfile,
    *,
    param: str,
    audio_format: str | None = None,
    sample_rate: int | None = None,
) -> ClipResult:
    """Fetch, decode and recognize the referenced audio."""
    audio = await load_samples(services, ref, param=param, audio_format=audio_format, sample_rate=sample_rate)
    return await recognize_samples(services, audio, options, profile)
