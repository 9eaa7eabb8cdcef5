"""Per-session streaming recognition: VAD endpointing, interim hypotheses, accurate finals.

A :class:`RecognitionStream` receives 16 kHz float32 audio (``push``) and emits typed events through an
async callback: :class:`SpeechStarted`, :class:`Interim` (full hypothesis with a stable, never-retracted
prefix), :class:`SpeechStopped`, :class:`Final` (sentence with word timestamps in ms). Sentence ends come
from the VAD (silence of ``silence_ms``) or, in manual mode, from :meth:`commit`; a sentence longer than
``max_sentence_ms`` is cut at its quietest point. All decoding runs through the shared
:class:`~voxgate.engine.scheduler.Scheduler`; every buffer is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from faster_whisper.vad import get_vad_model

from voxgate.engine.partial import Hypothesis
from voxgate.engine.scheduler import Scheduler
from voxgate.engine.sentences import sentence_text
from voxgate.engine.types import Sentence, Word, join_sentences

log = logging.getLogger("voxgate.stream")
Decoded = tuple[list[Sentence], str | None]  # a final decode: its sentences and the language heard

SAMPLE_RATE = 16_000
FRAME = 512  # Silero VAD window (32 ms)
CONTEXT = 64
FRAME_MS = FRAME * 1000 // SAMPLE_RATE
SPLIT_FINAL_MS = 8_000
HEAD_FINAL_MS = 5_000
HEAD_MIN_MS = 3_000  # a settled head is at least this long
HEAD_PAUSE_AGE_MS = 400  # and ends in a pause at least this far behind the newest audio
PARTIAL_PACE = 2.5  # an interim is not started sooner than this many times the previous one took
HEAD_MIN_PAUSE_MS = 250  # a head ends in a pause at least this long (a shorter one can be inside a word)
HEAD_PAUSE_FRAMES = HEAD_MIN_PAUSE_MS // FRAME_MS + 1
SPECULATIVE_HEAD_MS = 1_500  # a speculative final overtaken by more speech becomes a head when this long
DEFAULT_FINAL_COST = 0.08  # seconds of decoding per second of sentence audio, until measured


# -- events ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class SpeechStarted:
    utterance: int
    begin_ms: int


@dataclass(slots=True)
class Interim:
    """Current hypothesis of the open sentence: ``stable`` is a prefix of ``text`` that never changes."""

    utterance: int
    begin_ms: int
    text: str
    stable: str
    latency_s: float | None = None  # first interim of a sentence: seconds since its speech was heard

    @property
    def unstable(self) -> str:
        return self.text[len(self.stable) :]


@dataclass(slots=True)
class SpeechStopped:
    utterance: int
    end_ms: int


@dataclass(slots=True)
class Final:
    """A closed sentence. ``sentence`` is None when the audio held no recognizable speech."""

    utterance: int
    begin_ms: int
    end_ms: int
    sentence: Sentence | None
    language: str | None
    lag_s: float | None = None  # seconds from the end-of-sentence silence to this final (server side)


StreamEvent = SpeechStarted | Interim | SpeechStopped | Final
Emit = Callable[[StreamEvent], Awaitable[None]]


class StreamEngine(Protocol):
    """The blocking decoders a stream needs (run in scheduler threads)."""

    def partial(self, audio: np.ndarray, prefix: str, language: str | None) -> Hypothesis: ...

    def final(
        self, audio: np.ndarray, offset_ms: int, language: str | None, speech_end_s: float | None = None
    ) -> tuple[list[Sentence], str | None]: ...


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Endpointing and pacing. ``manual``: no VAD sentence ends, :meth:`RecognitionStream.commit` decides."""

    threshold: float = 0.5
    silence_ms: int = 800
    manual: bool = False
    max_sentence_ms: int = 15_000
    preroll_ms: int = 300
    tail_ms: int = 200
    min_speech_ms: int = 96
    first_partial_ms: int = 400
    partial_interval_ms: int = 500  # at least; longer while interims take long (PARTIAL_PACE x their time)
    speculative_ms: int = 200  # earliest start of a speculative final, ms into the silence
    max_pending_finals: int = 4
    split_final_ms: int = SPLIT_FINAL_MS  # longer sentences decode as two halves side by side (0 = never)
    # While a sentence goes on past this much undecoded audio, its head up to a pause is decoded with the final
    # model already, so the final at its end only decodes the rest (0 = never)
    head_final_ms: int = HEAD_FINAL_MS
    language: str | None = None


# -- VAD ---------------------------------------------------------------------------------------------
class StreamingVad:
    """Silero VAD (faster-whisper's bundled ONNX) over a stream: state carried between calls."""

    def __init__(self) -> None:
        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Speech probabilities, one per complete 512-sample frame now available."""
        data = np.concatenate([self._rest, audio]) if self._rest.size else audio
        count = data.shape[0] // FRAME
        self._rest = data[count * FRAME :].copy()
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        frames = data[: count * FRAME].reshape(count, FRAME).astype(np.float32)
        contexts = np.empty((count, CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        if count > 1:
            contexts[1:] = frames[:-1, -CONTEXT:]
        self._context = frames[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, frames], axis=1)
        out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(out, dtype=np.float32).reshape(-1)


class AudioRing:
    """The last ``capacity`` samples of the stream, addressed by absolute sample position."""

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(capacity, dtype=np.float32)
        self.capacity = capacity
        self.end = 0  # absolute position after the newest sample

    @property
    def start(self) -> int:
        return max(0, self.end - self.capacity)

    def append(self, audio: np.ndarray) -> None:
        if audio.shape[0] >= self.capacity:
            self._data[:] = audio[-self.capacity :]
            self.end += audio.shape[0]
            return
        pos = self.end % self.capacity
        first = min(audio.shape[0], self.capacity - pos)
        self._data[pos : pos + first] = audio[:first]
        self._data[: audio.shape[0] - first] = audio[first:]
        self.end += audio.shape[0]

    def slice(self, begin: int, end: int) -> np.ndarray:
        begin = max(begin, self.start)
        end = min(end, self.end)
        if end <= begin:
            return np.zeros(0, dtype=np.float32)
        a, b = begin % self.capacity, end % self.capacity
        if a < b or (b == 0 and end - begin == self.capacity - a):
            return self._data[a : a + (end - begin)].copy()
        return np.concatenate([self._data[a:], self._data[:b]])


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _samples(ms: int) -> int:
    return ms * SAMPLE_RATE // 1000


def _norm(word: str) -> str:
    return word.lower().strip(".,!?;:。，！？；：\"'")


def merge_sentences(sentences: list[Sentence], language: str | None) -> Sentence | None:
    """One sentence out of the decoder's sentences for one VAD segment."""
    words: list[Word] = [w for s in sentences for w in s.words]
    if not sentences:
        return None
    text = sentence_text(words, language) if words else join_sentences([s.text for s in sentences], language)
    if not text.strip():
        return None
    translations = [s.translation for s in sentences if s.translation]
    return Sentence(
        begin_time=sentences[0].begin_time,
        end_time=sentences[-1].end_time,
        text=text,
        words=words,
        language=language,
        speaker_id=sentences[0].speaker_id,
        translation=" ".join(translations) if translations else None,
    )


@dataclass
class _Utterance:
    index: int
    start: int  # absolute sample where its audio begins (pre-roll included)
    speech_start: int
    last_speech: int  # absolute sample where speech was last heard
    probs: list[float] = field(default_factory=list)  # per VAD frame since ``start``
    stable: list[str] = field(default_factory=list)
    last_words: list[str] = field(default_factory=list)
    last_partial_at: int = 0
    partial_took_s: float = 0.0  # wall time the latest interim took, queueing included
    partial_seq: int = 0
    shown_seq: int = 0
    speculative: tuple[int, asyncio.Task[Decoded]] | None = None
    voiced: bool = False
    heads: list[asyncio.Task[Decoded]] = field(default_factory=list)
    head_end: int = 0  # absolute sample where the decoded heads end (the sentence start until one is cut)


class RecognitionStream:
    """One session's recognition state; drive it from a single coroutine (not thread-safe)."""

    def __init__(
        self,
        engine: StreamEngine,
        scheduler: Scheduler,
        key: int,
        emit: Emit,
        config: StreamConfig | None = None,
    ) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.key = key
        self.emit = emit
        self.config = config or StreamConfig()
        self.language = self.config.language
        cfg = self.config
        extra = cfg.preroll_ms + cfg.silence_ms + cfg.tail_ms + 2_000
        self._ring = AudioRing(_samples(cfg.max_sentence_ms + extra))
        self._vad = StreamingVad()
        self._vad_pos = 0  # absolute sample of the next VAD frame
        self._run = 0  # consecutive speech frames while not in speech
        self._silence = 0  # consecutive non-speech frames while in speech
        self._utterances = 0
        self._current: _Utterance | None = None
        self._manual_start = 0  # manual mode: where the uncommitted audio begins
        self._finals: list[asyncio.Task[None]] = []
        self._last_delivery: asyncio.Task[None] | None = None
        self._partial_task: asyncio.Task[None] | None = None
        self._closed = False
        self._final_cost: float | None = None  # seconds a final took per second of its audio (EWMA)
        self.speculative_abandoned = 0  # speculative finals given up because speech went on
        self.heads = 0  # heads of long sentences decoded while they went on
        self.failure: BaseException | None = None

    # -- input --------------------------------------------------------------------------------------
    @property
    def position_ms(self) -> int:
        return _ms(self._ring.end)

    @property
    def in_speech(self) -> bool:
        return self._current is not None

    async def push(self, audio: np.ndarray) -> None:
        """Add audio. Large chunks (bursts) run the VAD in a thread; waits while too many finals are pending."""
        if self._closed or audio.size == 0:
            return
        self._raise_failure()
        for start in range(0, audio.shape[0], SAMPLE_RATE):
            chunk = audio[start : start + SAMPLE_RATE]
            probs = (
                await asyncio.to_thread(self._vad.process, chunk)
                if chunk.shape[0] >= SAMPLE_RATE // 2
                else self._vad.process(chunk)
            )
            self._ring.append(chunk)
            for prob in probs:
                await self._on_frame(float(prob))
            await self._backpressure()
        self._maybe_partial()

    async def commit(self) -> bool:
        """Manual mode: close everything since the last commit as one sentence. False if nothing to commit."""
        self._raise_failure()
        end = self._ring.end
        utt = self._current
        if utt is None:
            if end - self._manual_start < SAMPLE_RATE // 10:
                return False
            utt = self._open(self._manual_start, self._manual_start)
        await self._close(utt, end, end, stopped=False)
        self._manual_start = end
        return True

    async def finish(self) -> None:
        """End of input: close the open sentence and wait until every final has been emitted."""
        if self._closed:
            return
        utt = self._current
        if utt is not None:
            end = min(self._ring.end, utt.last_speech + _samples(self.config.tail_ms))
            if self.config.manual:
                end = self._ring.end
            await self._close(
                utt, utt.last_speech if not self.config.manual else end, end, stopped=not self.config.manual
            )
        if self._partial_task is not None:
            self._partial_task.cancel()
        if self._last_delivery is not None:
            await asyncio.shield(self._last_delivery)
        self._raise_failure()

    def clear(self) -> None:
        """Forget uncommitted audio: the open sentence is dropped without a final."""
        utt = self._current
        self._current = None
        self._run = 0
        self._silence = 0
        if utt is not None:
            self._cancel_pending(utt)
        if self._partial_task is not None:
            self._partial_task.cancel()
            self._partial_task = None
        self._manual_start = self._ring.end

    def close(self) -> None:
        """Drop all pending work (client went away)."""
        self._closed = True
        for task in self._finals:
            task.cancel()
        if self._partial_task is not None:
            self._partial_task.cancel()
        if self._current is not None:
            self._cancel_pending(self._current)

    @staticmethod
    def _cancel_pending(utt: _Utterance) -> None:
        if utt.speculative is not None:
            utt.speculative[1].cancel()
        for head in utt.heads:
            head.cancel()

    # -- VAD state machine --------------------------------------------------------------------------
    async def _on_frame(self, prob: float) -> None:
        cfg = self.config
        frame_end = self._vad_pos + FRAME
        self._vad_pos = frame_end
        utt = self._current
        if utt is None:
            if prob >= cfg.threshold:
                self._run += 1
                if self._run * FRAME_MS >= cfg.min_speech_ms:
                    speech_start = frame_end - self._run * FRAME
                    start = max(self._ring.start, speech_start - _samples(cfg.preroll_ms))
                    if cfg.manual:
                        start = max(self._ring.start, self._manual_start)
                    utt = self._open(start, speech_start)
                    utt.last_speech = frame_end
                    if not cfg.manual:
                        await self.emit(SpeechStarted(utt.index, _ms(speech_start)))
                    self._run = 0
            else:
                self._run = 0
                if cfg.manual and frame_end - self._manual_start > _samples(cfg.max_sentence_ms):
                    self._manual_start = frame_end - _samples(cfg.max_sentence_ms // 2)  # only silence so far
            return
        utt.probs.append(prob)
        if prob >= cfg.threshold:
            pause = frame_end - FRAME - utt.last_speech  # the silence this frame ends
            utt.last_speech = frame_end
            utt.voiced = True
            self._silence = 0
            if utt.speculative is not None:
                self._keep_as_head(utt, pause)
            self._maybe_head(utt, frame_end)
        elif prob < cfg.threshold - 0.15 or prob < 0.1:
            self._silence += 1
        silence_ms = _ms(frame_end - utt.last_speech)
        if not cfg.manual:
            if silence_ms >= cfg.silence_ms:
                end = min(frame_end, utt.last_speech + _samples(cfg.tail_ms))
                await self._close(utt, utt.last_speech, end, stopped=True)
                return
            if utt.speculative is None and self._speculate_at_ms(utt, frame_end) <= silence_ms:
                end = min(frame_end, utt.last_speech + _samples(cfg.tail_ms))
                utt.speculative = (end, self._tail(utt, end, utt.last_speech))
        if frame_end - utt.start >= _samples(cfg.max_sentence_ms):
            await self._force_cut(utt, frame_end)

    def _open(self, start: int, speech_start: int) -> _Utterance:
        self._utterances += 1
        utt = _Utterance(self._utterances, start, speech_start, speech_start, head_end=start)
        utt.last_partial_at = speech_start
        self._current = utt
        self._silence = 0
        return utt

    async def _force_cut(self, utt: _Utterance, now: int) -> None:
        """The sentence is too long: end it at the quietest frame of its second half."""
        first = len(utt.probs) // 2
        last = max(first + 1, len(utt.probs) - 8)
        window = utt.probs[first:last]
        best = first + int(np.argmin(np.asarray(window))) if window else len(utt.probs) - 1
        frames_before = len(utt.probs)
        cut = now - (frames_before - best - 1) * FRAME
        cut = max(utt.start + SAMPLE_RATE, min(cut, now))
        rest = utt.probs[best + 1 :]
        await self._close(utt, cut, cut, stopped=not self.config.manual)
        if self.config.manual:
            self._manual_start = cut
        new = self._open(cut, cut)
        new.probs = list(rest)
        new.last_speech = now if any(p >= self.config.threshold for p in rest) else cut
        new.voiced = new.last_speech > cut
        if not self.config.manual:
            await self.emit(SpeechStarted(new.index, _ms(cut)))

    async def _close(self, utt: _Utterance, speech_end: int, end: int, *, stopped: bool) -> None:
        self._current = None
        self._silence = 0
        self._run = 0
        if stopped:
            await self.emit(SpeechStopped(utt.index, _ms(speech_end)))
        if self._partial_task is not None:
            self._partial_task.cancel()
            self._partial_task = None
        spec = utt.speculative
        if spec is not None and speech_end <= spec[0] <= end and not spec[1].cancelled():
            tail = spec[1]  # it covers all the speech (started in this silence, before the tail was all in)
        else:
            if spec is not None:
                spec[1].cancel()
                self.speculative_abandoned += 1
            heard_until = utt.last_speech if utt.voiced or not self.config.manual else None
            tail = self._tail(utt, end, heard_until)
        decode = asyncio.ensure_future(self._with_heads(list(utt.heads), tail))
        previous = self._last_delivery
        task = asyncio.ensure_future(self._deliver(utt, decode, previous, _ms(utt.start), _ms(end)))
        self._last_delivery = task
        self._finals.append(task)

    def _maybe_head(self, utt: _Utterance, now: int) -> None:
        """Speech goes on in a long sentence: decode its head, up to the latest pause, with the final model now
        (a final of a sentence that keeps going would otherwise decode all of it after its end)."""
        cfg = self.config
        if cfg.head_final_ms <= 0 or self.language is None or now - utt.head_end < _samples(cfg.head_final_ms):
            return  # (until the language is known, a sentence is decoded whole: short pieces are a poor vote)
        if self.scheduler.finals_waiting:
            return  # the decoders are behind: no extra work now, the final will cover it
        first = (utt.head_end - utt.start) // FRAME + HEAD_MIN_MS // FRAME_MS
        last = len(utt.probs) - HEAD_PAUSE_AGE_MS // FRAME_MS
        quiet = cfg.threshold - 0.15
        pause = None
        for i in range(last - 1, first + HEAD_PAUSE_FRAMES, -1):  # the latest pause of HEAD_PAUSE_FRAMES or more
            if all(p < quiet for p in utt.probs[i - HEAD_PAUSE_FRAMES + 1 : i + 1]):
                pause = i - HEAD_PAUSE_FRAMES // 2  # cut in its middle
                break
        if pause is None:
            return
        cut = utt.start + pause * FRAME
        audio = self._ring.slice(utt.head_end, cut)
        probs = utt.probs[(utt.head_end - utt.start) // FRAME : pause]
        utt.heads.append(asyncio.ensure_future(self._decode_final(audio, utt.head_end, None, probs, urgent=False)))
        utt.head_end = cut
        self.heads += 1

    def _keep_as_head(self, utt: _Utterance, pause: int) -> None:
        """Speech went on after a speculative final had started: the audio it decodes ends in the ``pause`` just
        ended, so it becomes a head of the sentence when both are long enough; otherwise it is given up."""
        assert utt.speculative is not None
        end, decode = utt.speculative
        utt.speculative = None
        long_enough = end - utt.head_end >= _samples(SPECULATIVE_HEAD_MS) and pause >= _samples(HEAD_MIN_PAUSE_MS)
        if long_enough and self.config.head_final_ms > 0 and self.language:
            utt.heads.append(decode)
            utt.head_end = end
            self.heads += 1
        else:
            decode.cancel()
            self.speculative_abandoned += 1

    def _tail(self, utt: _Utterance, end: int, speech_end: int | None) -> asyncio.Task[Decoded]:
        """The decode of the sentence's audio after its heads, up to ``end``."""
        start = utt.head_end
        probs = utt.probs[(start - utt.start) // FRAME :]
        return asyncio.ensure_future(self._decode_final(self._ring.slice(start, end), start, speech_end, probs))

    @staticmethod
    async def _with_heads(heads: list[asyncio.Task[Decoded]], tail: asyncio.Future[Decoded]) -> Decoded:
        """The sentence's final: its heads' words, then the tail's."""
        if not heads:
            return await tail
        results = await asyncio.gather(*heads, tail)
        sentences = [s for part, _language in results for s in part]
        language = next((lang for _part, lang in results if lang), None)
        return sentences, language

    async def _decode_final(
        self, audio: np.ndarray, start: int, speech_end: int | None, probs: list[float], *, urgent: bool = True
    ) -> Decoded:
        """Decode a closed piece of a sentence (not ``urgent``: the head of one still being spoken)."""
        speech_end_s = (speech_end - start) / SAMPLE_RATE if speech_end is not None else None
        language = self.language
        began = time.perf_counter()
        cut = self._split_point(audio, probs)
        if cut is None:
            result = await self.scheduler.run_final(
                self.key, lambda: self.engine.final(audio, _ms(start), language, speech_end_s), urgent=urgent
            )
        else:  # a long sentence: its two halves, cut in a pause, decode side by side on two workers
            rest_end = speech_end_s - cut / SAMPLE_RATE if speech_end_s is not None else None
            first, second = await asyncio.gather(
                self.scheduler.run_final(
                    self.key, lambda: self.engine.final(audio[:cut], _ms(start), language), urgent=urgent
                ),
                self.scheduler.run_final(
                    self.key,
                    lambda: self.engine.final(audio[cut:], _ms(start + cut), language, rest_end),
                    urgent=urgent,
                ),
            )
            result = (first[0] + second[0], first[1] or second[1])
        per_second = (time.perf_counter() - began) / max(1.0, audio.shape[0] / SAMPLE_RATE)
        self._final_cost = per_second if self._final_cost is None else 0.7 * self._final_cost + 0.3 * per_second
        return result

    def _split_point(self, audio: np.ndarray, probs: list[float]) -> int | None:
        """Where a sentence longer than ``split_final_ms`` may be cut for two side-by-side decodes: the
        quietest VAD frame of its middle third, if that frame is a pause; None otherwise."""
        cfg = self.config
        if cfg.split_final_ms <= 0 or self.scheduler.workers < 2 or audio.shape[0] < _samples(cfg.split_final_ms):
            return None
        frames = min(len(probs), audio.shape[0] // FRAME)
        if frames < 9:
            return None
        middle = np.asarray(probs[frames // 3 : 2 * frames // 3])
        quietest = int(np.argmin(middle))
        if middle[quietest] >= cfg.threshold - 0.15:
            return None
        return int((frames // 3 + quietest) * FRAME + FRAME // 2)

    def _speculate_at_ms(self, utt: _Utterance, now: int) -> int:
        """When to start a speculative final: late enough not to waste decodes on short pauses, early enough
        that the predicted decode time (this stream's recent finals, per second of audio) ends with the
        endpoint silence. Never with manual commits or when speculation is off."""
        cfg = self.config
        if cfg.manual or cfg.speculative_ms <= 0 or cfg.silence_ms <= cfg.speculative_ms:
            return 10**9
        if self.scheduler.finals_waiting:  # the decoders are behind: no work that may be thrown away
            return cfg.silence_ms
        predicted_ms = int((self._final_cost or DEFAULT_FINAL_COST) * 1000 * _ms(now - utt.start) / 1000)
        floor = cfg.speculative_ms // 2 if self.scheduler.idle else cfg.speculative_ms  # idle cores: waste is free
        return max(floor, min(cfg.silence_ms - 50, cfg.silence_ms - predicted_ms))

    async def _deliver(
        self,
        utt: _Utterance,
        decode: asyncio.Future[tuple[list[Sentence], str | None]],
        previous: asyncio.Task[None] | None,
        begin_ms: int,
        end_ms: int,
    ) -> None:
        try:
            sentences, language = await decode
        except asyncio.CancelledError:
            if self._closed:
                raise
            sentences, language = [], self.language
        except Exception as exc:  # an engine failure ends the stream with an error
            log.exception("final decode failed")
            self.failure = exc
            sentences, language = [], self.language
        if previous is not None:
            try:
                await previous
            except asyncio.CancelledError:
                if self._closed:
                    raise
        if language and self.language is None:
            self.language = language
        sentence = merge_sentences(sentences, language)
        if sentence is not None:
            sentence.begin_time = max(sentence.begin_time, begin_ms)
            sentence.end_time = max(sentence.end_time, sentence.begin_time)
        if not self._closed:
            await self.emit(Final(utt.index, begin_ms, end_ms, sentence, language))

    async def _backpressure(self) -> None:
        self._finals = [t for t in self._finals if not t.done()]
        while len(self._finals) > self.config.max_pending_finals:
            await asyncio.wait([self._finals[0]])
            self._finals = [t for t in self._finals if not t.done()]

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    # -- partials -----------------------------------------------------------------------------------
    def _maybe_partial(self) -> None:
        utt = self._current
        cfg = self.config
        if utt is None or self._closed or (not utt.voiced and not cfg.manual):
            return
        if self._partial_task is not None and not self._partial_task.done():
            return
        now = self._ring.end
        heard = now - utt.speech_start
        if utt.partial_seq == 0:
            if heard < _samples(cfg.first_partial_ms):
                return
        elif now - utt.last_partial_at < _samples(self._partial_interval_ms(utt)):
            return
        if self.scheduler.pending(self.key) > 0:
            return  # finals of this stream are waiting: skip this partial, the input is ahead
        utt.last_partial_at = now
        utt.partial_seq += 1
        audio = self._ring.slice(utt.start, now)
        self._partial_task = asyncio.ensure_future(self._run_partial(utt, audio, utt.partial_seq))

    def _partial_interval_ms(self, utt: _Utterance) -> int:
        """Interims come every ``partial_interval_ms``, or less often while each takes long (long sentences,
        busy decoders) or many streams share the cores: they are a preview, the CPU goes to finals first."""
        spacing_s = max(PARTIAL_PACE * utt.partial_took_s, self.scheduler.partial_spacing_s(self.key))
        return max(self.config.partial_interval_ms, int(spacing_s * 1000))

    async def _run_partial(self, utt: _Utterance, audio: np.ndarray, seq: int) -> None:
        prefix = " ".join(utt.stable)
        language = self.language
        began = time.perf_counter()
        hyp = await self.scheduler.run_partial(
            self.key,
            lambda: self.engine.partial(audio, prefix, language),
            wanted=lambda: self._current is utt and not self._closed,
        )
        utt.partial_took_s = time.perf_counter() - began
        if hyp is None or self._current is not utt or self._closed or seq <= utt.shown_seq:
            return
        utt.shown_seq = seq
        words = hyp.text.split()
        if not words:
            return
        # Local agreement: words two consecutive hypotheses share become stable; never taken back.
        agreed = len(utt.stable)
        previous = utt.last_words
        while agreed < len(words) - 1 and agreed < len(previous) and _norm(words[agreed]) == _norm(previous[agreed]):
            agreed += 1
        stable = words[:agreed]
        stable = utt.stable + stable[len(utt.stable) :] if len(stable) >= len(utt.stable) else utt.stable
        utt.stable = stable
        text_words = stable + words[len(stable) :]
        utt.last_words = text_words
        stable_text = " ".join(stable)
        text = " ".join(text_words)
        if stable_text and len(text_words) > len(stable):
            stable_text += " "
        await self.emit(Interim(utt.index, _ms(utt.speech_start), text, stable_text))
