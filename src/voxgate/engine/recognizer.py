"""The shared recognizer: Whisper weights loaded once per process, file and clip recognition.

Protocol-agnostic: callers pass a :class:`RecognitionOptions` and an :class:`EngineProfile` and get
plain :class:`Sentence` / :class:`Transcript` objects back. Calls block; run them in worker threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.vad import VadOptions, get_speech_timestamps

from voxgate.audio.decode import SAMPLE_RATE, Source, iter_channel, probe
from voxgate.engine import diarize, postprocess
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.guards import clean_segments
from voxgate.engine.language import detect_language
from voxgate.engine.models import BUNDLED, assemble
from voxgate.engine.prompts import context_prompt, hotword_prompt
from voxgate.engine.sentences import group_sentences, make_words
from voxgate.engine.types import FileResult, RecognitionOptions, Sentence, Transcript
from voxgate.engine.vocabulary_pass import second_look
from voxgate.errors import ModelUnavailable

ProgressCallback = Callable[[float], None]  # seconds of audio done (per call, cumulative)

# Audio recognized per block of a long file. Silero VAD and the batched decoder hold transient buffers in
# proportion to the block; 120 s keeps the peak low (bench/batch.py) while still filling decoder batches.
BLOCK_SECONDS = 120.0
TAIL_GUARD_SECONDS = 1.0  # speech this close to a block's end may continue: carried to the next block
FILE_VAD = VadOptions(min_silence_duration_ms=500, speech_pad_ms=300, max_speech_duration_s=30)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What the recognizer needs from the service settings."""

    model_dir: Path
    cpu_threads: int = 0
    num_workers: int = 1
    batch_size: int = 4


class Recognizer:
    """One per process. Thread-safe: models load once under a lock; CTranslate2 calls run concurrently."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._models: dict[str, WhisperModel] = {}
        self._pipelines: dict[str, BatchedInferencePipeline] = {}
        self._lock = threading.Lock()

    # -- models -------------------------------------------------------------------------------------
    def model(self, name: str) -> WhisperModel:
        """The loaded Whisper model ``name`` (a key of :data:`BUNDLED`), loading it on first use."""
        with self._lock:
            loaded = self._models.get(name)
            if loaded is not None:
                return loaded
            spec = BUNDLED.get(name)
            if spec is None:
                raise ModelUnavailable(f"unknown engine model '{name}'")
            path = assemble(spec, self.config.model_dir)
            threads = self.config.cpu_threads or (os.cpu_count() or 1)
            try:
                loaded = WhisperModel(
                    str(path),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=threads,
                    num_workers=self.config.num_workers,
                    local_files_only=True,
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise ModelUnavailable(
                    f"model {name} could not be loaded ({exc}); reinstall " + " and ".join(spec.packages)
                ) from exc
            self._models[name] = loaded
            self._pipelines[name] = BatchedInferencePipeline(loaded)
            return loaded

    def pipeline(self, name: str) -> BatchedInferencePipeline:
        self.model(name)
        return self._pipelines[name]

    def warm_up(self, names: Iterable[str]) -> None:
        for name in names:
            self.model(name)

    def engine_model(self, profile: EngineProfile, options: RecognitionOptions) -> str:
        """English-only work may use the English model when the profile names one."""
        return profile.model

    # -- clips (sync calls, real-time finals) -------------------------------------------------------
    def transcribe_clip(
        self,
        audio: np.ndarray,
        options: RecognitionOptions,
        profile: EngineProfile,
        *,
        offset_ms: int = 0,
        language: str | None = None,
    ) -> tuple[list[Sentence], str | None]:
        """Recognize a short in-memory clip (16 kHz float32). Returns sentences and the language."""
        name = self.engine_model(profile, options)
        model = self.model(name)
        if language is None:
            language = self._language(model, audio, options)
        sentences = self._decode_block(name, audio, options, profile, language, offset_ms)
        if options.diarization:
            sentences = diarize.diarize(audio, sentences, options.speaker_count, offset_ms)
        return postprocess.apply(sentences, options, options.text_language(language)), language

    # -- files ----------------------------------------------------------------------------------------
    def transcribe_file(
        self,
        source: Source,
        options: RecognitionOptions,
        profile: EngineProfile,
        *,
        progress: ProgressCallback | None = None,
        max_duration_s: float | None = None,
        max_bytes: int | None = None,
    ) -> FileResult:
        """Recognize every selected channel of a file, streaming it in VAD-aligned blocks."""
        info = probe(source)
        transcripts = []
        done_before = 0.0
        for channel in options.channels:
            transcript = self._transcribe_channel(
                source,
                channel,
                options,
                profile,
                progress=_shifted(progress, done_before),
                max_duration_s=max_duration_s,
                max_bytes=max_bytes,
            )
            done_before += transcript.duration_ms / 1000
            transcripts.append(transcript)
        if info.duration_ms is None and transcripts:
            info.duration_ms = transcripts[0].duration_ms
        return FileResult(info=info, transcripts=transcripts)

    def _transcribe_channel(
        self,
        source: Source,
        channel: int,
        options: RecognitionOptions,
        profile: EngineProfile,
        *,
        progress: ProgressCallback | None,
        max_duration_s: float | None,
        max_bytes: int | None,
    ) -> Transcript:
        name = self.engine_model(profile, options)
        model = self.model(name)
        block_samples = int(BLOCK_SECONDS * SAMPLE_RATE)
        guard = int(TAIL_GUARD_SECONDS * SAMPLE_RATE)
        buffer = np.zeros(0, dtype=np.float32)
        buffer_offset = 0  # samples of the channel before buffer[0]
        language: str | None = options.language
        sentences: list[Sentence] = []
        speech_samples = 0
        track = diarize.DiarizationTrack(options.speaker_count) if options.diarization else None

        def run(final: bool) -> None:
            nonlocal buffer, buffer_offset, language, speech_samples
            speech = get_speech_timestamps(buffer, FILE_VAD)
            cut = buffer.shape[0]
            if not final:
                cut = max(0, buffer.shape[0] - guard)
                for seg in speech:
                    if seg["end"] > cut:
                        cut = min(cut, seg["start"])
                        break
                if cut < SAMPLE_RATE:  # one unbroken speech run: cut at the block end anyway
                    cut = buffer.shape[0] - guard
            kept = [seg for seg in speech if seg["start"] < cut]
            if kept:
                speech_samples += sum(min(seg["end"], cut) - seg["start"] for seg in kept)
                if language is None:
                    language = self._language(model, buffer[:cut], options, speech=kept)
                offset_ms = round(buffer_offset * 1000 / SAMPLE_RATE)
                sentences.extend(self._decode_block(name, buffer[:cut], options, profile, language, offset_ms))
                if track is not None:
                    track.add(buffer[:cut], buffer_offset)
            buffer_offset += cut
            buffer = buffer[cut:].copy()
            release_freed_memory()
            if progress:
                progress(buffer_offset / SAMPLE_RATE)

        for chunk in iter_channel(
            source, channel, chunk_seconds=30.0, max_duration_s=max_duration_s, max_bytes=max_bytes
        ):
            buffer = np.concatenate([buffer, chunk]) if buffer.size else chunk
            if buffer.shape[0] >= block_samples:
                run(final=False)
        total = buffer_offset + buffer.shape[0]
        if buffer.shape[0]:
            run(final=True)
        if track is not None:
            sentences = track.label(sentences)
        sentences = postprocess.apply(sentences, options, options.text_language(language))
        return Transcript(
            channel_id=channel,
            sentences=sentences,
            language=language,
            duration_ms=round(total * 1000 / SAMPLE_RATE),
            speech_duration_ms=round(speech_samples * 1000 / SAMPLE_RATE),
        )

    # -- internals ----------------------------------------------------------------------------------
    def _language(
        self,
        model: WhisperModel,
        audio: np.ndarray,
        options: RecognitionOptions,
        speech: list[dict[str, int]] | None = None,
    ) -> str | None:
        if options.language:
            return options.language
        if not model.model.is_multilingual:
            return "en"
        return detect_language(model, audio, options.language_hints, speech=speech)

    def _decode_block(
        self,
        name: str,
        audio: np.ndarray,
        options: RecognitionOptions,
        profile: EngineProfile,
        language: str | None,
        offset_ms: int,
    ) -> list[Sentence]:
        if audio.size < SAMPLE_RATE // 10:
            return []
        model = self.model(name)
        if not model.model.is_multilingual:
            language = "en"
        segments, _info = self.pipeline(name).transcribe(
            audio,
            language=language or "en",
            task=options.task,
            beam_size=profile.beam_size,
            word_timestamps=True,
            vad_filter=True,
            vad_parameters=FILE_VAD,
            batch_size=self.config.batch_size,
            hotwords=hotword_prompt(options.hotwords, language),
            initial_prompt=context_prompt(options.context),
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
        )
        kept = clean_segments(list(segments))
        raw = [(w.start, w.end, w.word, w.probability) for seg in kept for w in (seg.words or [])]
        words = make_words(raw, offset_ms)
        sentences = group_sentences(
            words, options.text_language(language), max_pause_ms=options.max_sentence_silence_ms
        )
        if options.task == "translate":
            return sentences
        return second_look(model, audio, offset_ms, sentences, options, language, profile.beam_size)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Hand memory freed by the last block back to the OS (glibc keeps it in its arenas otherwise)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _shifted(progress: ProgressCallback | None, base: float) -> ProgressCallback | None:
    """Progress of one channel reported on the file's cumulative audio-time scale."""
    if progress is None:
        return None
    return lambda seconds: progress(base + seconds)
