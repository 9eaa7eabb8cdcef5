"""Live speaker labels on the run-task WebSocket: real readers streamed, stable ids as sentences finalize."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from bench import speech_mixes
from bench.speech_mixes import SpeechMix

from tests.conftest import RunningServer
from tests.integration.test_realtime_runtask import connect, finals, run_task

SR = 16_000


def labels_by_reader(mix: SpeechMix, sentences: list[dict[str, Any]]) -> dict[int, set[int]]:
    """The speaker ids given to each reader's sentences (the reader whose turn holds a sentence's middle)."""
    by_reader: dict[int, set[int]] = {}
    for sentence in sentences:
        middle = (sentence["begin_time"] + sentence["end_time"]) / 2 * SR / 1000
        reader = min(mix.turns, key=lambda t: max(0.0, t[0] - middle, middle - t[1]))[2]
        by_reader.setdefault(reader, set()).add(sentence["speaker_id"])
    return by_reader


def assert_one_label_per_reader(mix: SpeechMix, sentences: list[dict[str, Any]]) -> None:
    by_reader = labels_by_reader(mix, sentences)
    assert sorted(by_reader) == list(range(mix.speakers))
    assert all(len(labels) == 1 for labels in by_reader.values()), by_reader
    assert len({next(iter(labels)) for labels in by_reader.values()}) == mix.speakers, by_reader


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()


def test_live_labels_of_three_real_readers(server: RunningServer) -> None:
    """Three real readers from three recordings (dickens, beckett, nell), 6 turns of 3-5 s with 2 s pauses:
    every reader keeps one label and no two readers share one."""
    mix = speech_mixes.build("live", ["d1s", "b1", "l1", "d2s", "b2", "l2"], 2.0)
    pcm = pcm16(mix.audio)
    ws = connect(server)
    try:
        events = run_task(ws, uuid.uuid4().hex, pcm, diarization_enabled=True, language_hints=["en"])
        plain = run_task(ws, uuid.uuid4().hex, pcm[: 4 * SR * 2])
    finally:
        ws.close()
    sentences = finals(events)
    assert len(sentences) >= 6, [s["text"] for s in sentences]
    assert_one_label_per_reader(mix, sentences)
    assert "best of times" in " ".join(s["text"] for s in sentences).lower()
    assert all("speaker_id" not in s for s in finals(plain))


def test_live_labels_of_three_real_readers_in_noise(server: RunningServer) -> None:
    """Three real readers (nagg, dickens, beckett; two of them men) streamed through white noise at 20 dB
    SNR, 6 turns with 1 s pauses: still one label per reader, none shared."""
    mix = speech_mixes.build("live noise", ["n1", "d1s", "b1", "n2", "d2s", "b2"], 1.0)
    noisy = SpeechMix(mix.name, speech_mixes.with_noise(mix.audio, 20), mix.turns)
    ws = connect(server)
    try:
        events = run_task(ws, uuid.uuid4().hex, pcm16(noisy.audio), diarization_enabled=True, language_hints=["en"])
    finally:
        ws.close()
    sentences = finals(events)
    assert len(sentences) >= 6, [s["text"] for s in sentences]
    assert_one_label_per_reader(noisy, sentences)
