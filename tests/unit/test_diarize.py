"""Diarization pieces: mel front end, clustering, word labelling, the online labeler (real ONNX encoder)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from bench import speech_mixes

from tests.conftest import synth
from voxgate.engine import diarize
from voxgate.engine.sentences import group_sentences, make_words
from voxgate.engine.types import Sentence

SR = 16_000


def read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    return data.astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[np.ndarray]]:
    """Two clearly different synthetic voices, two sentences each."""
    folder = tmp_path_factory.mktemp("voices")
    texts = ["please send the quarterly report to the finance team", "we should meet again next week"]
    out: dict[str, list[np.ndarray]] = {}
    for voice in ("en-us", "en+f4"):
        out[voice] = [read(synth(t, folder / f"{voice}-{i}.wav", voice=voice)) for i, t in enumerate(texts)]
    return out


def test_mel_front_end_shape_and_band() -> None:
    t = np.arange(SR) / SR
    mel = diarize.mel_spectrogram((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert mel.shape == (1 + SR // 160, 40) and mel.dtype == np.float32
    band = int(np.argmax(mel[50]))
    low = diarize._mel_to_hz(np.linspace(0, diarize._hz_to_mel(np.array(8000.0)), 42))
    assert low[band] < 1000 < low[band + 2]
    assert diarize.mel_spectrogram(np.zeros(100, dtype=np.float32)).shape == (1, 40)


def _groups(rng: np.random.Generator, sizes: list[int], spread: float) -> tuple[np.ndarray, np.ndarray]:
    centres = np.abs(rng.standard_normal((len(sizes), 256)))
    rows, truth = [], []
    for index, size in enumerate(sizes):
        rows.append(centres[index] + spread * np.abs(rng.standard_normal((size, 256))))
        truth += [index] * size
    vectors = np.concatenate(rows)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.array(truth)


def test_clustering_estimates_the_count_or_uses_the_given_one() -> None:
    rng = np.random.default_rng(1)
    embeddings, truth = _groups(rng, [6, 4, 5], spread=0.3)
    labels = diarize.cluster(embeddings.astype(np.float32), threshold=0.1)
    assert len(set(labels.tolist())) == 3
    for group in range(3):  # each true group is one cluster
        assert len(set(labels[truth == group].tolist())) == 1
    assert len(set(diarize.cluster(embeddings.astype(np.float32), 2).tolist())) == 2
    one, _ = _groups(rng, [10], spread=0.05)
    assert set(diarize.cluster(one.astype(np.float32)).tolist()) == {0}
    # asking for more speakers than there are voices does not split one voice
    assert set(diarize.cluster(one.astype(np.float32), 3).tolist()) == {0}


def test_words_take_the_speaker_of_their_time_and_sentences_split() -> None:
    raw = [(0.0, 0.4, " Hello", 1.0), (0.5, 0.9, " there", 1.0), (1.0, 1.3, " hi", 1.0), (1.4, 1.8, " back.", 1.0)]
    sentences = group_sentences(make_words(raw), "en")
    spans = np.array([[0, 950], [980, 2000]])
    labels = np.array([3, 1])  # raw cluster numbers: renumbered by first appearance
    out = diarize.label_sentences(sentences, spans, labels)
    assert [(s.text, s.speaker_id, s.begin_time, s.end_time) for s in out] == [
        ("Hello there", 0, 0, 900),
        ("hi back.", 1, 1000, 1800),
    ]


def test_a_lone_short_word_does_not_split_a_sentence() -> None:
    raw = [(0.0, 0.4, " one", 1.0), (0.5, 0.8, " two", 1.0), (0.9, 1.3, " three.", 1.0)]
    sentences = group_sentences(make_words(raw), "en")
    out = diarize.label_sentences(sentences, np.array([[0, 480], [480, 850], [850, 1400]]), np.array([0, 1, 0]))
    assert len(out) == 1 and out[0].speaker_id == 0


def test_track_separates_two_voices(voices: dict[str, list[np.ndarray]]) -> None:
    gap = np.zeros(SR // 2, dtype=np.float32)
    parts = [voices["en-us"][0], gap, voices["en+f4"][0], gap, voices["en-us"][1], gap, voices["en+f4"][1]]
    audio = np.concatenate(parts)
    bounds = np.cumsum([0, *[p.size for p in parts]])
    sentences = [
        Sentence(int(bounds[i] * 1000 // SR), int(bounds[i + 1] * 1000 // SR), f"turn {i}") for i in range(0, 7, 2)
    ]
    track = diarize.DiarizationTrack()
    half = int(bounds[3])  # fed in two blocks, as the file path does
    track.add(audio[:half], 0)
    track.add(audio[half:], half)
    assert [s.speaker_id for s in track.label(sentences)] == [0, 1, 0, 1]
    fixed = diarize.diarize(audio, sentences, speaker_count=2)
    assert [s.speaker_id for s in fixed] == [0, 1, 0, 1]


def test_online_labeler_keeps_labels_stable(voices: dict[str, list[np.ndarray]]) -> None:
    labeler = diarize.OnlineSpeakerLabeler()
    order = [("en-us", 0), ("en+f4", 0), ("en-us", 1), ("en+f4", 1)]
    assert [labeler.assign(voices[v][i]) for v, i in order] == [0, 1, 0, 1]
    assert labeler.speaker_count == 2
    assert labeler.assign(np.zeros(1600, dtype=np.float32)) == 1  # too short: previous speaker
    sentence = labeler.label(Sentence(0, 100, "x"), voices["en-us"][0])
    assert sentence.speaker_id == 0


def test_online_labeler_labels_each_sentence_of_a_clip(voices: dict[str, list[np.ndarray]]) -> None:
    first, second = voices["en+f4"][1], voices["en-us"][1]
    clip = np.concatenate([first, np.zeros(SR // 2, dtype=np.float32), second])
    offset = 60_000
    split = offset + (first.size + SR // 2) * 1000 // SR
    sentences = [
        Sentence(offset, offset + first.size * 1000 // SR, "a"),
        Sentence(split, offset + clip.size * 1000 // SR, "b"),
    ]
    labeler = diarize.OnlineSpeakerLabeler()
    assert [s.speaker_id for s in labeler.label_clip(sentences, clip, offset)] == [0, 1]
    again = [Sentence(offset, offset + first.size * 1000 // SR, "c")]
    assert labeler.label_clip(again, first, offset)[0].speaker_id == 0


def test_a_short_cluster_joins_its_nearest_speaker() -> None:
    rng = np.random.default_rng(2)
    embeddings, _truth = _groups(rng, [8, 8], spread=0.2)
    stray = diarize._normalize(embeddings[0] + 0.6 * np.abs(rng.standard_normal(256)).astype(np.float32))
    rows = np.concatenate([embeddings, stray[None]]).astype(np.float32)
    spans = np.array([[i * 1000, i * 1000 + 2000] for i in range(rows.shape[0])])
    spans[-1] = [40_000, 41_000]  # one window, 1 s of speech
    alone = diarize.cluster(rows, threshold=0.05, spans=spans, min_speech_ms=0)
    assert alone.max() + 1 >= 3 and len(set(alone[:-1].tolist()) & {int(alone[-1])}) == 0
    joined = diarize.cluster(rows, threshold=0.05, spans=spans)
    assert joined.max() + 1 == 2 and joined[-1] == joined[0]
    assert diarize._covered_ms(np.array([[0, 2000], [1000, 3000], [5000, 5500]])) == 3500


def test_resegmentation_smooths_a_lone_window_and_keeps_real_turns() -> None:
    a, b = np.eye(256, dtype=np.float32)[0], np.eye(256, dtype=np.float32)[1]
    blend = diarize._normalize(0.48 * a + 0.52 * b)  # a little closer to b
    rows = np.stack([a, a, a, blend, a, a, b, b, b, a, a])
    labels = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0])
    spans = np.array([[i * 500, i * 500 + 2000] for i in range(rows.shape[0])])
    smoothed = diarize.resegment(spans, rows, labels)
    assert smoothed.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0]


def test_real_readers_without_gaps_are_two_speakers() -> None:
    """Two real readers from different recordings, turns of 3-4 s back to back: the count and the turns."""
    mix = speech_mixes.build("dickens/nell", ["d1s", "l1", "d2s", "l2"], 0.0)
    track = diarize.DiarizationTrack()
    track.add(mix.audio, 0)
    spans, labels = track.speakers()
    assert labels.max() + 1 == 2
    assert speech_mixes.frame_scores(mix.audio, mix.turns, spans, labels)["speaker_confusion"] <= 0.05


def test_one_real_reader_for_a_minute_and_a_half_is_one_speaker() -> None:
    mix = speech_mixes.single_reader(1.5, seed=5)
    track = diarize.DiarizationTrack()
    track.add(mix.audio, 0)
    assert set(track.speakers()[1].tolist()) == {0}


def test_live_labels_of_real_readers_one_label_each() -> None:
    mix = speech_mixes.build("dickens/beckett/nell", ["d1s", "b1", "l1", "d2s", "b2", "l2"], 1.0)
    spoken = speech_mixes.utterances(mix, silence_s=0.4)
    labeler = diarize.OnlineSpeakerLabeler()
    labels = [labeler.assign(mix.audio[a:b]) for a, b, _s in spoken]
    scores = speech_mixes.live_scores(labels, spoken)
    assert scores == {"speaker_confusion": 0.0, "labels_per_reader": 1, "labels": 3}, (labels, spoken)


def test_live_labels_hold_in_noise_at_20_db_snr() -> None:
    """Three real readers streamed through white noise at 20 dB SNR: still one label per reader (each
    utterance's own background is subtracted before it is embedded)."""
    mix = speech_mixes.build("nagg/dickens/beckett", ["n1", "d1s", "b1", "n2", "d2s", "b2"], 1.0)
    noisy = speech_mixes.SpeechMix(mix.name, speech_mixes.with_noise(mix.audio, 20), mix.turns)
    spoken = speech_mixes.utterances(noisy, silence_s=0.8)
    labeler = diarize.OnlineSpeakerLabeler()
    labels = [labeler.assign(noisy.audio[a:b]) for a, b, _s in spoken]
    scores = speech_mixes.live_scores(labels, spoken)
    assert scores == {"speaker_confusion": 0.0, "labels_per_reader": 1, "labels": 3}, (labels, spoken)
