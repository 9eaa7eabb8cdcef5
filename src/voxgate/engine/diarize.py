"""Speaker diarization: who spoke each word, on CPU, without torch.

Speaker embeddings come from the GE2E encoder of the ``resemblyzer`` package, converted once to ONNX
(``scripts/export_speaker_encoder.py``; ``data/speaker_encoder.onnx``), fed with a numpy 40-band mel
spectrogram (16 kHz, 25 ms window, 10 ms hop). Windows of 2 s every 0.5 s over VAD speech are embedded and
grouped by agglomerative (average-linkage) cosine clustering: to a given number of speakers, or until the
closest clusters are farther apart than a threshold; a cluster covering less than 3 s of speech then joins
its nearest neighbour. A Viterbi pass over the windows in time order smooths the labels (a change of speaker
costs a little similarity), every word takes the speaker of its time, and sentences are split where the
speaker changes. The constants were measured on mixes of real readers with ``bench/quality.py``.

Long files are fed block by block (:class:`DiarizationTrack`): only the small embeddings are kept, and
the clustering runs once at the end. Real-time sessions use :class:`OnlineSpeakerLabeler`, which labels
each finalized utterance as it comes and never changes a label once given.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from voxgate.engine.sentences import sentence_text
from voxgate.engine.types import Sentence, Word

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
WINDOW_FRAMES = 200  # 2 s per embedding window
STEP_FRAMES = 50  # 0.5 s between window starts
MIN_WINDOW_FRAMES = 50  # speech runs shorter than 0.5 s get no window of their own
NOISE_MIN_SAMPLES = SAMPLE_RATE // 2  # background needed to estimate the noise floor
NOISE_OVERSUBTRACTION = 3.0  # times the noise floor subtracted from the speech's mel power
NOISE_SPECTRAL_FLOOR = 0.01  # what is left of a band at least (-20 dB)
TARGET_DBFS = -30.0  # windows quieter than this are raised to it (as the encoder was trained)
DISTANCE_THRESHOLD = 0.36  # cosine distance (average linkage) above which windows are different speakers
MIN_SPLIT_DISTANCE = 0.12  # clusters closer than this are one speaker even when a larger count is asked
MIN_SPEAKER_SPEECH_MS = 3_000  # an estimated speaker needs windows covering at least this much speech
SWITCH_COST = 0.1  # resegmentation: similarity a change of speaker between neighbouring windows costs
LONG_PAUSE_MS = 1_500  # a change of speaker across a longer pause costs a quarter as much
LIVE_THRESHOLD = 0.16  # live labels: cosine distance from every speaker's centroid that opens a new speaker,
LIVE_SHORT_SLOPE = 0.12  # plus this over the square root of the utterance's window count
LIVE_NOISE_PERCENTILE = 5  # live labels: an utterance's background is the quietest 5% of its frames per band,
LIVE_OVERSUBTRACTION = 4.0  # subtracted this many times from its mel power;
LIVE_SPEECH_DB = 6.0  # frames this far above that background are the speech that is embedded
LIVE_MIN_NEW_SPEAKER_FRAMES = 100  # an utterance with less speech than this (1 s) never opens a new speaker
MAX_SPEAKERS = 20  # when the count is estimated
MAX_CLUSTERED = 1000  # beyond this many segments, cluster a stride of them and assign the rest
TIMELINE_MS = 50  # resolution of the speaker timeline words are read from


# -- front end ------------------------------------------------------------------------------------------
def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    """(N_MELS, N_FFT//2+1) triangular filters, area-normalized (Slaney), 0 Hz to Nyquist."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2))
    filters = np.zeros((N_MELS, fft_hz.size))
    for band in range(N_MELS):
        low, centre, high = edges[band], edges[band + 1], edges[band + 2]
        rising = (fft_hz - low) / (centre - low)
        falling = (high - fft_hz) / (high - centre)
        filters[band] = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (high - low))
    return filters


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann


def mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """Power mel spectrogram (frames, 40), float32; frame ``i`` is centred on sample ``i * 160``."""
    audio = np.asarray(audio, dtype=np.float32)
    padded = np.pad(audio.astype(np.float64), N_FFT // 2)
    n_frames = 1 + (padded.size - N_FFT) // HOP if padded.size >= N_FFT else 0
    if n_frames <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    spectrum = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2
    return np.asarray(spectrum @ _mel_filters().T, dtype=np.float32)


# -- encoder --------------------------------------------------------------------------------------------
class SpeakerEncoder:
    """The ONNX speaker encoder: mel windows (batch, frames, 40) -> L2-normalized 256-d embeddings."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = resources.files("voxgate") / "data" / "speaker_encoder.onnx"
        self._session = onnxruntime.InferenceSession(model.read_bytes(), options, providers=["CPUExecutionProvider"])

    def embed(self, mels: np.ndarray) -> np.ndarray:
        if mels.shape[0] == 0:
            return np.zeros((0, 256), dtype=np.float32)
        out = self._session.run(None, {"mels": np.ascontiguousarray(mels, dtype=np.float32)})[0]
        return _normalize(np.asarray(out, dtype=np.float32))


_encoder_lock = threading.Lock()


@lru_cache(maxsize=1)
def _cached_encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


def encoder() -> SpeakerEncoder:
    """The process-wide encoder, loaded on first use."""
    with _encoder_lock:
        return _cached_encoder()


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-9), dtype=np.float32)


# -- windows over speech --------------------------------------------------------------------------------
def speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """VAD speech runs of a 16 kHz clip as (start, end) samples (Silero VAD from faster-whisper)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=300, speech_pad_ms=100))
    return [(int(seg["start"]), int(seg["end"])) for seg in found]


def _window_starts(n_frames: int, step: int = STEP_FRAMES) -> list[tuple[int, int]]:
    """(start, length) in frames of the embedding windows covering one speech run, ``step`` frames apart."""
    if n_frames < MIN_WINDOW_FRAMES:
        return []
    if n_frames <= WINDOW_FRAMES:
        return [(0, n_frames)]
    starts = list(range(0, n_frames - WINDOW_FRAMES + 1, step))
    if starts[-1] + WINDOW_FRAMES < n_frames:
        starts.append(n_frames - WINDOW_FRAMES)
    return [(s, WINDOW_FRAMES) for s in starts]


def noise_floor(audio: np.ndarray, regions: Sequence[tuple[int, int]]) -> np.ndarray | None:
    """Mel power of the background: the 10th percentile per band over the frames outside the speech
    ``regions``; None when there is less than half a second of them."""
    keep = np.ones(audio.shape[0], dtype=bool)
    for start, end in regions:
        keep[max(0, start) : max(0, end)] = False
    if int(keep.sum()) < NOISE_MIN_SAMPLES:
        return None
    return np.asarray(np.percentile(mel_spectrogram(audio[keep]), 10, axis=0), dtype=np.float32)


def embed_speech(
    audio: np.ndarray, regions: Sequence[tuple[int, int]], offset_samples: int = 0, *, denoise: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the speech ``regions`` of ``audio`` with overlapping 2 s windows.

    The background's mel power (:func:`noise_floor`) is first subtracted from the speech (spectral
    subtraction, unless ``denoise`` is false), so that the same voice in more or less noise stays one voice
    and noise does not pull different voices together.

    Each region is covered by windows of :data:`WINDOW_FRAMES` every :data:`STEP_FRAMES` (the last one
    aligned to the region's end; a region shorter than a window is one window). Returns
    ``(spans_ms, embeddings)``: spans (n, 2) in ms of the whole stream (``offset_samples`` is the stream
    position of ``audio[0]``) and L2-normalized embeddings (n, 256), in time order.
    """
    spans: list[tuple[int, int]] = []
    batches: dict[int, list[np.ndarray]] = {}
    order: dict[int, list[int]] = {}
    floor = noise_floor(audio, regions) if denoise else None
    for first_sample, last_sample in regions:
        start, end = max(0, first_sample), min(audio.shape[0], last_sample)
        if end <= start:
            continue
        segment = audio[start:end]
        mels = mel_spectrogram(segment)
        if floor is not None:
            mels = np.maximum(mels - NOISE_OVERSUBTRACTION * floor, NOISE_SPECTRAL_FLOOR * mels)
        for first, length in _window_starts(mels.shape[0]):
            a, b = first * HOP, min(segment.size, (first + length) * HOP)
            rms = float(np.sqrt(np.mean(np.square(segment[a:b], dtype=np.float64)))) if b > a else 0.0
            gain = 1.0
            if rms > 1e-6:
                gain = max(1.0, 10 ** ((TARGET_DBFS - 20 * np.log10(rms)) / 20))
            batches.setdefault(length, []).append(mels[first : first + length] * np.float32(gain**2))
            order.setdefault(length, []).append(len(spans))
            begin_ms = (offset_samples + start + a) * 1000 // SAMPLE_RATE
            spans.append((begin_ms, (offset_samples + start + b) * 1000 // SAMPLE_RATE))
    if not spans:
        return np.zeros((0, 2), dtype=np.int64), np.zeros((0, 256), dtype=np.float32)
    windows = np.zeros((len(spans), 256), dtype=np.float32)
    model = encoder()
    for length, stacked in batches.items():
        stack = np.stack(stacked)
        for i in range(0, stack.shape[0], 64):
            windows[order[length][i : i + 64]] = model.embed(stack[i : i + 64])
    return np.asarray(spans, dtype=np.int64), windows


# -- clustering -----------------------------------------------------------------------------------------
def _average_linkage(
    embeddings: np.ndarray, speaker_count: int | None, threshold: float, max_speakers: int
) -> np.ndarray:
    """Agglomerative clustering with average linkage on cosine distance; cluster index per row."""
    n = embeddings.shape[0]
    distance = (1.0 - embeddings @ embeddings.T).astype(np.float64)
    np.fill_diagonal(distance, np.inf)
    sizes = np.ones(n)
    active = np.ones(n, dtype=bool)
    members: list[list[int]] = [[i] for i in range(n)]
    clusters = n
    while clusters > 1:
        flat = int(np.argmin(distance))
        i, j = divmod(flat, n)
        closest = distance[i, j]
        if speaker_count is not None:
            if clusters <= speaker_count and closest >= MIN_SPLIT_DISTANCE:
                break
        elif closest > threshold and clusters <= max_speakers:
            break
        # merge j into i (Lance-Williams update for average linkage)
        merged = (sizes[i] * distance[i] + sizes[j] * distance[j]) / (sizes[i] + sizes[j])
        distance[i, :] = merged
        distance[:, i] = merged
        distance[i, i] = np.inf
        distance[j, :] = np.inf
        distance[:, j] = np.inf
        sizes[i] += sizes[j]
        active[j] = False
        members[i].extend(members[j])
        members[j] = []
        clusters -= 1
    labels = np.zeros(n, dtype=np.int64)
    for index, root in enumerate(np.flatnonzero(active)):
        labels[members[root]] = index
    return labels


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0..k-1 in order of first appearance."""
    _values, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return np.asarray(rank[inverse], dtype=np.int64)


def _centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    k = int(labels.max()) + 1
    return _normalize(np.stack([embeddings[labels == c].mean(axis=0) for c in range(k)]))


def _covered_ms(spans: np.ndarray) -> int:
    """Milliseconds covered by the union of (begin, end) spans."""
    total, reach = 0, -1
    for begin, end in sorted(spans.tolist()):
        if end > reach:
            total += end - max(begin, reach)
            reach = end
    return total


def _absorb_small(embeddings: np.ndarray, labels: np.ndarray, spans: np.ndarray, min_speech_ms: int) -> np.ndarray:
    """Clusters covering less than ``min_speech_ms`` of speech join the nearest larger cluster (a cough, a
    laugh or a noisy stretch of one voice is not a speaker of its own)."""
    k = int(labels.max()) + 1
    speech = np.array([_covered_ms(spans[labels == c]) for c in range(k)])
    large = np.flatnonzero(speech >= min_speech_ms)
    if large.size == 0 or large.size == k:
        return labels
    centroids = _centroids(embeddings, labels)[large]
    out = labels.copy()
    for small in np.flatnonzero(speech < min_speech_ms):
        rows = np.flatnonzero(labels == small)
        out[rows] = large[np.argmax(embeddings[rows] @ centroids.T, axis=1)]
    return _renumber(out)


def cluster(
    embeddings: np.ndarray,
    speaker_count: int | None = None,
    *,
    threshold: float = DISTANCE_THRESHOLD,
    max_speakers: int = MAX_SPEAKERS,
    spans: np.ndarray | None = None,
    min_speech_ms: int = MIN_SPEAKER_SPEECH_MS,
) -> np.ndarray:
    """Speaker index per embedding (0..k-1, in order of first appearance).

    With ``speaker_count`` the windows are grouped into that many speakers, unless the remaining clusters
    are so close (< :data:`MIN_SPLIT_DISTANCE`) that they are plainly one voice. Without it, the count is
    estimated with ``threshold`` (capped at ``max_speakers``), and clusters whose windows (``spans`` in ms;
    1 s each when not given) cover less than ``min_speech_ms`` join their nearest neighbour.
    """
    n = embeddings.shape[0]
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    if n <= MAX_CLUSTERED:
        labels = _average_linkage(embeddings, speaker_count, threshold, max_speakers)
    else:
        stride = int(np.ceil(n / MAX_CLUSTERED))
        sample = embeddings[::stride]
        centroids = _centroids(sample, _average_linkage(sample, speaker_count, threshold, max_speakers))
        labels = np.asarray(np.argmax(embeddings @ centroids.T, axis=1), dtype=np.int64)
    labels = _renumber(labels)
    if speaker_count is None:
        if spans is None:
            spans = np.stack([np.arange(n) * 1000, np.arange(n) * 1000 + 1000], axis=1)
        labels = _absorb_small(embeddings, labels, spans, min_speech_ms)
    return labels


def resegment(spans: np.ndarray, embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Smooth the labels of windows over time: a Viterbi pass where each window scores its cosine
    similarity to every speaker's centroid and a change of speaker between neighbouring windows costs
    :data:`SWITCH_COST` (a quarter of it across a pause of more than :data:`LONG_PAUSE_MS`). A window
    whose voice is only a little closer to another speaker than to its neighbours' no longer splits a turn.
    """
    n = labels.size
    k = int(labels.max()) + 1 if n else 0
    if k <= 1:
        return labels
    order = np.argsort(spans[:, 0], kind="stable")
    scores = (embeddings[order] @ _centroids(embeddings, labels).T).astype(np.float64)
    pauses = spans[order[1:], 0] - spans[order[:-1], 1]
    costs = np.where(pauses > LONG_PAUSE_MS, SWITCH_COST / 4, SWITCH_COST)
    total = scores[0].copy()
    back = np.zeros((n, k), dtype=np.int64)
    for t in range(1, n):
        stay = total
        best_other = int(np.argmax(total))
        switch = total[best_other] - costs[t - 1]
        back[t] = np.where(stay >= switch, np.arange(k), best_other)
        total = np.maximum(stay, switch) + scores[t]
    path = np.zeros(n, dtype=np.int64)
    path[-1] = int(np.argmax(total))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    out = np.zeros(n, dtype=np.int64)
    out[order] = path
    return _renumber(out)


# -- labelling words and sentences ------------------------------------------------------------------------
def _timeline(spans: np.ndarray, labels: np.ndarray, end_ms: int) -> np.ndarray:
    """Speaker per TIMELINE_MS slot: windows vote (centre-weighted); gaps take the nearest voted slot."""
    k = int(labels.max()) + 1
    slots = end_ms // TIMELINE_MS + 2
    votes = np.zeros((slots, k))
    for (begin, end), label in zip(spans.tolist(), labels.tolist(), strict=True):
        a, b = begin // TIMELINE_MS, max(begin // TIMELINE_MS + 1, end // TIMELINE_MS)
        positions = np.arange(a, min(b, slots))
        centre, half = (a + b) / 2, max((b - a) / 2, 1)
        votes[positions, label] += 1.0 - 0.9 * np.abs(positions + 0.5 - centre) / half
    voted = votes.max(axis=1) > 0
    timeline = np.argmax(votes, axis=1)
    known = np.flatnonzero(voted)
    nearest = np.clip(np.searchsorted(known, np.arange(slots)), 0, known.size - 1)
    previous = np.clip(nearest - 1, 0, known.size - 1)
    pick = np.where(
        np.abs(known[previous] - np.arange(slots)) <= np.abs(known[nearest] - np.arange(slots)),
        known[previous],
        known[nearest],
    )
    return np.asarray(np.where(voted, timeline, timeline[pick]), dtype=np.int64)


def _smooth(labels: list[int], words: Sequence[Word]) -> list[int]:
    """A lone short word between two words of the same speaker belongs to that speaker."""
    out = list(labels)
    for i in range(1, len(out) - 1):
        short = words[i].end_time - words[i].begin_time < 600
        if out[i - 1] == out[i + 1] != out[i] and short:
            out[i] = out[i - 1]
    return out


def label_sentences(sentences: Sequence[Sentence], spans: np.ndarray, labels: np.ndarray) -> list[Sentence]:
    """Give every word the speaker of its time, split sentences at speaker changes, set ``speaker_id``.

    Speaker ids are renumbered from 0 in order of first appearance.
    """
    if not sentences:
        return []
    if labels.size == 0:
        return [replace(s, speaker_id=0) for s in sentences]
    end_ms = max(int(spans[:, 1].max()), max(s.end_time for s in sentences))
    timeline = _timeline(spans, labels, end_ms)

    def at(begin: int, end: int) -> int:
        a = min(begin // TIMELINE_MS, timeline.size - 1)
        b = max(a + 1, end // TIMELINE_MS)
        return int(np.bincount(timeline[a:b]).argmax())

    out: list[Sentence] = []
    for sentence in sentences:
        if not sentence.words:
            out.append(replace(sentence, speaker_id=at(sentence.begin_time, sentence.end_time)))
            continue
        word_labels = _smooth([at(w.begin_time, w.end_time) for w in sentence.words], sentence.words)
        start = 0
        for end in range(1, len(word_labels) + 1):
            if end == len(word_labels) or word_labels[end] != word_labels[start]:
                out.append(_piece(sentence, sentence.words[start:end], word_labels[start]))
                start = end
    first_seen: dict[int, int] = {}
    for sentence in out:
        assert sentence.speaker_id is not None
        sentence.speaker_id = first_seen.setdefault(sentence.speaker_id, len(first_seen))
    return out


def _piece(sentence: Sentence, words: list[Word], speaker: int) -> Sentence:
    return Sentence(
        begin_time=words[0].begin_time,
        end_time=words[-1].end_time,
        text=sentence_text(words, sentence.language),
        words=words,
        language=sentence.language,
        speaker_id=speaker,
    )


# -- whole-stream (file) diarization ----------------------------------------------------------------------
@dataclass
class DiarizationTrack:
    """Embeddings of one channel, fed block by block; clustered and applied once at the end."""

    speaker_count: int | None = None
    _spans: list[np.ndarray] = field(default_factory=list)
    _embeddings: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        audio: np.ndarray,
        offset_samples: int,
        speech: Sequence[dict[str, Any]] | Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """Embed the speech in ``audio`` (16 kHz float32) that starts ``offset_samples`` into the stream
        (see :func:`embed_block`)."""
        self.add_embedded(*embed_block(audio, offset_samples, speech))

    def add_embedded(self, spans: np.ndarray, embeddings: np.ndarray) -> None:
        """Add one block's windows as :func:`embed_block` returned them (e.g. embedded on another node)."""
        self._spans.append(spans)
        self._embeddings.append(embeddings)

    @property
    def window_count(self) -> int:
        return sum(e.shape[0] for e in self._embeddings)

    def speakers(self) -> tuple[np.ndarray, np.ndarray]:
        """(spans_ms, speaker label per window)."""
        if not self._embeddings:
            return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
        spans = np.concatenate(self._spans)
        embeddings = np.concatenate(self._embeddings)
        return spans, resegment(spans, embeddings, cluster(embeddings, self.speaker_count, spans=spans))

    def label(self, sentences: Sequence[Sentence]) -> list[Sentence]:
        spans, labels = self.speakers()
        return label_sentences(sentences, spans, labels)


def embed_block(
    audio: np.ndarray,
    offset_samples: int,
    speech: Sequence[dict[str, Any]] | Sequence[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The window spans (ms) and embeddings of one block's speech, for :meth:`DiarizationTrack.add_embedded`.

    ``speech``: VAD runs of ``audio`` (``{"start", "end"}`` dicts or pairs, in samples); found here when not
    given.
    """
    if speech is None:
        regions = speech_regions(audio)
    else:
        regions = [(int(r["start"]), int(r["end"])) if isinstance(r, dict) else (int(r[0]), int(r[1])) for r in speech]
    return embed_speech(audio, regions, offset_samples)


def diarize(
    audio: np.ndarray, sentences: Sequence[Sentence], speaker_count: int | None = None, offset_ms: int = 0
) -> list[Sentence]:
    """Label the sentences recognized in one in-memory clip (``offset_ms``: stream time of ``audio[0]``)."""
    track = DiarizationTrack(speaker_count)
    track.add(audio, offset_ms * SAMPLE_RATE // 1000)
    return track.label(sentences)


# -- real-time sessions -------------------------------------------------------------------------------------
def utterance_windows(audio: np.ndarray) -> np.ndarray:
    """The window embeddings of one finalized utterance (n, 256); none when it is shorter than half a second
    (see :func:`utterance_speech`)."""
    return utterance_speech(audio)[0]


def utterance_speech(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """The window embeddings (n, 256) of one finalized utterance and how many 10 ms frames of speech it holds.

    Cheaper than :func:`embed_speech`, and made for a channel that is only seen one utterance at a time: one
    mel spectrogram of the whole utterance, whose own background (the quietest
    :data:`LIVE_NOISE_PERCENTILE` % of its frames, per band; an utterance holds its lead-in, its tail and the
    pauses between words) is subtracted :data:`LIVE_OVERSUBTRACTION` times; the frames more than
    :data:`LIVE_SPEECH_DB` above that background (all of them when under half a second is) are joined, raised
    to :data:`TARGET_DBFS` when quieter, and embedded in back-to-back 2 s windows (the last aligned to the
    end). No VAD pass and no overlapping windows: about half the work, and voices in noise (20 dB SNR) mostly
    stay apart where without the subtraction they merged.
    """
    mels = mel_spectrogram(audio)
    if mels.shape[0] < MIN_WINDOW_FRAMES:
        return np.zeros((0, 256), dtype=np.float32), 0
    background = np.percentile(mels, LIVE_NOISE_PERCENTILE, axis=0)
    speech = mels.sum(axis=1) > float(background.sum()) * 10 ** (LIVE_SPEECH_DB / 10)
    speech_frames = int(speech.sum())
    if speech_frames < MIN_WINDOW_FRAMES:
        speech[:] = True
    cleaned = np.maximum(mels - LIVE_OVERSUBTRACTION * background, NOISE_SPECTRAL_FLOOR * mels)[speech]
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(audio, HOP // 2), HOP)[::HOP][: speech.size]
    rms = float(np.sqrt(np.mean(np.square(frames[speech[: frames.shape[0]]], dtype=np.float64))))
    if rms > 1e-6:
        cleaned = cleaned * np.float32(max(1.0, 10 ** ((TARGET_DBFS - 20 * np.log10(rms)) / 20)) ** 2)
    windows = [cleaned[first : first + length] for first, length in _window_starts(cleaned.shape[0], WINDOW_FRAMES)]
    out = np.zeros((len(windows), 256), dtype=np.float32)
    model = encoder()
    for length in {w.shape[0] for w in windows}:
        rows = [i for i, w in enumerate(windows) if w.shape[0] == length]
        out[rows] = model.embed(np.stack([windows[i] for i in rows]))
    return out, speech_frames


class OnlineSpeakerLabeler:
    """Speaker ids for a live session, one finalized utterance at a time; a given id never changes.

    Each utterance is embedded (the mean of its 2 s windows) and compared with the centroid of every
    speaker so far: it joins the closest one unless the cosine distance exceeds
    ``threshold + LIVE_SHORT_SLOPE / sqrt(windows)`` (a short utterance's embedding is noisier, so it needs
    to be farther away to open a new speaker), in which case it opens a new speaker (up to
    ``max_speakers``; then the closest). An utterance with less than a second of speech
    (:data:`LIVE_MIN_NEW_SPEAKER_FRAMES`) never opens one: far from everyone, it takes the closest
    speaker's id without changing that speaker's voice. Too-short utterances keep the previous speaker.
    Thread-safe.
    """

    def __init__(self, threshold: float = LIVE_THRESHOLD, max_speakers: int | None = None) -> None:
        self.threshold = threshold
        self.max_speakers = max_speakers or MAX_SPEAKERS
        self._sums: list[np.ndarray] = []
        self._last: int | None = None
        self._lock = threading.Lock()

    @property
    def speaker_count(self) -> int:
        return len(self._sums)

    def assign(self, audio: np.ndarray) -> int:
        """Speaker id of one utterance (16 kHz float32 audio of the finalized sentence)."""
        windows, speech_frames = utterance_speech(audio)
        with self._lock:
            if windows.shape[0] == 0:
                if self._last is None:
                    self._sums.append(np.zeros(256, dtype=np.float32))
                    self._last = 0
                return self._last
            embedding = _normalize(windows.mean(axis=0))
            speaker, near = self._closest(embedding, windows.shape[0])
            long_enough = speech_frames >= LIVE_MIN_NEW_SPEAKER_FRAMES
            if speaker is None or (not near and long_enough and len(self._sums) < self.max_speakers):
                self._sums.append(np.zeros(256, dtype=np.float32))
                speaker, near = len(self._sums) - 1, True
            if near:  # a far, short utterance takes the closest speaker's id but leaves its voice alone
                self._sums[speaker] = self._sums[speaker] + embedding * windows.shape[0]
            self._last = speaker
            return speaker

    def _closest(self, embedding: np.ndarray, windows: int) -> tuple[int | None, bool]:
        """The closest speaker so far (None when there is none) and whether it is within the new-speaker
        distance."""
        live = [i for i, s in enumerate(self._sums) if float(np.linalg.norm(s)) > 0]
        if not live:
            if self._sums:  # a placeholder speaker 0 opened by a too-short first sentence
                return 0, True
            return None, True
        centroids = _normalize(np.stack([self._sums[i] for i in live]))
        similarity = centroids @ embedding
        best = int(np.argmax(similarity))
        limit = self.threshold + LIVE_SHORT_SLOPE / np.sqrt(windows)
        return live[best], 1.0 - float(similarity[best]) <= limit

    def label(self, sentence: Sentence, audio: np.ndarray) -> Sentence:
        """Set ``sentence.speaker_id`` from its audio and return the sentence."""
        sentence.speaker_id = self.assign(audio)
        return sentence

    def label_clip(self, sentences: Sequence[Sentence], audio: np.ndarray, offset_ms: int = 0) -> list[Sentence]:
        """Label the sentences recognized in one finalized clip (``offset_ms``: stream time of ``audio[0]``),
        each from its own stretch of the clip."""
        for sentence in sentences:
            begin = max(0, (sentence.begin_time - offset_ms) * SAMPLE_RATE // 1000)
            end = min(audio.shape[0], (sentence.end_time - offset_ms) * SAMPLE_RATE // 1000)
            self.label(sentence, audio[begin:end] if end > begin else audio[:0])
        return list(sentences)
