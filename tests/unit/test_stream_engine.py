"""Stream state machine, scheduler and guards, with a FakeEngine standing in for Whisper (real Silero VAD)."""

from __future__ import annotations

import asyncio
import itertools
import time
import wave
from collections.abc import Awaitable, Callable

import numpy as np

from tests.conftest import audio_file
from voxgate.engine.partial import Hypothesis, repeated_phrase
from voxgate.engine.scheduler import Scheduler, ThreadPlan
from voxgate.engine.stream import (
    AudioRing,
    Final,
    Interim,
    RecognitionStream,
    SpeechStarted,
    SpeechStopped,
    StreamConfig,
    StreamEvent,
)
from voxgate.engine.types import Sentence, Word

RATE = 16_000


def speech(name: str) -> np.ndarray:
    with wave.open(str(audio_file(name)), "rb") as handle:
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(np.float32) / 32768


class FakeEngine:
    """Pretends to recognize: partials grow one word per call (with a wobbling last word), finals report
    the clip's span. Records every call."""

    WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.partials: list[tuple[int, str]] = []
        self.finals: list[tuple[int, int]] = []
        self.calls = 0

    def partial(self, audio: np.ndarray, prefix: str, language: str | None) -> Hypothesis:
        time.sleep(self.delay)
        self.calls += 1
        self.partials.append((audio.shape[0], prefix))
        count = min(len(self.WORDS), 1 + audio.shape[0] // (RATE // 2))
        words = list(self.WORDS[:count])
        if self.calls % 2:
            words = [*words[:-1], words[-1].upper() + "X"]  # an unstable last word
        return Hypothesis(" ".join(words), "en")

    def final(
        self, audio: np.ndarray, offset_ms: int, language: str | None, speech_end_s: float | None = None
    ) -> tuple[list[Sentence], str | None]:
        time.sleep(self.delay)
        self.finals.append((offset_ms, audio.shape[0]))
        end = offset_ms + audio.shape[0] * 1000 // RATE
        word = Word(offset_ms, end, "utterance", ".")
        return [Sentence(offset_ms, end, "utterance.", [word], "en")], "en"


async def run_stream(
    audio: np.ndarray, config: StreamConfig, engine: FakeEngine | None = None, chunk: int = 1600, pace: float = 0.0
) -> tuple[list[StreamEvent], FakeEngine]:
    engine = engine or FakeEngine()
    scheduler = Scheduler(ThreadPlan(1, 1))
    scheduler.start()
    events: list[StreamEvent] = []

    async def emit(event: StreamEvent) -> None:
        events.append(event)

    ticket = scheduler.admit(0.1)
    stream = RecognitionStream(engine, scheduler, ticket.key, emit, config)
    try:
        for i in range(0, audio.shape[0], chunk):
            await stream.push(audio[i : i + chunk])
            await asyncio.sleep(pace)
        await stream.finish()
    finally:
        stream.close()
        scheduler.release(ticket)
        await asyncio.to_thread(scheduler.stop)
    return events, engine


def two_utterances() -> np.ndarray:
    silence = np.zeros(RATE, dtype=np.float32)
    return np.concatenate([silence, speech("goforward.wav"), silence, speech("something.wav"), silence])


async def stream_on_two_workers(
    audio: np.ndarray,
    config: StreamConfig,
    stream_class: type[RecognitionStream] = RecognitionStream,
    on_event: Callable[[StreamEvent], Awaitable[None]] | None = None,
    engine: FakeEngine | None = None,
) -> tuple[list[StreamEvent], FakeEngine, RecognitionStream]:
    """Stream ``audio`` in 100 ms pieces through a two-worker scheduler (heads and halves can run side by side)."""
    engine = engine or FakeEngine()
    scheduler = Scheduler(ThreadPlan(2, 1))
    scheduler.start()
    events: list[StreamEvent] = []

    async def emit(event: StreamEvent) -> None:
        if on_event is not None:
            await on_event(event)
        events.append(event)

    stream = stream_class(engine, scheduler, scheduler.admit(0.1).key, emit, config)
    try:
        for i in range(0, audio.shape[0], 1600):
            await stream.push(audio[i : i + 1600])
            await asyncio.sleep(0.001)
        await stream.finish()
    finally:
        await asyncio.to_thread(scheduler.stop)
    return events, engine, stream


async def test_vad_endpointing_emits_ordered_events_per_sentence() -> None:
    events, engine = await run_stream(two_utterances(), StreamConfig(silence_ms=500), pace=0.002)
    kinds = [type(e).__name__ for e in events if not isinstance(e, Interim)]
    assert kinds == ["SpeechStarted", "SpeechStopped", "Final", "SpeechStarted", "SpeechStopped", "Final"]
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.utterance for f in finals] == [1, 2]
    starts = [e.begin_ms for e in events if isinstance(e, SpeechStarted)]
    stops = [e.end_ms for e in events if isinstance(e, SpeechStopped)]
    assert 1000 <= starts[0] < stops[0] < starts[1] < stops[1]
    assert finals[0].sentence is not None and finals[0].sentence.begin_time < stops[0]
    assert len(engine.finals) >= 2


async def test_interims_keep_their_stable_prefix() -> None:
    events, _ = await run_stream(two_utterances(), StreamConfig(silence_ms=500), pace=0.01)
    interims = [e for e in events if isinstance(e, Interim)]
    assert interims, "no interim results"
    by_utt: dict[int, list[Interim]] = {}
    for event in interims:
        by_utt.setdefault(event.utterance, []).append(event)
        assert event.text.startswith(event.stable)
        assert "X" not in event.stable  # the wobbling word is never confirmed while it wobbles
    for group in by_utt.values():
        stables = [e.stable.strip() for e in group]
        assert all(b.startswith(a) for a, b in itertools.pairwise(stables)), stables


async def test_max_sentence_length_forces_a_final() -> None:
    talk = np.concatenate([speech("goforward.wav"), speech("something.wav")] * 3)
    events, _ = await run_stream(talk, StreamConfig(silence_ms=3000, max_sentence_ms=4000))
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) >= 3
    assert all(f.end_ms - f.begin_ms <= 4000 + 400 for f in finals)
    # sentences tile the audio without gaps or overlaps between consecutive forced cuts
    assert all(b.begin_ms >= a.end_ms - 400 for a, b in itertools.pairwise(finals))


async def test_manual_mode_only_commit_closes_a_sentence() -> None:
    engine = FakeEngine()
    scheduler = Scheduler(ThreadPlan(1, 1))
    scheduler.start()
    events: list[StreamEvent] = []

    async def emit(event: StreamEvent) -> None:
        events.append(event)

    stream = RecognitionStream(engine, scheduler, 1, emit, StreamConfig(manual=True, silence_ms=200))
    try:
        await stream.push(two_utterances())
        assert not [e for e in events if isinstance(e, (Final, SpeechStarted, SpeechStopped))]
        assert await stream.commit()
        await stream.finish()
    finally:
        await asyncio.to_thread(scheduler.stop)
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 1 and finals[0].begin_ms == 0
    assert not await stream.commit()  # nothing new since the last commit


async def test_burst_input_is_backpressured_not_buffered_without_bound() -> None:
    engine = FakeEngine(delay=0.05)
    talk = np.concatenate([two_utterances()] * 4)
    events, _ = await run_stream(talk, StreamConfig(silence_ms=300, max_pending_finals=2), engine, chunk=RATE * 4)
    assert len([e for e in events if isinstance(e, Final)]) == 8


def test_audio_ring_keeps_the_newest_samples() -> None:
    ring = AudioRing(10)
    ring.append(np.arange(7, dtype=np.float32))
    ring.append(np.arange(7, 14, dtype=np.float32))
    assert ring.start == 4 and ring.end == 14
    assert ring.slice(0, 14).tolist() == list(range(4, 14))
    assert ring.slice(8, 12).tolist() == [8, 9, 10, 11]
    ring.append(np.arange(14, 40, dtype=np.float32))
    assert ring.slice(30, 40).tolist() == list(range(30, 40))


def test_repeated_phrase_finds_a_re_read_sentence() -> None:
    sentence = "Volunteers are needed to help with the reading program."
    words = f"{sentence} Volunteers are needed to help".split(" ")
    assert repeated_phrase(words) == 9
    assert repeated_phrase(["the", "cat", "and", "the", "dog", "and", "the", "bird", "sat"]) is None
    assert repeated_phrase(["go", "forward", "ten", "meters"]) is None


def test_repeated_phrase_finds_a_re_read_cut_short() -> None:
    said = "It was the age of wisdom. It was the age of foolishness."
    assert repeated_phrase(f"{said} It was the age of wisdom. It was the age of foolish".split()) == 12


def test_repeated_phrase_leaves_parallel_phrasing_alone() -> None:
    dickens = "It was the best of times, it was the worst of times. It was the age of wisdom, it was the age of"
    assert repeated_phrase(f"{dickens} foolishness.".split()) is None
    assert repeated_phrase(f"{dickens} foolishness. It was the best of times, it was".split()) == 24


async def test_long_sentence_decodes_as_two_halves_side_by_side() -> None:
    pause = np.zeros(RATE * 4 // 10, dtype=np.float32)  # shorter than the endpoint silence
    talk = np.concatenate([speech("goforward.wav"), pause, speech("something.wav"), pause] * 2)
    audio = np.concatenate([np.zeros(RATE // 2, dtype=np.float32), talk, np.zeros(4 * RATE, dtype=np.float32)])
    engine = FakeEngine()
    scheduler = Scheduler(ThreadPlan(2, 1))
    scheduler.start()
    events: list[StreamEvent] = []

    async def emit(event: StreamEvent) -> None:
        events.append(event)

    config = StreamConfig(silence_ms=3000, split_final_ms=4000, speculative_ms=0, head_final_ms=0)
    stream = RecognitionStream(engine, scheduler, scheduler.admit(0.1).key, emit, config)
    try:
        await stream.push(audio)
        await stream.finish()
    finally:
        await asyncio.to_thread(scheduler.stop)
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 1  # one sentence for the client ...
    assert len(engine.finals) == 2  # ... decoded as two halves
    (first_ms, first_len), (second_ms, _) = sorted(engine.finals)
    assert second_ms == first_ms + first_len * 1000 // RATE  # the halves tile the sentence
    sentence = finals[0].sentence
    assert sentence is not None and sentence.text.count("utterance") == 2 and sentence.end_time > 10_000


async def test_long_sentence_heads_are_decoded_while_it_goes_on() -> None:
    """A sentence that keeps going past ``head_final_ms``: its head up to a pause is decoded with the final model
    while speech continues, so the decode after its end covers only the rest; the pieces tile the sentence and
    the client still gets one final."""
    pause = np.zeros(RATE * 4 // 10, dtype=np.float32)  # shorter than the endpoint silence
    talk = np.concatenate([speech("goforward.wav"), pause, speech("something.wav"), pause] * 3)
    audio = np.concatenate([np.zeros(RATE // 2, dtype=np.float32), talk, np.zeros(4 * RATE, dtype=np.float32)])
    decoded_before_the_end: list[int] = []
    engine = FakeEngine()

    async def on_event(event: StreamEvent) -> None:
        if isinstance(event, SpeechStopped):
            await asyncio.sleep(0.2)  # let heads already submitted finish
            decoded_before_the_end.append(len(engine.finals))

    config = StreamConfig(
        silence_ms=3000, max_sentence_ms=60_000, split_final_ms=0, head_final_ms=4000, speculative_ms=0, language="en"
    )
    events, _, stream = await stream_on_two_workers(audio, config, on_event=on_event, engine=engine)
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 1 and finals[0].sentence is not None
    assert stream.heads >= 2 and decoded_before_the_end[0] >= 2, "heads decoded while the sentence went on"
    spans = sorted(engine.finals)
    for (start, length), (after, _) in itertools.pairwise(spans):
        assert after == start + length * 1000 // RATE, spans  # head, head, ..., rest: they tile the sentence
    assert spans[-1][1] < 6 * RATE, "the decode after the end covers only the rest"
    assert finals[0].sentence.text.count("utterance") == len(spans)


async def test_a_sentence_is_decoded_whole_until_the_language_is_known() -> None:
    pause = np.zeros(RATE * 4 // 10, dtype=np.float32)
    talk = np.concatenate([speech("goforward.wav"), pause, speech("something.wav"), pause] * 3)
    audio = np.concatenate([pause, talk, np.zeros(4 * RATE, dtype=np.float32)])
    config = StreamConfig(silence_ms=3000, max_sentence_ms=60_000, split_final_ms=0, head_final_ms=4000)
    events, engine = await run_stream(audio, config)
    assert len([e for e in events if isinstance(e, Final)]) == 1
    assert len(engine.finals) == 1, "one decode of the whole sentence: its language is voted on all of it"


class EagerSpeculation(RecognitionStream):
    """Starts speculative finals 200 ms into any pause (the policy's timing is tested elsewhere)."""

    def _speculate_at_ms(self, utt: object, now: int) -> int:
        return 200


async def test_speculative_final_overtaken_by_speech_becomes_a_head() -> None:
    """A pause long enough to start a speculative final, then more speech: the decode already made covers the
    sentence up to that pause and is kept as its head, not thrown away."""
    pause, end = np.zeros(RATE * 4 // 10, dtype=np.float32), np.zeros(3 * RATE, dtype=np.float32)
    audio = np.concatenate([pause, speech("goforward.wav"), pause, speech("something.wav"), end])
    config = StreamConfig(silence_ms=2000, split_final_ms=0, head_final_ms=60_000, language="en")
    events, engine, stream = await stream_on_two_workers(audio, config, EagerSpeculation)
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 1 and finals[0].sentence is not None
    assert stream.heads >= 1 and stream.speculative_abandoned == 0, (stream.heads, stream.speculative_abandoned)
    spans = sorted(engine.finals)
    assert len(spans) == stream.heads + 1, "no decode thrown away"
    for (start, length), (after, _) in itertools.pairwise(spans):
        assert after == start + length * 1000 // RATE, spans


class EarlySpeculation(RecognitionStream):
    """Starts speculative finals 100 ms into any pause: before the 200 ms tail after the speech is all in."""

    def _speculate_at_ms(self, utt: object, now: int) -> int:
        return 100


async def test_a_speculative_final_started_before_the_tail_is_in_is_the_final() -> None:
    """Idle cores speculate early in the silence; the decode then ends in the silence, before the tail the
    closed sentence keeps. It still covers all the speech, so it is the final: nothing is decoded twice."""
    silence = np.zeros(RATE, dtype=np.float32)
    audio = np.concatenate([silence, speech("goforward.wav"), silence, speech("something.wav"), silence])
    config = StreamConfig(silence_ms=500, split_final_ms=0, head_final_ms=0, language="en")
    events, engine, stream = await stream_on_two_workers(audio, config, EarlySpeculation)
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 2 and all(f.sentence is not None for f in finals)
    assert len(engine.finals) == 2, engine.finals
    assert stream.speculative_abandoned == 0
