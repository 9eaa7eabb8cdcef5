"""The shared recognizer: Whisper weights loaded once per process, file and clip recognition.

Protocol-agnostic: callers pass a :class:`RecognitionOptions` and an :class:`EngineProfile` and get
plain :class:`Sentence` / :class:`Transcript` objects back. Calls block; run them in worker threads.

The recognizer owns the process's one :class:`~voxgate.engine.scheduler.Scheduler`: every model call of a
file or clip is cut into units (language identification, one ≤ 30 s VAD window, the vocabulary second
look) that run on the scheduler's workers in their work class's turn, and real-time streams are opened
here (:meth:`Recognizer.open_stream`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.vad import SpeechTimestampsMap, VadOptions, get_speech_timestamps

from voxgate.audio.decode import SAMPLE_RATE, Source, iter_channel, probe
from voxgate.engine import diarize, postprocess
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.encoder_reuse import EncodedWindow, encode_window, reusing_pipeline
from voxgate.engine.guards import clean_segments
from voxgate.engine.language import MAX_WINDOWS, MIN_SPEECH_SAMPLES, detect_language, language_of_windows
from voxgate.engine.models import BUNDLED, assemble
from voxgate.engine.priority import in_lowered_thread
from voxgate.engine.prompts import context_prompt, hotword_prompt
from voxgate.engine.scheduler import Scheduler, ThreadPlan, Tier, WorkClass
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


WINDOW_SAMPLES = 30 * SAMPLE_RATE  # one decoder window
MAX_UNIT_BATCH = 2  # windows batched in one file unit at most
M_ARENA_MAX = -8  # mallopt parameter of glibc's malloc.h
BLOCKS_IN_FLIGHT = 2  # blocks of a channel read or decoding at once
FULL_ENOUGH = 0.8  # a block's last window holding less speech than this share is carried over


@dataclass(slots=True)
class FileBlock:
    """One VAD-aligned block of a file channel: its audio, where it starts, its VAD speech runs."""

    offset: int  # samples of the channel before audio[0]
    audio: np.ndarray  # 16 kHz float32
    speech: list[dict[str, int]]  # speech runs starting in the block (samples from audio[0]; may end past it)

    @property
    def end(self) -> int:
        return self.offset + int(self.audio.shape[0])

    @property
    def speech_samples(self) -> int:
        return sum(min(seg["end"], self.audio.shape[0]) - seg["start"] for seg in self.speech)


def _cut_block(buffer: np.ndarray, offset: int, *, final: bool) -> tuple[FileBlock, np.ndarray]:
    """The next block of ``buffer`` (cut in a silence unless ``final``) and the rest, carried over."""
    speech = speech_runs(buffer)
    cut = buffer.shape[0]
    if not final:
        guard = int(TAIL_GUARD_SECONDS * SAMPLE_RATE)
        cut = max(0, buffer.shape[0] - guard)
        for seg in speech:
            if seg["end"] > cut:
                cut = min(cut, seg["start"])
                break
        if cut < SAMPLE_RATE:  # one unbroken speech run: cut at the block end anyway
            cut = buffer.shape[0] - guard
        cut = _cut_after_full_windows(buffer, [seg for seg in speech if seg["start"] < cut], cut)
    kept = [seg for seg in speech if seg["start"] < cut]
    return FileBlock(offset, buffer[:cut], kept), buffer[cut:].copy()


def _cut_after_full_windows(buffer: np.ndarray, speech: list[dict[str, int]], cut: int) -> int:
    """Move the cut back to before the block's last decoder window when that window would be part-filled:
    its speech is carried to the next block, where it fills a window with what follows (a window costs the
    same however little speech it holds)."""
    groups = _group_runs(cut, speech)
    if len(groups) < 2 or sum(r["end"] - r["start"] for r in groups[-1]) >= FULL_ENOUGH * WINDOW_SAMPLES:
        return cut
    return groups[-1][0]["start"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What the recognizer needs from the service settings (0 = decided by :class:`ThreadPlan`)."""

    model_dir: Path
    cpu_threads: int = 0
    num_workers: int = 0
    max_sessions: int | None = None
    realtime_capacity: float | None = None  # core-seconds per second for real-time streams (None = 85% of cores)
    english_model: str = "whisper-tiny.en"  # interim model of English streams ("" = none)
    fast_finals: bool = True  # real-time finals on a short window when its guards pass


class Recognizer:
    """One per process. Thread-safe: models load once under a lock; CTranslate2 calls run concurrently."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.plan = ThreadPlan.for_machine(workers=config.num_workers, intra_threads=config.cpu_threads)
        limit_allocator_arenas(max(2, self.plan.workers))  # before the decoding threads first allocate
        self.scheduler = Scheduler(
            self.plan,
            capacity=config.realtime_capacity,
            max_sessions=config.max_sessions,
            on_quiet=release_freed_memory,  # the last stream closed: give its buffers back to the OS
        )
        self._models: dict[tuple[str, Tier], WhisperModel] = {}  # one copy per scheduler tier that uses it
        self._pipelines: dict[tuple[str, Tier], BatchedInferencePipeline] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the decoding workers (without them, every unit runs inline in the calling thread)."""
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    # -- models -------------------------------------------------------------------------------------
    def model(self, name: str, tier: Tier = Tier.REALTIME) -> WhisperModel:
        """The loaded Whisper model ``name`` (a key of :data:`BUNDLED`) for the work of ``tier``, loading it
        on first use.

        Each tier has its own copy, loaded from a thread at the tier's OS priority so that the model's own
        workers run at it too (the weights are held once per tier that uses them, and a real-time unit never
        queues behind a file window inside one model's workers)."""
        with self._lock:
            loaded = self._models.get((name, tier))
            if loaded is not None:
                return loaded
            spec = BUNDLED.get(name)
            if spec is None:
                raise ModelUnavailable(f"unknown engine model '{name}'")
            path = assemble(spec, self.config.model_dir)

            def load() -> WhisperModel:
                return WhisperModel(
                    str(path),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.plan.intra_threads,
                    num_workers=self.plan.workers,
                    local_files_only=True,
                )

            try:
                loaded = in_lowered_thread(load, tier.nice) if tier.nice else load()
            except (RuntimeError, ValueError, OSError) as exc:
                raise ModelUnavailable(
                    f"model {name} could not be loaded ({exc}); reinstall " + " and ".join(spec.packages)
                ) from exc
            self._models[(name, tier)] = loaded
            self._pipelines[(name, tier)] = BatchedInferencePipeline(loaded)
            return loaded

    def pipeline(self, name: str, tier: Tier = Tier.REALTIME) -> BatchedInferencePipeline:
        self.model(name, tier)
        return self._pipelines[(name, tier)]

    def warm_up(self, names: Iterable[str]) -> None:
        """Load the models and run one tiny decode on every replica, so no client pays for first-call set-up
        (memory pools, kernels) on its first sentence."""
        for name in names:
            model = self.model(name)
            calls = [threading.Thread(target=_first_call, args=(model,)) for _ in range(self.plan.workers)]
            for call in calls:
                call.start()
            for call in calls:
                call.join()

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
        work: WorkClass = WorkClass.SYNC,
    ) -> tuple[list[Sentence], str | None]:
        """Recognize a short in-memory clip (16 kHz float32) as ``work``. Returns sentences and the language."""
        name = self.engine_model(profile, options)
        model = self.model(name, work.tier)
        speech = speech_runs(audio) if audio.size >= SAMPLE_RATE // 10 else []
        windows = pack_windows(audio, speech)
        shared: list[EncodedWindow] = []
        if language is None:
            language, shared = self._identify(model, audio, speech, windows, options, work)
        sentences = self._decode_block(name, audio, options, profile, language, offset_ms, work, windows, shared)
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
        language: str | None = options.language
        sentences: list[Sentence] = []
        shared: list[EncodedWindow] = []
        speech_samples = 0
        track = diarize.DiarizationTrack(options.speaker_count) if options.diarization else None
        # The next block is read and queued while the last one decodes, so no core idles at a block's end.
        in_flight: deque[tuple[int, Future[list[Sentence]]]] = deque()
        pool = ThreadPoolExecutor(max_workers=BLOCKS_IN_FLIGHT, thread_name_prefix="voxgate-block")

        def settle_oldest() -> None:
            end, decoded = in_flight.popleft()
            sentences.extend(decoded.result())
            release_freed_memory()
            if progress:
                progress(end / SAMPLE_RATE)

        total = 0
        try:
            for block in self.file_blocks(source, channel, max_duration_s=max_duration_s, max_bytes=max_bytes):
                if block.speech:
                    speech_samples += block.speech_samples
                    if language is None:
                        # the first windows' encoder passes, run to identify the language, are decoded from too
                        language, shared = self._identify_block(profile, options, block)
                    if track is not None:
                        track.add(block.audio, block.offset)
                decoding = pool.submit(self.decode_file_block, profile, options, language, block, shared)
                in_flight.append((block.end, decoding))
                shared = []
                total = block.end
                while len(in_flight) >= BLOCKS_IN_FLIGHT:
                    settle_oldest()
            while in_flight:
                settle_oldest()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return self.finish_channel(channel, sentences, options, language, total, speech_samples, track)

    # -- the steps of a file channel (also run one block per task by the distributed job backend) ------
    def file_blocks(
        self, source: Source, channel: int, *, max_duration_s: float | None = None, max_bytes: int | None = None
    ) -> Iterator[FileBlock]:
        """Cut one channel of a file into VAD-aligned blocks of about :data:`BLOCK_SECONDS`, in order: each
        block ends in a silence (speech running into the block end is carried into the next block)."""
        block_samples = int(BLOCK_SECONDS * SAMPLE_RATE)
        buffer = np.zeros(0, dtype=np.float32)
        offset = 0  # samples of the channel before buffer[0]
        for chunk in iter_channel(
            source, channel, chunk_seconds=30.0, max_duration_s=max_duration_s, max_bytes=max_bytes
        ):
            buffer = np.concatenate([buffer, chunk]) if buffer.size else chunk
            if buffer.shape[0] >= block_samples:
                block, buffer = _cut_block(buffer, offset, final=False)
                offset = block.end
                yield block
        if buffer.shape[0]:
            yield _cut_block(buffer, offset, final=True)[0]

    def block_language(self, profile: EngineProfile, options: RecognitionOptions, block: FileBlock) -> str | None:
        """The file's language, identified on the first block with speech (or the one asked for)."""
        return self._identify_block(profile, options, block)[0]

    def _identify_block(
        self, profile: EngineProfile, options: RecognitionOptions, block: FileBlock
    ) -> tuple[str | None, list[EncodedWindow]]:
        model = self.model(self.engine_model(profile, options), Tier.FILE)
        windows = pack_windows(block.audio, block.speech)
        return self._identify(model, block.audio, block.speech, windows, options, WorkClass.FILE)

    def decode_file_block(
        self,
        profile: EngineProfile,
        options: RecognitionOptions,
        language: str | None,
        block: FileBlock,
        shared: Sequence[EncodedWindow] = (),
    ) -> list[Sentence]:
        """The sentences of one block (times from the channel start), before post-processing: the block's own
        VAD runs packed into windows (so every backend decodes the same windows), ``shared`` not encoded
        again."""
        name = self.engine_model(profile, options)
        offset_ms = round(block.offset * 1000 / SAMPLE_RATE)
        windows = pack_windows(block.audio, block.speech)
        return self._decode_block(
            name, block.audio, options, profile, language, offset_ms, WorkClass.FILE, windows, shared
        )

    def finish_channel(
        self,
        channel: int,
        sentences: list[Sentence],
        options: RecognitionOptions,
        language: str | None,
        total_samples: int,
        speech_samples: int,
        track: diarize.DiarizationTrack | None,
    ) -> Transcript:
        """The channel's transcript from its blocks' sentences in order: speakers, then post-processing."""
        if track is not None:
            sentences = track.label(sentences)
        sentences = postprocess.apply(sentences, options, options.text_language(language))
        return Transcript(
            channel_id=channel,
            sentences=sentences,
            language=language,
            duration_ms=round(total_samples * 1000 / SAMPLE_RATE),
            speech_duration_ms=round(speech_samples * 1000 / SAMPLE_RATE),
        )

    # -- internals ----------------------------------------------------------------------------------
    @staticmethod
    def _needs_identification(model: WhisperModel, options: RecognitionOptions) -> bool:
        """Whether the language must be identified from the audio (not given, not implied by the model or by
        a single hint)."""
        hints = [h for h in (options.language_hints or []) if h]
        return not options.language and bool(model.model.is_multilingual) and len(hints) != 1

    def _identify(
        self,
        model: WhisperModel,
        audio: np.ndarray,
        speech: list[dict[str, int]],
        windows: list[SpeechWindow],
        options: RecognitionOptions,
        work: WorkClass,
    ) -> tuple[str | None, list[EncodedWindow]]:
        """The language of ``audio`` and, when it had to be identified, the encoder outputs of the packed
        windows it was read from (the first few, encoded side by side as units), which the
        decoder then reuses: identification costs no encoder pass of its own."""
        # as many windows as keeps every worker busy (one round when the workers are at least MAX_WINDOWS)
        take = max(self.plan.workers, MAX_WINDOWS // self.plan.workers * self.plan.workers)
        heard = [window for window in windows if window.speech_enough][:take]
        if not heard or not self._needs_identification(model, options):
            return self._language(model, audio, options, work, speech=speech), []
        encoded = self.scheduler.run_many(work, [functools.partial(encode_window, model, w.audio) for w in heard])
        hints = options.language_hints
        return self.scheduler.run(work, functools.partial(language_of_windows, model, encoded, hints)), encoded

    def _language(
        self,
        model: WhisperModel,
        audio: np.ndarray,
        options: RecognitionOptions,
        work: WorkClass,
        speech: list[dict[str, int]] | None = None,
    ) -> str | None:
        if options.language:
            return options.language
        if not model.model.is_multilingual:
            return "en"
        hints = options.language_hints
        return self.scheduler.run(work, lambda: detect_language(model, audio, hints, speech=speech))

    def _decode_block(
        self,
        name: str,
        audio: np.ndarray,
        options: RecognitionOptions,
        profile: EngineProfile,
        language: str | None,
        offset_ms: int,
        work: WorkClass,
        windows: list[SpeechWindow] | None = None,
        shared: Sequence[EncodedWindow] = (),
    ) -> list[Sentence]:
        """Decode the speech of ``audio`` packed into full decoder windows (``windows``, packed here from a VAD
        pass when not given), as scheduler units side by side. ``shared`` are windows already encoded (for
        language identification), not encoded again."""
        if audio.size < SAMPLE_RATE // 10:
            return []
        model = self.model(name, work.tier)
        if not model.model.is_multilingual:
            language = "en"
        if windows is None:
            windows = pack_windows(audio, speech_runs(audio))
        pipeline = reusing_pipeline(model, shared) if shared else self.pipeline(name, work.tier)
        per_unit = windows_per_unit(len(windows), self.plan.workers)
        units = [
            functools.partial(self._decode_windows, pipeline, windows[i : i + per_unit], options, profile, language)
            for i in range(0, len(windows), per_unit)
        ]
        raw = [word for words in self.scheduler.run_many(work, units) for word in words]
        words = make_words(raw, offset_ms)
        sentences = group_sentences(
            words, options.text_language(language), max_pause_ms=options.max_sentence_silence_ms
        )
        if options.task == "translate":
            return sentences
        return self.scheduler.run(
            work, lambda: second_look(model, audio, offset_ms, sentences, options, language, profile.beam_size)
        )

    @staticmethod
    def _decode_windows(
        pipeline: BatchedInferencePipeline,
        windows: list[SpeechWindow],
        options: RecognitionOptions,
        profile: EngineProfile,
        language: str | None,
    ) -> list[tuple[float, float, str, float]]:
        """One unit: the words (seconds from the block start) of one or more packed windows, batched."""
        joined = np.concatenate([window.audio for window in windows])
        bounds = np.cumsum([0] + [window.audio.shape[0] for window in windows])
        segments, _info = pipeline.transcribe(
            joined,
            language=language or "en",
            task=options.task,
            beam_size=profile.beam_size,
            word_timestamps=True,
            # seconds, as the pipeline takes them; half a sample in so that they round back to these samples
            clip_timestamps=[
                {"start": (start + 0.5) / SAMPLE_RATE, "end": (end + 0.5) / SAMPLE_RATE}
                for start, end in itertools.pairwise(bounds)
            ],
            batch_size=len(windows),
            hotwords=hotword_prompt(options.hotwords, language),
            initial_prompt=context_prompt(options.context),
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
        )
        timeline = SpeechTimestampsMap([run for window in windows for run in window.runs], SAMPLE_RATE, 3)
        words = []
        for seg in clean_segments(list(segments)):
            for w in seg.words or []:
                run = timeline.get_chunk_index((w.start + w.end) / 2)
                start = timeline.get_original_time(w.start, run)
                end = timeline.get_original_time(w.end, run)
                words.append((start, end, w.word, w.probability))
        return words


@dataclass(frozen=True, slots=True)
class SpeechWindow:
    """Speech runs of a block joined, silences left out: at most one decoder window of audio."""

    runs: list[dict[str, int]]  # where the joined pieces come from (samples from the block start)
    audio: np.ndarray

    @property
    def speech_enough(self) -> bool:
        """Enough speech to identify a language from."""
        return int(self.audio.shape[0]) >= MIN_SPEECH_SAMPLES


def speech_runs(audio: np.ndarray) -> list[dict[str, int]]:
    """The VAD speech runs of ``audio`` (samples) that the file path cuts blocks at and packs windows from."""
    runs: list[dict[str, int]] = get_speech_timestamps(audio, FILE_VAD)
    return runs


def pack_windows(audio: np.ndarray, speech: list[dict[str, int]]) -> list[SpeechWindow]:
    """Pack the VAD runs of ``audio`` in order into windows of at most 30 s of speech each, so each decoder
    window is as full as the speech allows (a window costs the same however much of it is speech)."""
    return [_window(audio, runs) for runs in _group_runs(audio.shape[0], speech)]


def _group_runs(length: int, speech: list[dict[str, int]]) -> list[list[dict[str, int]]]:
    """The runs of :func:`pack_windows`' windows (clipped to ``length`` samples), without copying audio."""
    groups: list[list[dict[str, int]]] = []
    runs: list[dict[str, int]] = []
    held = 0
    for seg in speech:
        run = {"start": seg["start"], "end": min(seg["end"], length)}
        size = run["end"] - run["start"]
        if size <= 0:
            continue
        if runs and held + size > WINDOW_SAMPLES:
            groups.append(runs)
            runs, held = [], 0
        runs.append(run)
        held += size
    if runs:
        groups.append(runs)
    return groups


def _window(audio: np.ndarray, runs: list[dict[str, int]]) -> SpeechWindow:
    return SpeechWindow(runs, np.concatenate([audio[run["start"] : run["end"]] for run in runs]))


def windows_per_unit(windows: int, workers: int) -> int:
    """Windows decoded as one batch: as many as keeps every worker busy, up to :data:`MAX_UNIT_BATCH`
    (batching two windows saves about 7% of CPU)."""
    return max(1, min(MAX_UNIT_BATCH, windows // workers))


def _first_call(model: WhisperModel) -> None:
    """Encode a second of silence on a short window and decode one token."""
    features = model.feature_extractor(np.zeros(SAMPLE_RATE, dtype=np.float32))
    window = np.ascontiguousarray(features[None, :, :100], dtype=np.float32)
    encoded = model.model.encode(ctranslate2.StorageView.from_array(window), to_cpu=False)
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    model.model.generate(encoded, [list(tokenizer.sot_sequence)], max_length=len(tokenizer.sot_sequence) + 1)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def limit_allocator_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at ``count`` (its default is eight per core): the decoding threads share a
    few arenas, whose freed memory :func:`release_freed_memory` hands back, instead of each keeping its own
    (a 60-minute file: peak RSS 927 → 842 MB, samples of RSS during the run 480-860 → 480-690 MB).
    Returns whether the cap was applied."""
    libc = _libc()
    return libc is not None and libc.mallopt(M_ARENA_MAX, count) == 1


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
