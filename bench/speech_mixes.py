"""Multi-speaker mixes of real recordings with known turns, for diarization benchmarks and tests.

Only a handful of distinct real voices ship with the project (tests/data):

* ``dickens``: the reader of ``two_cities_16k.wav`` (male, 44 s, one audiobook recording);
* ``beckett``: the reader of ``beckett_16k.wav`` (male, 10 s, another recording);
* ``nagg`` and ``nell``: the man and the woman of ``endgame_nagg_nell_16k.wav`` (one recording, one room;
  their turns were found from VAD runs and pitch: Nagg's runs have a median F0 of 118-131 Hz, Nell's 176-200 Hz);
* ``goforward``, ``something``, ``numbers``: three CMU clips of 3-4 s (whether the last two are different people
  is not known).

Turns are cut from these recordings at silences (never mid-word), so a speaker's turns in one mix are different
stretches of its recording, except for the CMU clips (one turn each).
"""

from __future__ import annotations

import itertools
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxgate.engine import diarize

SR = 16_000
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"

# Turns as (first second, last second) of each recording, cut in the silence between VAD runs.
DICKENS = {
    "d1": (0.9, 6.45),
    "d2": (6.45, 13.15),
    "d3": (13.15, 20.88),
    "d4": (20.88, 28.72),
    "d5": (28.72, 42.0),
    "d1s": (0.9, 4.83),
    "d2s": (4.83, 8.55),
    "d3s": (8.55, 13.15),
    "d4s": (13.15, 17.15),
    "d5s": (17.15, 20.88),
    "d6s": (20.88, 24.36),
    "d7s": (24.36, 28.72),
}
BECKETT = {"b1": (0.0, 4.55), "b2": (4.55, 10.0)}
NAGG = {"n1": (4.54, 8.42), "n2": (11.7, 14.35), "n3": (23.46, 27.74), "n4": (17.31, 19.15)}
NELL = {"l1": (8.42, 11.7), "l2": (14.35, 17.31)}
# The Endgame dialogue as recorded: (begin s, end s, speaker) per VAD run, 0 = Nagg, 1 = Nell.
ENDGAME_TURNS = [
    (0.0, 1.03, 0),
    (1.5, 1.92, 1),
    (2.4, 3.4, 0),
    (3.87, 4.32, 1),
    (4.76, 8.2, 0),
    (8.64, 11.49, 1),
    (11.9, 14.12, 0),
    (14.59, 17.09, 1),
    (17.53, 18.95, 0),
    (19.36, 19.88, 1),
    (20.35, 21.99, 0),
    (22.46, 23.24, 1),
    (23.68, 27.52, 0),
    (27.96, 28.28, 1),
]
RECORDINGS = {
    "dickens": ("two_cities_16k.wav", DICKENS),
    "beckett": ("beckett_16k.wav", BECKETT),
    "nagg": ("endgame_nagg_nell_16k.wav", NAGG),
    "nell": ("endgame_nagg_nell_16k.wav", NELL),
}
CMU = ("goforward", "something", "numbers")


@dataclass
class SpeechMix:
    """Mono 16 kHz float32 audio and its turns as (first sample, end sample, speaker)."""

    name: str
    audio: np.ndarray
    turns: list[tuple[int, int, int]]
    note: str = ""

    @property
    def speakers(self) -> int:
        return len({t[2] for t in self.turns})

    @property
    def seconds(self) -> float:
        return self.audio.size / SR


def read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        assert handle.getframerate() == SR and handle.getnchannels() == 1, path
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    return data.astype(np.float32) / 32768.0


def write(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SR)
        handle.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def turn(name: str) -> np.ndarray:
    """One turn by its name (``d1``, ``b2``, ``n1``, ``l2``...) or a CMU clip by its file name."""
    if name in CMU:
        return read(DATA / f"{name}.wav")
    for file, cuts in RECORDINGS.values():
        if name in cuts:
            first, last = cuts[name]
            return read(DATA / file)[int(first * SR) : int(last * SR)]
    raise KeyError(name)


def speaker_of(name: str) -> str:
    if name in CMU:
        return name
    return next(speaker for speaker, (_file, cuts) in RECORDINGS.items() if name in cuts)


def build(name: str, turn_names: list[str], gap_s: float, note: str = "") -> SpeechMix:
    """Turns one after another with ``gap_s`` of silence between them; speakers numbered by first turn."""
    numbers: dict[str, int] = {}
    pieces: list[np.ndarray] = []
    turns: list[tuple[int, int, int]] = []
    position = 0
    gap = np.zeros(int(gap_s * SR), dtype=np.float32)
    for index, piece_name in enumerate(turn_names):
        audio = turn(piece_name)
        speaker = numbers.setdefault(speaker_of(piece_name), len(numbers))
        turns.append((position, position + audio.size, speaker))
        pieces.append(audio)
        position += audio.size
        if index < len(turn_names) - 1 and gap.size:
            pieces.append(gap)
            position += gap.size
    return SpeechMix(name, np.concatenate(pieces), turns, note)


def endgame() -> SpeechMix:
    audio = read(DATA / "endgame_nagg_nell_16k.wav")
    turns = [(int(a * SR), int(b * SR), s) for a, b, s in ENDGAME_TURNS]
    return SpeechMix("Endgame dialogue as recorded (Nagg/Nell)", audio, turns, "turns of 0.3-4 s, one room")


def single_reader(minutes: float, seed: int = 0) -> SpeechMix:
    """``two_cities`` read again and again up to ``minutes``, each pass with its own level (-9..+3 dB), a
    background hiss of its own (-70..-50 dBFS) and a pause of 1-3 s: one speaker throughout."""
    rng = np.random.default_rng(seed)
    reading = read(DATA / "two_cities_16k.wav")
    pieces: list[np.ndarray] = []
    total = 0
    while total < minutes * 60 * SR:
        gain = 10 ** (rng.uniform(-9, 3) / 20)
        hiss = 10 ** (rng.uniform(-70, -50) / 20)
        start = int(rng.uniform(0, 0.8) * SR)  # a pass may start a little into the reading
        passage = reading[start:] * gain + hiss * rng.standard_normal(reading.size - start).astype(np.float32)
        pause = np.zeros(int(rng.uniform(1.0, 3.0) * SR), dtype=np.float32)
        pieces += [passage.astype(np.float32), pause]
        total += passage.size + pause.size
    audio = np.concatenate(pieces)[: int(minutes * 60 * SR)]
    return SpeechMix(f"one reader, {minutes:g} min (dickens)", audio, [(0, audio.size, 0)], "")


def real_mixes() -> list[SpeechMix]:
    """The real-reader mixes of the benchmark: 2, 3 and 4 readers, with 0.7 s gaps and without."""
    return [
        build("2 readers, gaps: dickens/beckett", ["d1", "b1", "d2", "b2", "d3"], 0.7),
        build("2 readers, no gaps: dickens/nell", ["d1s", "l1", "d2s", "d3s", "l2", "d4s"], 0.0),
        endgame(),
        build("3 readers, gaps: dickens/beckett/nell", ["d1", "b1", "l1", "d2", "b2", "l2", "d3", "b1"], 0.7),
        build("3 readers, no gaps: nagg/dickens/beckett", ["n1", "d1s", "b1", "n2", "d2s", "b2", "n3", "d3s"], 0.0),
        build(
            "3 CMU readers, gaps: goforward/something/numbers",
            ["goforward", "something", "numbers", "something", "goforward", "numbers"],
            0.6,
            "each reader's turns are the same clip",
        ),
        build(
            "4 readers, gaps: dickens/beckett/nagg/nell",
            ["d1", "b1", "n1", "l1", "d2", "b2", "n3", "l2", "d3"],
            0.7,
        ),
        build(
            "4 readers, no gaps: nell/dickens/nagg/beckett",
            ["l1", "d1s", "n1", "b1", "l2", "d2s", "n2", "b2", "d3s", "n3"],
            0.0,
        ),
    ]


# -- recording conditions ------------------------------------------------------------------------------
def with_noise(audio: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White noise at ``snr_db`` below the speech (samples above -40 dBFS) power."""
    rng = np.random.default_rng(seed)
    loud = audio[np.abs(audio) > 0.01]
    power = float(np.mean(np.square(loud, dtype=np.float64))) if loud.size else 1e-4
    noise = np.sqrt(power / 10 ** (snr_db / 10)) * rng.standard_normal(audio.size)
    return np.asarray(audio + noise, dtype=np.float32)


def telephone_band(audio: np.ndarray) -> np.ndarray:
    """Only 300-3400 Hz kept (an ideal band-pass, as a narrowband phone line)."""
    spectrum = np.fft.rfft(audio)
    hz = np.fft.rfftfreq(audio.size, 1 / SR)
    spectrum[(hz < 300) | (hz > 3400)] = 0
    return np.asarray(np.fft.irfft(spectrum, audio.size), dtype=np.float32)


def with_reverb(audio: np.ndarray, rt60_s: float = 0.4, seed: int = 0) -> np.ndarray:
    """Convolved with an exponentially decaying noise impulse response (a plain room), same peak level."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rt60_s * SR)) / SR
    response = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60_s)
    response[0] = 1.0
    response /= np.sqrt(np.sum(response**2))
    n = audio.size + response.size
    wet = np.fft.irfft(np.fft.rfft(audio, n) * np.fft.rfft(response, n), n)[: audio.size]
    return np.asarray(wet / np.max(np.abs(wet)) * np.max(np.abs(audio)), dtype=np.float32)


CONDITIONS = {
    "noise, SNR 20 dB": lambda audio: with_noise(audio, 20),
    "noise, SNR 10 dB": lambda audio: with_noise(audio, 10),
    "telephone band": telephone_band,
    "reverberation 0.4 s": with_reverb,
}


# -- scoring -------------------------------------------------------------------------------------------
def reference_speech(audio: np.ndarray, turns: list[tuple[int, int, int]]) -> np.ndarray:
    """Speaker per 10 ms frame (-1: no speech): frames of a turn at most 30 dB below the turn's loudest
    frame, with gaps shorter than 0.3 s filled (the recordings carry their own leading/trailing silence)."""
    frames = audio.size // 160 + 1
    ref = -np.ones(frames, dtype=np.int64)
    for begin, end, speaker in turns:
        first, last = begin // 160, end // 160
        energy = np.array([np.sqrt(np.mean(audio[f * 160 : f * 160 + 160] ** 2) + 1e-12) for f in range(first, last)])
        loud = np.flatnonzero(energy > energy.max() * 10 ** (-30 / 20))
        if loud.size == 0:
            continue
        mask = np.zeros(last - first, dtype=bool)
        mask[loud] = True
        for a, b in itertools.pairwise(loud):
            if b - a <= 30:
                mask[a:b] = True
        ref[first:last][mask] = speaker
    return ref


def frame_scores(
    audio: np.ndarray, turns: list[tuple[int, int, int]], spans: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    ref = reference_speech(audio, turns)
    frames = ref.size
    hyp_speech = np.zeros(frames, dtype=bool)
    for begin_ms, end_ms in spans.tolist():
        hyp_speech[begin_ms // 10 : end_ms // 10] = True
    hyp = -np.ones(frames, dtype=np.int64)
    if labels.size:
        timeline = diarize._timeline(spans, labels, frames * 10)
        hyp = timeline[np.arange(frames) * 10 // diarize.TIMELINE_MS]
    speech = ref >= 0
    n_ref, n_hyp = int(ref.max()) + 1, int(hyp.max()) + 1
    best = 0
    for mapping in itertools.permutations(range(max(n_ref, n_hyp)), n_hyp):
        best = max(best, sum(int(np.sum(speech & (ref == mapping[h]) & (hyp == h))) for h in range(n_hyp)))
    confusion_all = 1 - best / speech.sum()  # every reference frame labelled by the timeline
    covered = speech & hyp_speech
    best_covered = 0
    for mapping in itertools.permutations(range(max(n_ref, n_hyp)), n_hyp):
        best_covered = max(
            best_covered, sum(int(np.sum(covered & (ref == mapping[h]) & (hyp == h))) for h in range(n_hyp))
        )
    missed = int(np.sum(speech & ~hyp_speech))
    false_alarm = int(np.sum(~speech & hyp_speech))
    confused = int(covered.sum()) - best_covered
    return {
        "speaker_confusion": round(float(confusion_all), 4),
        "der": round((missed + false_alarm + confused) / float(speech.sum()), 4),
        "der_missed": round(missed / float(speech.sum()), 4),
        "der_false_alarm": round(false_alarm / float(speech.sum()), 4),
        "der_confusion": round(confused / float(speech.sum()), 4),
    }


# -- live (streamed) labelling ----------------------------------------------------------------------------
def utterances(mix: SpeechMix, silence_s: float = 0.8, max_s: float = 15.0) -> list[tuple[int, int, int]]:
    """The utterances a live session would finalize: VAD runs joined across pauses shorter than
    ``silence_s`` (the streaming endpointing silence), cut at ``max_s``; as (first sample, end sample,
    reference speaker), the speaker being the one with the most overlap."""
    runs = diarize.speech_regions(mix.audio)
    grouped: list[list[int]] = []
    for start, end in runs:
        if grouped and start - grouped[-1][1] < silence_s * SR and end - grouped[-1][0] <= max_s * SR:
            grouped[-1][1] = end
        else:
            grouped.append([start, end])
    out = []
    for start, end in grouped:
        overlap = {
            speaker: sum(max(0, min(end, b) - max(start, a)) for a, b, s in mix.turns if s == speaker)
            for speaker in {t[2] for t in mix.turns}
        }
        out.append(
            (
                max(0, start - int(0.3 * SR)),
                min(mix.audio.size, end + int(0.2 * SR)),
                max(overlap, key=overlap.__getitem__),
            )
        )
    return out


def live_scores(labels: list[int], utterances: list[tuple[int, int, int]]) -> dict[str, float | int]:
    """Speaker confusion of live labels (utterance time with the wrong label, best one-to-one mapping),
    labels given per reader (most over readers), and labels used in all."""
    durations = [b - a for a, b, _s in utterances]
    truth = [s for _a, _b, s in utterances]
    found = sorted(set(labels))
    speakers = sorted(set(truth))
    best = 0
    for mapping in itertools.permutations(speakers + [-1] * max(0, len(found) - len(speakers)), len(found)):
        match = dict(zip(found, mapping, strict=True))
        best = max(best, sum(d for d, t, h in zip(durations, truth, labels, strict=True) if match[h] == t))
    per_reader = max(len({h for t, h in zip(truth, labels, strict=True) if t == s}) for s in speakers)
    return {
        "speaker_confusion": round(1 - best / sum(durations), 4),
        "labels_per_reader": per_reader,
        "labels": len(found),
    }
