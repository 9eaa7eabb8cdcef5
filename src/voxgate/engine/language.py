"""Spoken-language identification over speech only, voting across several windows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.vad import VadOptions, get_speech_timestamps

from voxgate.engine.encoder_reuse import EncodedWindow

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 30 * SAMPLE_RATE
MAX_WINDOWS = 3
MIN_SPEECH_SAMPLES = SAMPLE_RATE // 2

# DashScope language codes that Whisper spells differently.
_TO_WHISPER = {"yue": "yue", "fil": "tl", "no": "no"}


def to_whisper_code(code: str) -> str:
    return _TO_WHISPER.get(code, code)


def detect_language(
    model: WhisperModel,
    audio: np.ndarray,
    hints: list[str] | None = None,
    *,
    speech: list[dict[str, int]] | None = None,
) -> str | None:
    """Most likely language of the speech in ``audio``, restricted to ``hints`` when given.

    Returns None when there is no speech to judge. A single hint is taken as given.
    """
    allowed = [to_whisper_code(h) for h in (hints or []) if h]
    if len(allowed) == 1:
        return allowed[0]
    if speech is None:
        speech = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=500))
    if not speech:
        return None
    voiced = np.concatenate([audio[s["start"] : s["end"]] for s in speech])
    if voiced.shape[0] < MIN_SPEECH_SAMPLES:
        return allowed[0] if allowed else None
    encoded = []
    for window in _windows(voiced):
        features = model.feature_extractor(window)
        encoded.append(model.encode(pad_or_trim(features[..., : model.feature_extractor.nb_max_frames])))
    return language_of_encoded(model, encoded, allowed)


def language_of_encoded(model: WhisperModel, encoded: list[ctranslate2.StorageView], allowed: list[str]) -> str | None:
    """The language with the highest summed probability over the encoder outputs, among ``allowed`` (Whisper
    codes) when given."""
    scores: dict[str, float] = defaultdict(float)
    for output in encoded:
        for token, prob in model.model.detect_language(output)[0]:
            scores[token[2:-2]] += prob
    if allowed:
        candidates = {lang: scores.get(lang, 0.0) for lang in allowed}
        return max(candidates, key=lambda lang: candidates[lang])
    return max(scores, key=lambda lang: scores[lang]) if scores else None


def language_of_windows(model: WhisperModel, windows: Sequence[EncodedWindow], hints: list[str] | None) -> str | None:
    """The language of speech windows already encoded for decoding (same rules as :func:`detect_language`)."""
    allowed = [to_whisper_code(h) for h in (hints or []) if h]
    if len(allowed) == 1:
        return allowed[0]
    return language_of_encoded(model, [window.output for window in windows], allowed)


def _windows(voiced: np.ndarray) -> list[np.ndarray]:
    """Up to three 30 s windows spread over the speech (start, middle, end)."""
    if voiced.shape[0] <= WINDOW_SAMPLES:
        return [voiced]
    count = min(MAX_WINDOWS, int(np.ceil(voiced.shape[0] / WINDOW_SAMPLES)))
    starts = np.linspace(0, voiced.shape[0] - WINDOW_SAMPLES, count).astype(int)
    return [voiced[s : s + WINDOW_SAMPLES] for s in starts]
